"""A server in a subprocess (runtime.serve_process), with stand-in servers: small Python
programs that exit, hang, ignore SIGTERM or answer the readiness check."""

import sys

import pytest

from runtime.net import free_port
from runtime.serve_process import ServerFailed, ServerProcess, serve_argv


def program(code: str, tmp_path, **kwargs) -> ServerProcess:
    argv = [sys.executable, "-c", code]
    return ServerProcess("stand-in", argv, port=free_port(), log_dir=tmp_path, **kwargs)


def test_the_serve_command_keeps_the_flags_in_order():
    argv = serve_argv({"artifact": "a", "port": 5, "metrics-port": 0})
    assert argv[0] == sys.executable
    assert " ".join(argv[1:]) == "-m kmcorrect serve --artifact a --port 5 --metrics-port 0"


def test_a_server_that_exits_while_starting_is_an_error_with_its_log(tmp_path):
    server = program("import sys; print('cannot serve: no artifact'); sys.exit(2)", tmp_path)
    with pytest.raises(ServerFailed, match="exited with code 2") as raised:
        server.wait_ready(lambda channel: False, timeout=60)
    assert "cannot serve: no artifact" in str(raised.value)
    assert server.stop()["exit_code"] == 2


def test_a_server_that_never_gets_ready_times_out_and_is_killed(tmp_path):
    flag = tmp_path / "ignoring"
    stubborn = "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    server = program(f"{stubborn}pathlib.Path({str(flag)!r}).touch(); time.sleep(60)", tmp_path)
    server.wait_ready(lambda channel: flag.exists(), timeout=60)  # SIGTERM is ignored from now
    with pytest.raises(ServerFailed, match="not ready after 1 s"):
        server.wait_ready(lambda channel: False, timeout=1)
    stopped = server.stop(grace=1)
    assert stopped["exit_code"] == -9 and stopped["left_behind"] == 0
    assert server.stop() is stopped  # stopping twice is harmless


def test_ready_when_the_check_says_so_and_a_clean_stop_removes_the_temporary_log(tmp_path):
    flag = tmp_path / "ready"
    drains = (
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))"
    )
    argv = [sys.executable, "-c", f"{drains}; pathlib.Path({str(flag)!r}).touch(); time.sleep(60)"]
    with ServerProcess("stand-in", argv, port=free_port()) as server:  # a temporary log
        calls = []
        server.wait_ready(lambda channel: calls.append(channel) or flag.exists(), timeout=60)
        assert calls and server.log_path.exists()
    assert server.stopped["exit_code"] == 0
    assert not server.log_path.exists()
