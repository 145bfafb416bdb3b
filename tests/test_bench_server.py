"""The server benchmark's harness on the tiny artifact: real servers, real load, every answer
counted; not its timings."""

import asyncio
import json
from pathlib import Path

import pytest

from benchmarks import server
from benchmarks.common import BenchContext
from benchmarks.loadgen import ClosedLoop, OpenLoop, is_stable, summarize

TINY = server.Settings(
    concurrencies=(1, 6),
    rate_fractions=(0.3,),
    window_s=0.8,
    min_answers=10,
    max_window_s=10.0,
    warmup_s=0.3,
    max_warmup_s=10.0,
    repeats=1,
    rows=40,
    variant="fp32",
)


def _processes_with(text: str) -> list[str]:
    """Command lines of live processes that mention `text`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line:
            found.append(line)
    return found


@pytest.fixture(scope="module")
def section(artifact, data_dir):
    ctx = BenchContext(artifact.path, data_dir, threads=1, log=lambda _: None)
    return server.run(ctx, TINY)


def test_every_point_has_numbers_and_every_answer_is_checked(section):
    points = [p[n] for p in section["closed_loop"] for n in server.SERVERS]
    points += [p[n] for p in section["open_loop"] for n in server.SERVERS]
    assert len(points) == 2 * (len(TINY.concurrencies) + len(TINY.rate_fractions))
    for p in points:
        assert p["ok"] > 0 and p["requests_per_s"]["median"] > 0
        assert p["chars_per_s"]["median"] > 0
        latency = p["latency_ms"]
        assert 0 < latency["p50"]["median"] <= latency["p90"]["median"] <= latency["p99"]["median"]
        assert p["errors"] == {} and p["bad_answers"] == 0  # low load: no errors, all answered
        window = p["windows"][0]
        assert window["completed"] == window["ok"] and window["complete"]
    assert [p["concurrency"] for p in section["closed_loop"]] == list(TINY.concurrencies)
    assert section["peak_requests_per_s"] > 0
    rates = [p["rate"] for p in section["open_loop"]]
    assert rates == [pytest.approx(f * section["peak_requests_per_s"]) for f in (0.3,)]


def test_batches_form_only_with_batching_on(section):
    busy = section["closed_loop"][-1]  # concurrency 6
    assert busy["batching"]["mean_batch"]["median"] > 1
    assert busy["no_batching"]["mean_batch"]["median"] == 1
    assert all(p["no_batching"]["mean_batch"]["median"] == 1 for p in section["closed_loop"])
    assert busy["speedup"]["median"] > 0


def test_report_targets_and_plots(section, tmp_path):
    json.dumps(section)  # JSON-able as it stands
    (target,) = section["targets"]
    assert "concurrency 6" in target["measured"] and isinstance(target["met"], bool)
    text = server.markdown(section)
    assert text.startswith("# Server under load")
    assert text.count("batching on (max batch 32)") == len(TINY.concurrencies) + 1
    assert server.plots(section, tmp_path) == ["server.png"]
    assert (tmp_path / "server.png").stat().st_size > 0


def test_servers_drained_and_stopped(section, artifact):
    assert set(section["shutdown"]) == set(server.SERVERS)
    for stopped in section["shutdown"].values():
        assert stopped["exit_code"] == 0 and stopped["left_behind"] == 0
    assert _processes_with(str(artifact.path)) == []


def test_stability_follows_perf_analyzer():
    assert not is_stable([10, 10], [5, 5])  # fewer than three windows
    assert is_stable([10, 10.5, 10.9], [5, 5.2, 5.4])
    assert not is_stable([10, 10.5, 11.1], [5, 5, 5])  # throughput spread 11% > 10%
    assert not is_stable([10, 10, 10], [5, 5, 5.6])  # latency spread 12%
    assert not is_stable([0, 0, 0], [1, 1, 1])  # nothing answered is never stable
    assert is_stable([3, 20, 10, 10.2, 9.8], [9, 1, 5, 5, 5])  # only the last three count
    assert not is_stable([10, 10.2, 9.8, 20], [5, 5, 5, 5])


def test_loads_count_only_what_completes_inside_the_window():
    async def scenario():
        sent = []

        async def send(text):
            sent.append(text)
            await asyncio.sleep(0.01 if text != "slow" else 0.1)
            return ("OK", [text.upper()]) if text != "c" else ("UNAVAILABLE", [])

        async with ClosedLoop(send, ["a", "b", "c"], 2) as load:
            assert await load.warm(0.05, 1.0)
            closed = summarize(await load.window(0.3))
        async with OpenLoop(send, ["a", "b"], rate=100, seed=1) as load:
            await load.warm(0.05)
            opened = summarize(await load.window(0.5))
        async with ClosedLoop(send, ["slow"], 1) as load:
            await load.warm(0, 1.0)
            extended = await load.window(0.05, answers=4, max_seconds=2.0)
            capped = await load.window(0.05, answers=100, max_seconds=0.3)
        return sent, closed, opened, extended, capped

    sent, closed, opened, extended, capped = asyncio.run(scenario())
    # A window runs past its seconds until it holds the requests it wants, up to its cap.
    assert len(extended.calls) >= 4 and extended.complete and extended.seconds >= 0.35
    assert not capped.complete and capped.seconds < 0.5
    assert set(sent) == {"a", "b", "c", "slow"}
    assert closed["errors"]["UNAVAILABLE"] > 0 and closed["bad_answers"] == 0
    assert closed["ok"] + closed["errors"]["UNAVAILABLE"] == closed["completed"]
    assert closed["outstanding"] == 2
    assert 20 < opened["requests_per_s"] < 250  # Poisson at 100/s over half a second
    assert opened["errors"] == {}
