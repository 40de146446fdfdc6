"""The vLLM contract lane: vLLM 0.34.0's own MTP draft classes load our drafts on CPU.

vLLM lives in its own virtual environment (``make vllm-lane``: ``.venv-vllm``, layered on
``.venv``), since it pins torch 2.14.0 where SGLang pins 2.14.1; the tests run
tests/vllm_lane/load_draft.py with that interpreter. docs/vllm.md says what is checked.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .cpu_shims import ENV

LANE = Path(__file__).resolve().parent
REPO = LANE.parents[1]
LOAD_DRAFT = LANE / "load_draft.py"
VLLM_VERSION = "0.34.0"


def vllm_python() -> Path:
    """The lane's interpreter (``FASTMTP_VLLM_PYTHON`` overrides ``.venv-vllm``)."""
    return Path(os.environ.get("FASTMTP_VLLM_PYTHON") or REPO / ".venv-vllm" / "bin" / "python")


def vllm_env() -> dict[str, str]:
    """Environment for a process that imports vLLM here (cpu_shims.ENV, quiet logs)."""
    return {**os.environ, **ENV, "VLLM_LOGGING_LEVEL": "WARNING"}


def vllm_import_problem() -> str | None:
    """Why vLLM 0.34.0 cannot be imported with the lane's interpreter, or ``None``."""
    python = vllm_python()
    if not python.exists():
        return f"{python} does not exist; run `make vllm-lane`"
    code = "import vllm; print(vllm.__version__)"
    r = subprocess.run(
        [str(python), "-c", code], env=vllm_env(), capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        return (r.stderr.strip().splitlines() or ["unknown error"])[-1]
    version = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "?"
    if version != VLLM_VERSION:
        return f"vLLM {version} is installed; the lane needs {VLLM_VERSION}"
    return None
