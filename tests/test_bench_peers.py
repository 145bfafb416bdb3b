"""The peers benchmark's harness on the tiny artifact: PyTriton serving the same decode function
as our server, and tritonclient as a second load source; outputs and bookkeeping, not timings.

The PyTriton tests skip only when PyTriton's bundled tritonserver cannot start here
(`triton_peers.pytriton_problem` says why); its own environment (nvidia-pytriton, numpy < 2)
is made on first use under .venvs/ (seconds; needs the package registry once)."""

import json
from pathlib import Path

import pytest

from benchmarks import triton_peers
from benchmarks.common import BenchContext

TINY = triton_peers.Settings(
    concurrencies=(1, 6),
    window_s=0.8,
    min_answers=10,
    max_window_s=10.0,
    warmup_s=0.3,
    max_warmup_s=10.0,
    repeats=1,
    rows=40,
    identity_rows=24,
    cross_check_concurrency=4,
    cross_check_window_s=0.5,
    cross_check_max_windows=3,
    variant="fp32",
)


@pytest.fixture(scope="module")
def section(artifact, data_dir):
    ctx = BenchContext(artifact.path, data_dir, threads=1, log=lambda _: None)
    return triton_peers.run(ctx, TINY)


@pytest.fixture(scope="module")
def pytriton(section):
    reason = section["pytriton"].get("not_run")
    if reason and reason.startswith(triton_peers.BINARY_PROBLEM):
        pytest.skip(reason)
    assert not reason, reason  # any other reason (its environment could not be made) fails
    return section["pytriton"]


def test_pytriton_answers_exactly_as_our_server(pytriton):
    same = pytriton["identity"]
    assert same["texts"] == TINY.identity_rows
    assert same["differing"] == [] and same["identical"] == same["texts"]


def test_both_servers_measured_at_every_concurrency(pytriton):
    assert [p["concurrency"] for p in pytriton["points"]] == list(TINY.concurrencies)
    for p in pytriton["points"]:
        for name in triton_peers.CONTENDERS:
            a = p[name]
            assert a["ok"] > 0 and a["requests_per_s"]["median"] > 0
            assert a["latency_ms"]["p99"]["median"] >= a["latency_ms"]["p50"]["median"] > 0
            assert a["errors"] == {} and a["bad_answers"] == 0
            assert a["texts_per_execution"]["median"] >= 1  # Triton's counters, on both
        assert p["ours_vs_pytriton"]["median"] > 0
    busy = pytriton["points"][-1]
    assert busy["pytriton"]["texts_per_execution"]["median"] > 1  # Triton's batcher batched
    assert pytriton["p99_bound_ms"] > 0


def test_tritonclient_measures_our_server_like_perf_analyzer(section):
    cc = section["cross_check"]
    for run in (cc["ours_before"], cc["tritonclient"], cc["ours_after"]):
        assert run["concurrency"] == TINY.cross_check_concurrency
        assert 1 <= run["windows"] <= TINY.cross_check_max_windows
        assert run["windows"] == TINY.cross_check_max_windows or run["stable"]
        assert len(run["window_requests_per_s"]) == run["windows"]
        assert run["ok"] > 0 and run["errors"] == {} and run["bad_answers"] == 0
        assert run["latency_ms"]["p50"] > 0
    assert cc["throughput_ratio"] > 0 and cc["p50_ratio"] > 0
    assert isinstance(cc["agree"], bool)


def test_report_targets_and_plots(section, tmp_path):
    json.dumps(section)
    names = [t["target"] for t in section["targets"]]
    assert any("PyTriton's throughput" in n for n in names)
    assert any("tritonclient" in n for n in names)
    assert all(isinstance(t["met"], bool) for t in section["targets"])
    text = triton_peers.markdown(section)
    assert text.startswith("# Peers") and "tritonclient.grpc.aio" in text
    written = triton_peers.plots(section, tmp_path)
    if "not_run" not in section["pytriton"]:
        assert written == ["peers.png"] and (tmp_path / "peers.png").stat().st_size > 0


def test_servers_stopped_with_nothing_left_behind(section, artifact):
    for name, stopped in section["shutdown"].items():
        assert stopped["exit_code"] == 0, name
        assert stopped["left_behind"] == 0, name
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue
        assert str(artifact.path) not in line
