"""bench/_server.py's start-up wait: a taken HTTP port is noticed at once, not after the
start timeout (a real process stands in for SGLang: none is started here)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..sglang_lane import server as _lane  # puts bench/ on sys.path

from _server import PORT_TAKEN, Server, _kill_group, _wait_healthy, free_port  # isort: skip

assert _lane.BENCH.is_dir()


def _quiet_process(log: Path, text: str) -> subprocess.Popen[bytes]:
    """A process that writes ``text`` to ``log`` and then idles without serving HTTP,
    as SGLang does when uvicorn cannot bind its port."""
    code = f"import sys, time; sys.stdout.write({text!r}); sys.stdout.flush(); time.sleep(60)"
    with log.open("wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-c", code], stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def test_a_taken_port_is_reported_at_once(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc = _quiet_process(log, f"ERROR: [Errno 98] error while attempting to bind: {PORT_TAKEN}\n")
    server = Server(f"http://127.0.0.1:{free_port()}", log)
    start = time.monotonic()
    try:
        assert _wait_healthy(server, proc, start_timeout=60) is False
    finally:
        _kill_group(proc)
    assert time.monotonic() - start < 20  # not the 60 s timeout


def test_a_silent_server_still_times_out(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc = _quiet_process(log, "INFO: loading weights\n")
    server = Server(f"http://127.0.0.1:{free_port()}", log)
    try:
        with pytest.raises(RuntimeError, match="not healthy after 3 s"):
            _wait_healthy(server, proc, start_timeout=3)
    finally:
        _kill_group(proc)
