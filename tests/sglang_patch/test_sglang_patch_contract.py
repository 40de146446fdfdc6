"""sglang_patch against the installed SGLang 0.5.23: seams, entry point, version guard.

Run in subprocesses with the lane environment (stub libcuda, CPU engine), because
importing sglang needs them at process start.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fastmtp_export.artifact.export import export_draft
from fastmtp_export.checkpoints.synthetic import write_synthetic
from fastmtp_export.maps.token_map import save_token_map

from ..checkpoints.families import DEEPSEEK_V3, MIMO_V2
from ..sglang_lane.server import lane_env, sglang_import_problem

CONTRACT = r"""
import inspect, json, pkgutil
from importlib.metadata import entry_points
from sglang_patch import hooks
out = {"targets": {}}
for name, target in hooks.TARGETS.items():
    owner, attr = target.rsplit(".", 1)
    fn = getattr(pkgutil.resolve_name(owner), attr)
    out["targets"][name] = list(inspect.signature(fn).parameters)
eps = {ep.name: ep.value for ep in entry_points(group="sglang.srt.plugins")}
out["entry_point"] = eps.get("fastmtp")
from sglang.srt.plugins import load_plugins
from sglang.srt.plugins.hook_registry import HookRegistry
load_plugins()
out["patched"] = sorted(t for t in hooks.TARGETS.values() if t in HookRegistry._patched)
print(json.dumps(out))
"""

REFUSAL = r"""
import json, sglang
sglang.__version__ = "0.6.0"
from sglang_patch import hooks, plugin
from sglang.srt.plugins.hook_registry import HookRegistry
plugin.register()  # must not raise: SGLang would only log it
problem = hooks.guard._version_problem
print(json.dumps({"registered": sorted(HookRegistry._hooks), "problem": problem}))
"""


def _run(code: str, **env: str) -> str:
    problem = sglang_import_problem()
    assert problem is None, f"SGLang 0.5.23 is needed: {problem}"
    r = subprocess.run(
        [sys.executable, "-c", code], env={**lane_env(), **env}, capture_output=True,
        text=True, check=False, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip().splitlines()[-1]


def test_hooked_seams_exist_and_load_plugins_applies_them() -> None:
    out = json.loads(_run(CONTRACT))
    assert out["targets"]["guard"][:3] == ["self", "server_args", "port_args"]
    assert out["targets"]["init_token_map"] == ["self"]
    assert out["targets"]["init_lm_head"] == ["self"]
    assert out["targets"]["draft"][:2] == ["self", "batch"]
    assert out["targets"]["prefill"][:2] == ["self", "batch"]
    assert out["targets"]["decode_extend"][:3] == ["self", "batch", "batch_result"]
    assert out["targets"]["detect"][:4] == ["self", "obj", "input_text", "input_ids"]
    assert out["targets"]["fetch"][:3] == ["self", "server_args", "port_args"]
    assert out["entry_point"] == "sglang_patch.plugin:register"
    assert len(out["patched"]) == len(out["targets"]) == 8, out  # entry point ran, hooks applied


def test_unsupported_sglang_registers_only_the_refusing_guard() -> None:
    out = json.loads(_run(REFUSAL))
    assert out["registered"] == ["sglang.srt.managers.scheduler.Scheduler.__init__"]
    assert out["problem"].startswith("fastmtp sglang_patch supports SGLang 0.5.23, found 0.6.0")
    assert "FASTMTP_SGLANG_PATCH=0" in out["problem"]


def test_kill_switch_registers_nothing() -> None:
    out = json.loads(_run(CONTRACT, FASTMTP_SGLANG_PATCH="0"))
    assert out["patched"] == []


MULTI_LAYER = r"""
import json, sys
from sglang.srt.plugins import load_plugins
from sglang.srt.server_args import ServerArgs
from sglang_patch.hooks import guard_before
load_plugins()
out = {}
for base in sys.argv[2:]:
    args = ServerArgs(
        model_path=base, speculative_algorithm="EAGLE", speculative_draft_model_path=sys.argv[1],
        device="cpu", speculative_num_steps=3, speculative_eagle_topk=1,
        speculative_num_draft_tokens=4,
    )
    args.resolve_once()
    try:
        guard_before(None, args)
        out[base] = None
    except RuntimeError as exc:
        out[base] = str(exc)
print(json.dumps(out))
"""


def test_multi_layer_eagle_targets_refuse_an_artifact_with_maps(
    tiny_source: Path, tmp_path: Path
) -> None:
    """A MiMo-V2 target makes SGLang resolve multi-layer EAGLE, whose worker never reads a
    token map: per-language maps would be silently unused, so the guard stops."""
    eos = json.loads((tiny_source / "config.json").read_text())["eos_token_id"]
    save_token_map(tmp_path / "en.pt", [eos, 1, 2])
    draft = export_draft(tiny_source, tmp_path / "draft", token_map=[f"en={tmp_path / 'en.pt'}"])
    mimo_v2 = write_synthetic(tmp_path / "mimo_v2", "mimo_v2", MIMO_V2, num_mtp_layers=3)
    deepseek = write_synthetic(tmp_path / "deepseek", "deepseek_v3", DEEPSEEK_V3)
    code = f"import sys; sys.argv = ['x', {str(draft.out)!r}, {str(mimo_v2)!r}, " + (
        f"{str(deepseek)!r}]\n" + MULTI_LAYER
    )
    out = json.loads(_run(code))
    assert "multi-layer EAGLE" in out[str(mimo_v2)]
    assert "FASTMTP_SGLANG_PATCH=0" in out[str(mimo_v2)]
    assert out[str(deepseek)] is None  # single-layer EAGLE: the plugin serves its maps
