"""Launch real ``python -m sglang.launch_server`` processes for the CPU lane, on loopback.

Every server runs with the test-only plugin on ``PYTHONPATH`` (entry-point discovery
through its dist-info folder), the stub ``libcuda.so.1`` on ``LD_LIBRARY_PATH``, and
``SGLANG_USE_CPU_ENGINE=1``. Starting, probing and stopping a server is
bench/_server.py's, shared with the serving benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LANE = Path(__file__).resolve().parent
BENCH = LANE.parents[1] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from _server import Server as _Server  # noqa: E402  (bench/ is not a package)
from _server import launched  # noqa: E402

STUB_SOURCE = LANE / "cudastub.c"
#: built by the Makefile; rebuilt here when missing so plain `pytest` works too
STUB_DIR = Path(sys.prefix) / "cudastub"
START_TIMEOUT_S = 240

CPU_FLAGS = [
    "--device", "cpu", "--attention-backend", "torch_native", "--disable-cuda-graph",
    "--dtype", "float32", "--mem-fraction-static", "0.05", "--max-total-tokens", "8192",
    "--skip-tokenizer-init", "--log-level", "warning",
    # an idle scheduler otherwise spins a core: on 2 cores that halves (or, with torch's
    # OpenMP threads spinning against it, far worse) whatever the test computes meanwhile
    "--sleep-on-idle",
]  # fmt: skip
#: SmolLM2-135M (540 MB in float32) at the lane's 0.05 fails SGLang's start-up check
#: ("Loaded weights leave no GPU memory for the KV cache") whenever less than ~11 GB is
#: free; the KV cache stays capped by --max-total-tokens, so a larger fraction costs nothing
REAL_MODEL_FLAGS = ["--mem-fraction-static", "0.3"]
#: tensor parallelism 2 on 2 cores: one core per rank (SGLang otherwise asserts ranks <=
#: NUMA nodes); the lane plugin's parallel hook keeps PyNccl out (docs/testing.md)
TP2_FLAGS = ["--tp-size", "2"]
TP2_ENV = {"SGLANG_CPU_OMP_THREADS_BIND": "0|1"}


def serving_flags(*, tokenizer: bool) -> list[str]:
    """:data:`CPU_FLAGS` for bench/bench_serving.py's servers: SGLang's default log level,
    since sglang_patch announces itself at info and the benchmark checks that line; with
    ``tokenizer`` the server keeps its tokenizer (text requests, language detection)."""
    flags = [f for f in CPU_FLAGS if not (tokenizer and f == "--skip-tokenizer-init")]
    i = flags.index("--log-level")
    del flags[i : i + 2]
    return flags


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


class Server(_Server):
    """A lane server: also reads the lane plugin's status file."""

    def __init__(self, base: _Server, status: Path) -> None:
        super().__init__(base.url, base.log)
        self.status = status

    def generate(self, input_ids: list[int], max_new_tokens: int, **extra: Any) -> dict[str, Any]:
        params = {"max_new_tokens": max_new_tokens, "temperature": 0, **extra}
        doc: dict[str, Any] = self.post(
            "/generate", {"input_ids": input_ids, "sampling_params": params}, timeout=120
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
    flags = [f for f in CPU_FLAGS if not (tokenizer and f == "--skip-tokenizer-init")]
    workdir.mkdir(parents=True, exist_ok=True)
    status = Path(tempfile.mkstemp(prefix="status-", suffix=".jsonl", dir=workdir)[1])
    with launched(
        ["--model-path", str(model), *flags, *extra],
        {**lane_env(status), **(env or {})},
        status.with_name(status.name.replace("status-", "server-").replace(".jsonl", ".log")),
        start_timeout=START_TIMEOUT_S,
    ) as base:
        yield Server(base, status)
