"""Run ``python -m sglang.launch_server`` on loopback and talk to it over HTTP.

Shared by the serving benchmark and the CPU test lane (tests/sglang_lane/server.py), so
both start, probe and stop servers the same way. Stdlib only. A server starts in its own
session and is killed as a process group, so no scheduler or detokenizer outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    log: Path

    def post(self, path: str, doc: dict[str, Any], timeout: float = 600) -> Any:
        req = urllib.request.Request(
            self.url + path, json.dumps(doc).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None  # /abort_request answers with no body

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, b""  # not listening (yet)

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


#: the log line of an HTTP port another socket took between free_port() and the bind
PORT_TAKEN = "address already in use"
START_ATTEMPTS = 3


@contextmanager
def launched(
    args: Sequence[str], env: dict[str, str], log: Path, start_timeout: float = 600
) -> Iterator[Server]:
    """A healthy server for ``sglang.launch_server ARGS`` (host and port are added); killed on exit.

    The port comes from :func:`free_port`, which releases it before SGLang binds it, and
    SGLang's own start-up may take the same free port for an internal socket first. The
    server then logs ``address already in use`` and waits forever without HTTP, so that
    start is killed and retried on a new port (up to :data:`START_ATTEMPTS` times).

    Raises ``RuntimeError`` with the log's tail when it exits or is not healthy in time.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        argv = [sys.executable, "-m", "sglang.launch_server", *args,
                "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        server = Server(f"http://127.0.0.1:{port}", log)
        try:
            if _wait_healthy(server, proc, start_timeout):
                yield server
                return
            print(f"port {port} was taken during start-up (attempt {attempt}); retrying",
                  file=sys.stderr)  # fmt: skip
        finally:
            _kill_group(proc)
    raise RuntimeError(f"sglang could not bind a free port in {START_ATTEMPTS} attempts")


def _wait_healthy(server: Server, proc: subprocess.Popen[bytes], start_timeout: float) -> bool:
    """True once ``/health`` answers 200; False when the HTTP port was taken.

    Raises ``RuntimeError`` when the server exits or is not healthy in time.
    """
    deadline = time.monotonic() + start_timeout
    while server.get("/health", timeout=2)[0] != 200:
        if proc.poll() is not None:
            raise RuntimeError(f"sglang exited with {proc.returncode}:\n{server.log_tail()}")
        if PORT_TAKEN in server.log.read_text(errors="replace"):
            return False
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"sglang not healthy after {start_timeout:.0f} s:\n{server.log_tail()}"
            )
        time.sleep(1)
    return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            # children (scheduler, detokenizer) share the group: make sure they are gone
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)
