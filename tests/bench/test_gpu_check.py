"""bench/gpu_check.py's CPU fallback: it runs where the GPU machines run it (torch and
numpy, no SGLang, no pydantic), writes the JSON it prints, and fails when the plugin is
broken on purpose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.py"
#: what the GPU machines lack (or we must not need): any import of these fails
ABSENT = (
    "sglang", "sgl_kernel", "pydantic", "msgspec", "typer", "huggingface_hub",
    "safetensors", "transformers", "tokenizers", "py3langid", "prometheus_client",
)  # fmt: skip
#: runs the script as ``python bench/gpu_check.py`` would, with ABSENT unimportable
RUN_WITHOUT = f"""
import importlib.abc, runpy, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {ABSENT!r}:
            raise ImportError("not on the GPU machine: " + name)
sys.meta_path.insert(0, Absent())
sys.path.insert(0, {str(SCRIPT.parent)!r})
sys.argv = [{str(SCRIPT)!r}, *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run(
    args: list[str], *, bare: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", RUN_WITHOUT] if bare else [sys.executable, str(SCRIPT)]
    full_env = {k: v for k, v in os.environ.items() if k != "FASTMTP_GPU_CHECK_CORRUPT"}
    return subprocess.run(
        [*cmd, "--cpu", *args], capture_output=True, text=True, timeout=300, cwd=ROOT,
        env=full_env | (env or {}), check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_the_cpu_fallback_runs_every_part_without_sglang(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    r = _run(["--out", str(out)], bare=True)
    assert r.returncode == 0, r.stderr[-3000:]
    printed: dict[str, Any] = json.loads(r.stdout)
    assert json.loads(out.read_text()) == printed
    assert printed["ok"] is True
    assert printed["failures"] == []
    assert printed["mode"] == "cpu"
    graphs = printed["graphs"]
    # the draft hooks were loaded without their package (whose guard needs pydantic)
    assert graphs["hooks_module"] == "sglang_patch.hooks.draft"
    assert graphs["cuda_graphs"] is False
    assert graphs["mismatched_rows"] == 0
    assert graphs["pointers_stable"] is True
    assert graphs["replays_compared"] >= 3 * len(graphs["raw_batch_sizes"])
    assert graphs["switches"] > 0
    # single languages and pairs were all drafted
    assert {"en", "ru", "zh", "en+ru", "en+zh", "ru+zh"} <= set(graphs["sets_drafted"])
    costs = printed["costs"]
    assert set(costs["head_step"]) == {"1", "8"}
    assert costs["bank_memory"]["nbytes_mib"] == costs["bank_memory"]["documented_mib"]
    hooks = printed["hooks"]
    assert list(hooks["per_round"]) == ["1", "4", "16", "64", "256"]
    assert all(row["round_us"] > 0 for row in hooks["per_round"].values())
    assert hooks["step_source"].startswith("arithmetic")
    train = printed["train"]
    for precision in ("bf16", "fp32"):
        assert train[precision]["k3_tok_s"] > 0
        assert train[precision]["forward_only_tok_s"] > 0


@pytest.mark.parametrize("how", ["rebind", "carry"])
def test_a_broken_plugin_fails_the_check(tmp_path: Path, how: str) -> None:
    """rebind: a switch into new buffers (captured graphs keep the old ones); carry: the
    extend's slots carried to the next round without the full-id conversion."""
    out = tmp_path / "check.json"
    r = _run(["--parts", "graphs", "--out", str(out)], env={"FASTMTP_GPU_CHECK_CORRUPT": how})
    assert r.returncode == 1, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["ok"] is False
    assert result["failures"] == ["graphs"]
    assert result["graphs"]["corrupted"] == how
    assert result["graphs"]["mismatched_rows"] > 0
    assert (
        result["graphs"]["first_mismatch"]["expected"] != result["graphs"]["first_mismatch"]["got"]
    )
    assert "FAILED: graphs" in r.stderr


def test_a_bad_part_is_one_line(tmp_path: Path) -> None:
    r = _run(["--parts", "graphs,speed", "--out", str(tmp_path / "x.json")])
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "error: unknown part 'speed'; choose from graphs, costs, hooks, train"
    ]
    assert not (tmp_path / "x.json").exists()
