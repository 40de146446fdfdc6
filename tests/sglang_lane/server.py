"""Launch real ``python -m sglang.launch_server`` processes for the CPU lane, on loopback.

Every server runs with the test-only plugin on ``PYTHONPATH`` (entry-point discovery
through its dist-info folder), the stub ``libcuda.so.1`` on ``LD_LIBRARY_PATH``, and
``SGLANG_USE_CPU_ENGINE=1``. Servers start in their own session and are killed as a
process group, so no scheduler or detokenizer outlives a test.
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LANE = Path(__file__).resolve().parent
STUB_SOURCE = LANE / "cudastub.c"
#: built by the Makefile; rebuilt here when missing so plain `pytest` works too
STUB_DIR = Path(sys.prefix) / "cudastub"
START_TIMEOUT_S = 240

CPU_FLAGS = [
    "--device", "cpu", "--attention-backend", "torch_native", "--disable-cuda-graph",
    "--dtype", "float32", "--mem-fraction-static", "0.05", "--max-total-tokens", "8192",
    "--skip-tokenizer-init", "--log-level", "warning",
]  # fmt: skip
CHAIN_FLAGS = [
    "--speculative-algorithm", "EAGLE", "--speculative-num-steps", "3",
    "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", "4",
]  # fmt: skip


def stub_dir() -> Path:
    """The directory holding the stub ``libcuda.so.1``, compiling it if needed."""
    lib = STUB_DIR / "libcuda.so.1"
    if not lib.exists():
        STUB_DIR.mkdir(parents=True, exist_ok=True)
        cc = os.environ.get("CC", "cc")
        subprocess.run(
            [cc, "-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", "-o", str(lib),
             str(STUB_SOURCE)],
            check=True,
        )  # fmt: skip
    return STUB_DIR


def lane_env(status_file: Path | None = None) -> dict[str, str]:
    """Environment for any process that imports SGLang here."""
    env = dict(os.environ)
    stub = str(stub_dir())
    env["LD_LIBRARY_PATH"] = stub + (
        ":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else ""
    )
    env["SGLANG_USE_CPU_ENGINE"] = "1"
    env["PYTHONPATH"] = str(LANE) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if status_file is not None:
        env["FASTMTP_CPU_LANE_STATUS"] = str(status_file)
    return env


def sglang_import_problem() -> str | None:
    """Why SGLang 0.5.23 cannot be imported in the lane environment, or ``None``."""
    code = "import sglang, sgl_kernel; print(sglang.__version__)"
    r = subprocess.run(
        [sys.executable, "-c", code], env=lane_env(), capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        return (r.stderr.strip().splitlines() or ["unknown error"])[-1]
    if r.stdout.strip() != "0.5.23":
        return f"SGLang {r.stdout.strip()} is installed; the lane needs 0.5.23"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    log: Path
    status: Path

    def post(self, path: str, doc: dict[str, Any], timeout: float = 120) -> Any:
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

    def generate(self, input_ids: list[int], max_new_tokens: int, **extra: Any) -> dict[str, Any]:
        params = {"max_new_tokens": max_new_tokens, "temperature": 0, **extra}
        doc: dict[str, Any] = self.post(
            "/generate", {"input_ids": input_ids, "sampling_params": params}
        )
        return doc

    def events(self) -> dict[int, set[str]]:
        """pid -> lane plugin events recorded so far."""
        out: dict[int, set[str]] = {}
        if self.status.exists():
            for line in self.status.read_text().splitlines():
                d = json.loads(line)
                out.setdefault(d["pid"], set()).add(d["event"])
        return out

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


@contextmanager
def sglang_server(
    model: Path,
    workdir: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    tokenizer: bool = False,
) -> Iterator[Server]:
    """A running server for ``model`` (plus ``extra`` flags and ``env``); killed on exit.

    ``tokenizer=True`` loads the model's tokenizer (text requests); by default servers
    take token ids only, which saves start-up time.
    """
    port = _free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log, status = workdir / f"server-{port}.log", workdir / f"status-{port}.jsonl"
    flags = [f for f in CPU_FLAGS if not (tokenizer and f == "--skip-tokenizer-init")]
    argv = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(model),
            *flags, "--host", "127.0.0.1", "--port", str(port), *extra]  # fmt: skip
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            argv,
            env={**lane_env(status), **(env or {})},
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", log, status)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while server.get("/health", timeout=2)[0] != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"sglang exited with {proc.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"sglang not healthy after {START_TIMEOUT_S} s:\n{server.log_tail()}"
                )
            time.sleep(1)
        yield server
    finally:
        _kill_group(proc)


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
