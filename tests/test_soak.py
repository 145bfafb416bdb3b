"""The soak on the tiny artifact: a real server subprocess, every answer checked, then a burst
that overfills the queue on purpose.

In CI a few hundred requests prove the harness; `make soak` sets KMCORRECT_SOAK_REQUESTS=50000,
KMCORRECT_SOAK_CONCURRENCY=64 and KMCORRECT_SOAK_OUT (where soak.json/.md go). Soaking your own
artifact: python -m benchmarks.soak --artifact ... --data ... (see benchmarks/README.md).
"""

import json
import os
from pathlib import Path

from benchmarks import soak

REQUESTS = int(os.environ.get("KMCORRECT_SOAK_REQUESTS", "300"))
CONCURRENCY = int(os.environ.get("KMCORRECT_SOAK_CONCURRENCY", "16"))


def test_soak_checks_every_answer_and_provokes_only_queue_full(artifact, data_dir, tmp_path):
    out = Path(os.environ.get("KMCORRECT_SOAK_OUT") or tmp_path)
    queue = 2 * CONCURRENCY  # room for the load (one piece a request), not for the burst
    argv = ["--artifact", str(artifact.path), "--data", str(data_dir), "--out", str(out)]
    argv += ["--requests", str(REQUESTS), "--concurrency", str(CONCURRENCY), "--distinct", "200"]
    # The burst overfills the queue but stays under the streams one connection may hold
    # (4 connections x 256, the server's max_concurrent_streams), which refuse with UNAVAILABLE.
    burst = min(12 * queue, 800)
    argv += ["--burst", str(burst), "--max-queue-size", str(queue), "--variant", "fp32"]
    code = soak.main(argv)
    results = json.loads((out / "soak.json").read_text(encoding="utf-8"))
    load, burst = results["load"], results["burst"]
    assert load["errors"] == {} and load["wrong"] == 0 and load["correct"] == REQUESTS
    refused = burst["errors"].get("RESOURCE_EXHAUSTED", 0)
    assert refused > 0  # the queue did fill
    assert set(burst["errors"]) == {"RESOURCE_EXHAUSTED"} and burst["wrong"] == 0
    assert burst["correct"] + refused == burst["burst"]
    assert burst["after"]["correct"] == 20 and burst["health_after"] == "SERVING"
    assert results["exit_code_after_sigterm"] == 0
    assert results["memory"]["rss_after_warmup_mib"] > 10
    checks = results["verdict"]["checks"]
    assert all(ok for name, ok in checks.items() if "memory" not in name), checks
    assert code == (0 if results["verdict"]["passed"] else 1)
    assert "| every answer right and its own | pass |" in (out / "soak.md").read_text()
