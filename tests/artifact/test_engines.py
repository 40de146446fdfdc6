"""``export --for vllm`` and the engines ``inspect``, ``export`` and the card name.

Which engines load a layout is what tests/checkpoints/test_vllm_contract.py (vLLM's own
classes) and test_sglang_contract.py (SGLang's) establish; here: the CLI says it, the
layouts differ exactly where they must, and what cannot be served is refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from fastmtp_export.artifact.inspect import inspect_artifact
from fastmtp_export.checkpoints.synthetic import write_synthetic
from fastmtp_export.cli import app

from ..checkpoints.families import CASES, DEEPSEEK_V3, DEEPSEEK_V3_FP8, FP8_BLOCK, FamilyCase
from ..conftest import assert_one_line_error, export_cli, nothing_written, source_tensors


def _case(case_id: str) -> FamilyCase:
    return next(c for c in CASES if c.id == case_id)


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("ds") / "src", "deepseek_v3", DEEPSEEK_V3)


def test_for_vllm_keeps_the_release_numbering_and_serves_both(
    deepseek: Path, tmp_path: Path
) -> None:
    r = CliRunner().invoke(
        app, ["export", str(deepseek), "--out", str(tmp_path / "d"), "--for", "vllm", "--json"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    layer = DEEPSEEK_V3["num_hidden_layers"]
    assert doc["engines"] == {"sglang": "DeepseekV3ForCausalLMNextN", "vllm": "DeepSeekMTP"}
    spec = json.loads(doc["vllm_command"][-1])
    assert spec == {"method": "mtp", "model": str(tmp_path / "d"), "num_speculative_tokens": 3}
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["num_hidden_layers"] == layer
    assert config["architectures"] == ["DeepseekV3ForCausalLM"]
    report = inspect_artifact(tmp_path / "d")
    assert report.ok, report.problems
    assert report.tensors
    assert all(n.startswith(f"model.layers.{layer}.") for n in report.tensors)
    # the per-layer embedding/head copies are the target's in both engines: not shipped
    assert not any("embed_tokens" in n or "shared_head.head" in n for n in report.tensors)
    text = CliRunner().invoke(app, ["inspect", str(tmp_path / "d")]).stdout
    assert "engines    SGLang (DeepseekV3ForCausalLMNextN), vLLM (DeepSeekMTP)" in text
    assert "vllm serve" in text
    card = (tmp_path / "d" / "README.md").read_text()
    assert "## Serve with vLLM" in card
    assert "DeepSeekMTP" in card


def test_the_default_nextn_layout_says_vllm_cannot_load_it(deepseek: Path, tmp_path: Path) -> None:
    out = export_cli(deepseek, tmp_path / "d")
    assert inspect_artifact(out).engines == {"sglang": "DeepseekV3ForCausalLMNextN"}
    text = CliRunner().invoke(app, ["inspect", str(out)]).stdout
    assert "cannot load this layout; export with --for vllm" in text
    assert "## Serve with vLLM" not in (out / "README.md").read_text()


@pytest.mark.parametrize("case_id", ["mimo", "qwen3_5-moe", "longcat_flash", "mimo_v2"])
def test_one_layout_serves_both_where_the_engines_agree(case_id: str, tmp_path: Path) -> None:
    """``--for vllm`` writes byte for byte the default draft of these families."""
    case = _case(case_id)
    src = write_synthetic(
        tmp_path / "src", case.family, case.config, num_mtp_layers=case.mtp_layers
    )
    default = export_cli(src, tmp_path / "default")
    vllm = export_cli(src, tmp_path / "vllm", "--for", "vllm")
    listed = json.loads((default / "fastmtp.json").read_text())["files"]
    for name in listed:
        assert (default / name).read_bytes() == (vllm / name).read_bytes(), name
    assert set(inspect_artifact(default).engines) == {"sglang", "vllm"}


def test_for_vllm_exports_a_later_mtp_layer_in_the_first_slot(tmp_path: Path) -> None:
    """vLLM reads ``num_nextn_predict_layers`` layers from ``num_hidden_layers`` on: the
    chosen layer goes to the first, and the config says one."""
    config = {**DEEPSEEK_V3, "num_nextn_predict_layers": 2}
    src = write_synthetic(tmp_path / "src", "deepseek_v3", config, num_mtp_layers=2)
    out = export_cli(src, tmp_path / "d", "--for", "vllm", "--mtp-layer", "1")
    draft = json.loads((out / "config.json").read_text())
    assert draft["num_nextn_predict_layers"] == 1
    assert draft["num_hidden_layers"] == DEEPSEEK_V3["num_hidden_layers"]
    layer = draft["num_hidden_layers"]
    report = inspect_artifact(out)
    assert report.ok, report.problems
    name = f"model.layers.{layer}.eh_proj.weight"
    got = load_file(out / "model.safetensors")[name]
    want = source_tensors(src, lambda n: n == f"model.layers.{layer + 1}.eh_proj.weight")
    assert torch.equal(got, next(iter(want.values())))


def test_a_mixed_nextn_layout_is_neither_engines(deepseek: Path, tmp_path: Path) -> None:
    """The release's numbering with SGLang's names loads nothing in either engine."""
    out = export_cli(deepseek, tmp_path / "d")
    config = json.loads((out / "config.json").read_text())
    config["architectures"] = ["DeepseekV3ForCausalLM"]
    config["num_hidden_layers"] = DEEPSEEK_V3["num_hidden_layers"]
    (out / "config.json").write_text(json.dumps(config))
    report = inspect_artifact(out, check_hashes=False)
    assert report.engines == {}
    assert any(p.startswith("missing model.layers.") for p in report.problems), report.problems


def test_for_vllm_refuses_to_keep_an_fp8_head(tmp_path: Path) -> None:
    src = write_synthetic(tmp_path / "src", "deepseek_v3", DEEPSEEK_V3_FP8, fp8_block=FP8_BLOCK)
    r = CliRunner().invoke(app, ["export", str(src), "--out", str(tmp_path / "d"), "--for", "vllm"])
    assert_one_line_error(r, "--for vllm cannot keep the FP8 head", "--dtype bf16")
    nothing_written(tmp_path / "d")
    out = export_cli(src, tmp_path / "bf16", "--for", "vllm", "--dtype", "bf16")
    assert "vllm" in inspect_artifact(out).engines
