"""A server in a subprocess: `kmcorrect serve` (or a peer server) started on a loopback port,
waited on until it answers, and stopped with SIGTERM. The demo and the benchmarks start their
servers this way.

The server runs in a process group of its own (a server may start helpers: PyTriton starts
tritonserver), its output in a log file. A server that exits while starting, or does not
answer within the timeout, is a `ServerFailed` naming its exit code and ending with the last
lines of its log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from runtime.errors import UserError

POLL_S = 0.2  # between two readiness checks


class ServerFailed(UserError):
    """The server exited while starting, or did not answer in time."""


def serve_argv(flags: dict) -> list[str]:
    """``python -m kmcorrect serve --flag value ...`` for this interpreter, in ``flags``' order."""
    argv = [sys.executable, "-m", "kmcorrect", "serve"]
    for flag, value in flags.items():
        argv += [f"--{flag}", str(value)]
    return argv


def start_serve(
    flags: dict, *, name: str = "kmcorrect-serve", log_dir: Path | None = None, cwd=None
) -> ServerProcess:
    """`kmcorrect serve` with ``flags`` (``port`` among them; ``metrics-port`` too, if the
    metrics are to be scraped) on loopback."""
    return ServerProcess(
        name,
        serve_argv(flags),
        port=int(flags["port"]),
        metrics_port=int(flags.get("metrics-port") or 0) or None,
        log_dir=log_dir,
        cwd=cwd,
    )


class ServerProcess:
    """A server as a subprocess answering on ``target`` (127.0.0.1:``port``).

    Its output goes to ``log_dir``/``name``.log, or to a temporary file (deleted once the
    server has stopped with exit code 0) when ``log_dir`` is None. Use it as a context manager,
    or call `stop` in a ``finally``.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        port: int,
        metrics_port: int | None = None,
        log_dir: Path | None = None,
        cwd=None,
        env: dict | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.target = f"127.0.0.1:{port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None
        self.stopped: dict | None = None  # what `stop` returned
        if log_dir is None:
            fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
            self.log_path, self._temporary_log, log = Path(path), True, os.fdopen(fd, "wb")
        else:
            self.log_path, self._temporary_log = Path(log_dir) / f"{name}.log", False
            log = open(self.log_path, "wb")  # noqa: SIM115 (closed below, once handed over)
        with log:
            self.process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, ready: Callable | None = None, timeout: float = 120) -> None:
        """Until ``ready(channel)`` (a gRPC channel to ``target``) is true, by default until
        grpc.health.v1 answers SERVING; a gRPC error counts as not yet (the port not open, the
        model still loading). `ServerFailed` at once if the process exits, or after ``timeout``
        seconds."""
        import grpc

        ready = ready or serving
        with grpc.insecure_channel(self.target) as channel:
            deadline = time.monotonic() + timeout
            while True:
                if self.process.poll() is not None:
                    raise ServerFailed(
                        f"{self.name} exited with code {self.process.returncode} before it was "
                        f"ready; {self._log_note()}"
                    )
                try:
                    if ready(channel):
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerFailed(
                        f"{self.name} was not ready after {timeout:.0f} s; {self._log_note()}"
                    )
                time.sleep(POLL_S)

    def _log_note(self) -> str:
        tail = self.log_tail()
        return f"its log ({self.log_path}) ends:\n{tail}" if tail else f"its log is {self.log_path}"

    def stop(self, grace: float = 60.0) -> dict:
        """SIGTERM, wait up to ``grace`` seconds for the drain, kill if still running; then kill
        whatever of its process group still runs 5 s later. Returns the exit code, the seconds
        it took and how many processes were left behind; a second call returns the same."""
        if self.stopped is not None:
            return self.stopped
        began = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        settle = time.monotonic() + 5  # helpers (a multiprocessing tracker) exit just after
        while (left := _group_members(self.process.pid)) and time.monotonic() < settle:
            time.sleep(0.1)
        if left:
            os.killpg(self.process.pid, signal.SIGKILL)
        if self._temporary_log and self.process.returncode == 0:
            self.log_path.unlink(missing_ok=True)
        self.stopped = {
            "exit_code": self.process.returncode,
            "stop_seconds": round(time.monotonic() - began, 2),
            "left_behind": len(left),
        }
        return self.stopped


def serving(channel) -> bool:
    """Whether grpc.health.v1 on ``channel`` says SERVING."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _group_members(pgid: int) -> list[int]:
    """Live processes in a process group (zombies excluded), from /proc (none without it)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members
