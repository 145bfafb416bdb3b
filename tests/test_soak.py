"""The soak harness on the tiny artifact: a real server subprocess, a few hundred requests,
then a burst against a queue of 40 places (numbers here prove the harness, not the server's
speed; `make soak` runs the real thing)."""

import json

from benchmarks import soak


def test_soak_checks_every_answer_and_provokes_only_queue_full(artifact, data_dir, tmp_path):
    argv = ["--artifact", str(artifact.path), "--data", str(data_dir), "--out", str(tmp_path)]
    argv += ["--requests", "300", "--concurrency", "16", "--distinct", "30", "--burst", "300"]
    argv += ["--max-queue-size", "40", "--variant", "fp32", "--threads", "1"]
    code = soak.main(argv)
    results = json.loads((tmp_path / "soak.json").read_text(encoding="utf-8"))
    load, burst = results["load"], results["burst"]
    assert load["errors"] == {} and load["wrong"] == 0 and load["correct"] == 300
    assert burst["errors"].get("RESOURCE_EXHAUSTED", 0) > 0  # the queue did fill
    assert set(burst["errors"]) == {"RESOURCE_EXHAUSTED"} and burst["wrong"] == 0
    assert burst["correct"] + burst["errors"]["RESOURCE_EXHAUSTED"] == 300
    assert burst["after"]["correct"] == 20 and burst["health_after"] == "SERVING"
    assert results["exit_code_after_sigterm"] == 0
    assert results["memory"]["rss_after_warmup_mib"] > 10
    checks = results["verdict"]["checks"]
    assert all(ok for name, ok in checks.items() if "memory" not in name), checks
    assert code == (0 if results["verdict"]["passed"] else 1)
    assert "| every answer right and its own | pass |" in (tmp_path / "soak.md").read_text()
