"""Every MTP family through ``fastmtp-export``: detection, renames, inspect, bad input.

SGLang's own view of the exported drafts is tests/checkpoints/test_sglang_contract.py;
here the exporter's side, with no SGLang: release names map to the draft names SGLang's
loaders read (written out by hand from each release's layout, not from the readers),
every export passes ``inspect``, and bad inputs stop with one line and nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from fastmtp_export.artifact.inspect import inspect_artifact
from fastmtp_export.checkpoints.readers import READERS
from fastmtp_export.checkpoints.synthetic import write_synthetic
from fastmtp_export.cli import app

from ..conftest import assert_one_line_error, export_cli, nothing_written, tree_digest
from .families import (
    CASES,
    DEEPSEEK_V3,
    LONGCAT_FLASH,
    MIMO_V2,
    QWEN3_NEXT,
    FamilyCase,
    qwen3_5,
)  # fmt: skip
from .trainer_checkpoints import write_specforge, write_speculators

#: (family, MTP layer, release tensor name, draft name or None when not exported)
RELEASE_NAMES: list[tuple[str, int, str, str | None]] = [
    ("mimo", 1, "model.mtp_layers.1.input_proj.weight", "model.mtp_layers.0.input_proj.weight"),
    ("mimo", 1, "model.mtp_layers.0.input_proj.weight", None),
    ("deepseek_v3", 0, "model.layers.2.eh_proj.weight", "model.layers.0.eh_proj.weight"),
    (
        "deepseek_v3", 0, "model.layers.2.mlp.experts.3.down_proj.weight",
        "model.layers.0.mlp.experts.3.down_proj.weight",
    ),
    (
        "deepseek_v3", 0, "model.layers.2.mlp.gate.e_score_correction_bias",
        "model.layers.0.mlp.gate.e_score_correction_bias",
    ),
    ("deepseek_v3", 0, "model.layers.2.shared_head.head.weight", None),  # the target's head
    ("deepseek_v3", 0, "model.layers.2.embed_tokens.weight", None),
    ("deepseek_v3", 0, "model.layers.1.mlp.gate.weight", None),  # a trunk layer
    ("glm4_moe", 0, "model.layers.2.self_attn.q_proj.bias", "model.layers.0.self_attn.q_proj.bias"),
    ("qwen3_next", 0, "mtp.fc.weight", "mtp.fc.weight"),
    (
        "qwen3_next", 0, "mtp.layers.0.mlp.shared_expert_gate.weight",
        "mtp.layers.0.mlp.shared_expert_gate.weight",
    ),
    ("qwen3_next", 0, "model.layers.0.linear_attn.in_proj_qkvz.weight", None),
    (
        "qwen3_5", 0, "mtp.layers.0.mlp.experts.gate_up_proj",
        "mtp.layers.0.mlp.experts.gate_up_proj",
    ),
    ("qwen3_5", 0, "model.language_model.embed_tokens.weight", None),
    ("longcat_flash", 0, "model.mtp.layers.0.enorm.m.weight", "model.mtp.layers.0.enorm.m.weight"),
    ("longcat_flash", 0, "model.mtp.norm.weight", "model.mtp.norm.weight"),
    ("longcat_flash", 0, "model.mtp.embed_tokens.weight", None),
    ("mimo_v2", 2, "model.mtp.layers.2.eh_proj.weight", "model.mtp.layers.2.eh_proj.weight"),
    (
        "step3p5", 1, "model.layers.46.shared_head.output.weight",
        "model.layers.46.shared_head.output.weight",
    ),
    ("step3p5", 0, "model.embed_tokens.weight", "model.embed_tokens.weight"),  # its own
    ("step3p5", 0, "model.layers.44.mlp.gate_proj.weight", None),  # the trunk's last layer
]  # fmt: skip

_CONFIGS: dict[str, dict[str, Any]] = {c.family: c.config for c in CASES}


@pytest.mark.parametrize(("family", "layer", "release", "draft"), RELEASE_NAMES)
def test_release_names_map_to_the_names_sglang_reads(
    family: str, layer: int, release: str, draft: str | None
) -> None:
    assert READERS[family].draft_name(release, _CONFIGS[family], layer) == draft


def _source(tmp_path: Path, case: FamilyCase) -> Path:
    return write_synthetic(
        tmp_path / "src", case.family, case.config,
        num_mtp_layers=case.mtp_layers, contract=case.contract,
    )  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_family_exports_a_draft_that_inspects_clean(case: FamilyCase, tmp_path: Path) -> None:
    src = _source(tmp_path, case)
    before = tree_digest(src)
    out = export_cli(src, tmp_path / "draft")
    report = inspect_artifact(out, check_hashes=True)
    assert report.problems == []
    reader = READERS[case.family]
    assert report.manifest.family == case.family
    assert report.manifest.sglang.draft_class == reader.contract_for(case.config).sglang_class
    assert tree_digest(src) == before  # the source is never modified
    r = CliRunner().invoke(app, ["inspect", str(out)])
    assert r.exit_code == 0, r.output
    assert f"family     {case.family} (SGLang {report.manifest.sglang.draft_class})" in r.stdout


def test_a_renamed_architecture_is_detected_by_its_tensor_names(tmp_path: Path) -> None:
    src = write_synthetic(tmp_path / "src", "deepseek_v3", DEEPSEEK_V3)
    config = json.loads((src / "config.json").read_text())
    config["architectures"] = ["MyDeepseekFineTune"]
    (src / "config.json").write_text(json.dumps(config))
    out = export_cli(src, tmp_path / "draft")
    assert json.loads((out / "fastmtp.json").read_text())["family"] == "deepseek_v3"


def test_family_forced_on_another_familys_checkpoint_names_the_detected_one(
    runner: CliRunner, tmp_path: Path
) -> None:
    src = write_synthetic(tmp_path / "src", "qwen3_next", QWEN3_NEXT)
    out = tmp_path / "draft"
    r = runner.invoke(app, ["export", str(src), "--out", str(out), "--family", "deepseek_v3"])
    assert_one_line_error(
        r, "--family deepseek_v3 does not match", "a qwen3_next checkpoint", "drop --family"
    )
    nothing_written(out)
    r = runner.invoke(app, ["export", str(src), "--out", str(out), "--family", "llama"])
    assert_one_line_error(r, "unknown --family 'llama'", "qwen3_next")
    nothing_written(out)


def test_a_missing_mtp_tensor_is_named_and_nothing_is_written(
    runner: CliRunner, tmp_path: Path
) -> None:
    src = write_synthetic(tmp_path / "src", "deepseek_v3", DEEPSEEK_V3)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.layers.2.mlp.experts.3.up_proj.weight"]
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    out = tmp_path / "draft"
    r = runner.invoke(app, ["export", str(src), "--out", str(out)])
    assert_one_line_error(
        r, "DeepseekV3ForCausalLMNextN", "missing model.layers.0.mlp.experts.3.up_proj.weight"
    )
    nothing_written(out)


def test_a_checkpoint_without_its_nextn_layer_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    src = write_synthetic(tmp_path / "src", "deepseek_v3", DEEPSEEK_V3)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    index["weight_map"] = {
        k: v for k, v in index["weight_map"].items() if not k.startswith("model.layers.2.")
    }
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    out = tmp_path / "draft"
    r = runner.invoke(app, ["export", str(src), "--out", str(out), "--family", "deepseek_v3"])
    assert_one_line_error(r, "has no model.layers.{num_hidden_layers}.* (NextN) tensors")
    nothing_written(out)


_FP8 = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}


@pytest.mark.parametrize("nested", [False, True])
def test_a_bf16_head_under_a_stale_quantization_config_exports(
    runner: CliRunner, tmp_path: Path, nested: bool
) -> None:
    """DeepSeek's fp8_cast_bf16.py writes bf16 weights and no config.json, so the copy keeps
    the FP8 release's config: the key is stale, named in a warning and left out."""
    if nested:  # a VL release keeps the text model's config under text_config
        config: dict[str, Any] = qwen3_5(moe=False)
        config["text_config"] = {**config["text_config"], "quantization_config": _FP8}
        family, key = "qwen3_5", "text_config.quantization_config"
    else:
        config = {**DEEPSEEK_V3, "quantization_config": _FP8}
        family, key = "deepseek_v3", "quantization_config"
    src = write_synthetic(tmp_path / "src", family, config)
    before = tree_digest(src)
    out = tmp_path / "draft"
    r = runner.invoke(app, ["export", str(src), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert f"{key} in {src}/config.json says quant_method=fp8" in r.stderr
    assert "MTP tensors are BF16: a stale key" in r.stderr
    draft = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in draft
    assert "quantization_config" not in draft.get("text_config", {})
    manifest = json.loads((out / "fastmtp.json").read_text())
    assert key in manifest["config_changes"]["removed"]
    assert inspect_artifact(out).ok
    assert tree_digest(src) == before


def test_a_longcat_release_config_gets_the_rope_dict_sglang_needs(
    runner: CliRunner, tmp_path: Path
) -> None:
    """The release config has rope_theta only, which SGLang's LongCat classes cannot load
    under the transformers it installs (tests/checkpoints/test_sglang_contract.py loads
    the result); the draft config adds the dict, and inspect flags a draft without it."""
    assert "rope_scaling" not in LONGCAT_FLASH  # the release-like case
    assert "rope_parameters" not in LONGCAT_FLASH
    src = write_synthetic(tmp_path / "src", "longcat_flash", LONGCAT_FLASH)
    out = export_cli(src, tmp_path / "draft")
    rope = {"rope_type": "default", "rope_theta": LONGCAT_FLASH["rope_theta"]}
    draft = json.loads((out / "config.json").read_text())
    assert draft["rope_scaling"] == rope
    assert draft["rope_theta"] == LONGCAT_FLASH["rope_theta"]
    manifest = json.loads((out / "fastmtp.json").read_text())
    assert manifest["config_changes"]["set"]["rope_scaling"] == rope
    assert inspect_artifact(out).ok
    del draft["rope_scaling"]
    (out / "config.json").write_text(json.dumps(draft))
    problems = " ".join(inspect_artifact(out).problems)
    assert "rope_theta but no rope_scaling dict" in problems
    # a release that already carries a rope dict keeps it as it is
    own = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 2.0}
    src2 = write_synthetic(
        tmp_path / "src2", "longcat_flash", {**LONGCAT_FLASH, "rope_scaling": own}
    )
    draft2 = json.loads((export_cli(src2, tmp_path / "draft2") / "config.json").read_text())
    assert draft2["rope_scaling"] == own


def test_multi_layer_families_export_every_layer_and_refuse_maps_and_mtp_layer(
    runner: CliRunner, tmp_path: Path
) -> None:
    src = write_synthetic(tmp_path / "src", "mimo_v2", MIMO_V2, num_mtp_layers=3)
    maps = tmp_path / "maps"
    maps.mkdir()
    out = tmp_path / "draft"
    r = runner.invoke(app, ["export", str(src), "--out", str(out), "--token-maps", str(maps)])
    assert_one_line_error(r, "mimo_v2 checkpoint", "multi-layer EAGLE", "without --token-maps")
    nothing_written(out)
    r = runner.invoke(app, ["export", str(src), "--out", str(out), "--mtp-layer", "1"])
    assert_one_line_error(r, "--mtp-layer does not apply to mimo_v2", "drop --mtp-layer")
    nothing_written(out)
    manifest = json.loads((export_cli(src, out) / "fastmtp.json").read_text())
    layers = {n.split(".")[3] for n in manifest["tensors"]}
    assert layers == {"0", "1", "2"}
    flags = manifest["sglang"]["recommended_flags"]
    assert flags[flags.index("--speculative-num-steps") + 1] == "3"


def test_multi_layer_chain_is_capped_at_the_layers_exported(tmp_path: Path) -> None:
    src = write_synthetic(
        tmp_path / "src", "mimo_v2", {**MIMO_V2, "num_nextn_predict_layers": 2}, num_mtp_layers=2
    )
    flags = json.loads((export_cli(src, tmp_path / "d") / "fastmtp.json").read_text())["sglang"][
        "recommended_flags"
    ]
    assert flags[flags.index("--speculative-num-steps") + 1] == "2"
    assert flags[flags.index("--speculative-num-draft-tokens") + 1] == "3"


def test_a_tied_qwen3_5_draft_is_untied_and_inspect_flags_a_tied_one(tmp_path: Path) -> None:
    src = write_synthetic(tmp_path / "src", "qwen3_5", qwen3_5(moe=False, tied=True))
    out = export_cli(src, tmp_path / "draft")
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert config["text_config"]["tie_word_embeddings"] is False
    changes = json.loads((out / "fastmtp.json").read_text())["config_changes"]["set"]
    assert changes == {"text_config.tie_word_embeddings": False, "tie_word_embeddings": False}
    config["text_config"]["tie_word_embeddings"] = True
    (out / "config.json").write_text(json.dumps(config))
    problems = inspect_artifact(out, check_hashes=False).problems
    assert any("tie_word_embeddings" in p for p in problems), problems


def test_inspect_flags_a_nextn_draft_that_mixes_layouts(tmp_path: Path) -> None:
    """SGLang loads *nothing* from such a draft, silently (test_sglang_contract.py)."""
    out = export_cli(
        write_synthetic(tmp_path / "src", "glm4_moe", _CONFIGS["glm4_moe"]), tmp_path / "d"
    )
    config = json.loads((out / "config.json").read_text())
    config["num_hidden_layers"] = 2
    (out / "config.json").write_text(json.dumps(config))
    problems = inspect_artifact(out, check_hashes=False).problems
    assert any("num_hidden_layers is 2, must be 1" in p for p in problems), problems


def test_export_of_each_family_is_byte_identical_across_runs(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == "qwen3_5-moe-fused")
    src = _source(tmp_path, case)
    a = tree_digest(export_cli(src, tmp_path / "a"))
    b = tree_digest(export_cli(src, tmp_path / "b"))
    assert {k: v for k, v in a.items() if k not in ("fastmtp.json", "README.md")} == {
        k: v for k, v in b.items() if k not in ("fastmtp.json", "README.md")
    }


# --- trainer checkpoints ---------------------------------------------------------------


def _draft_tensors(draft: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(draft.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.mark.parametrize(
    ("family", "config", "text"),
    [
        ("qwen3_next", QWEN3_NEXT, QWEN3_NEXT),
        ("qwen3_5", qwen3_5(moe=True), qwen3_5(moe=True)["text_config"]),
        ("qwen3_5", qwen3_5(moe=False), qwen3_5(moe=False)["text_config"]),
    ],
    ids=["qwen3_next", "qwen3_5-moe", "qwen3_5-dense"],
)
def test_a_speculators_checkpoint_exports_the_release_head(
    family: str, config: dict[str, Any], text: dict[str, Any], tmp_path: Path
) -> None:
    """speculators' names and fused experts are read as the release's: the draft holds
    the same tensors, byte for byte, as an export of the release it was trained from."""
    release = write_synthetic(tmp_path / "release", family, config)
    trained = write_speculators(tmp_path / "spec", release, text)
    before = tree_digest(trained)
    want = _draft_tensors(export_cli(release, tmp_path / "from-release"))
    out = export_cli(trained, tmp_path / "from-speculators", "--dtype", "fp32")
    got = _draft_tensors(out)
    assert got.keys() == want.keys()
    for name, t in want.items():
        assert torch.equal(got[name], t.float()), name
    manifest = json.loads((out / "fastmtp.json").read_text())
    assert manifest["source"]["trainer"] == "speculators"
    assert manifest["family"] == family
    assert inspect_artifact(out, check_hashes=True).problems == []
    assert tree_digest(trained) == before


def test_a_speculators_checkpoint_for_a_model_without_an_sglang_mtp_class_is_refused(
    runner: CliRunner, tmp_path: Path
) -> None:
    release = write_synthetic(tmp_path / "release", "qwen3_next", QWEN3_NEXT)
    trained = write_speculators(tmp_path / "spec", release, {**QWEN3_NEXT, "model_type": "qwen3"})
    r = runner.invoke(app, ["export", str(trained), "--out", str(tmp_path / "d")])
    assert_one_line_error(r, "speculators MTP checkpoint for qwen3", "no SGLang MTP draft class")
    nothing_written(tmp_path / "d")


def test_a_specforge_checkpoint_needs_and_uses_the_base_config(
    runner: CliRunner, tmp_path: Path
) -> None:
    release = write_synthetic(tmp_path / "release", "qwen3_5", qwen3_5(moe=False))
    trained = write_specforge(tmp_path / "specforge", release)
    out = tmp_path / "d"
    r = runner.invoke(app, ["export", str(trained), "--out", str(out)])
    assert_one_line_error(r, "SpecForge MTP checkpoint", "--base-config BASE/config.json")
    nothing_written(out)
    r = runner.invoke(
        app,
        [
            "export",
            str(trained),
            "--out",
            str(out),
            "--base-config",
            str(_qwen3_next_config(tmp_path)),
        ],
    )
    assert_one_line_error(r, "--base-config is Qwen3NextForCausalLM", "Qwen3.5")
    nothing_written(out)
    export_cli(trained, out, "--base-config", str(release / "config.json"))
    want = tree_digest(export_cli(release, tmp_path / "from-release"))
    got = tree_digest(out)
    # the same draft as the release's export; only provenance differs
    assert {k: v for k, v in got.items() if k not in ("fastmtp.json", "README.md")} == {
        k: v for k, v in want.items() if k not in ("fastmtp.json", "README.md")
    }


def _qwen3_next_config(tmp_path: Path) -> Path:
    path = tmp_path / "qwen3_next.json"
    path.write_text(json.dumps(QWEN3_NEXT))
    return path


def test_base_config_on_a_release_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    release = write_synthetic(tmp_path / "release", "qwen3_next", QWEN3_NEXT)
    out = tmp_path / "d"
    r = runner.invoke(
        app,
        [
            "export",
            str(release),
            "--out",
            str(out),
            "--base-config",
            str(_qwen3_next_config(tmp_path)),
        ],
    )
    assert_one_line_error(r, "--base-config applies to trainer checkpoints", "drop --base-config")
    nothing_written(out)


def test_an_unknown_architecture_without_mtp_tensors_names_the_supported_families(
    runner: CliRunner, tmp_path: Path
) -> None:
    """Detection by tensor names skips layouts the config cannot number (no
    ``num_hidden_layers`` here) instead of failing on them."""
    src = write_synthetic(tmp_path / "src", "longcat_flash", _CONFIGS["longcat_flash"])
    config = json.loads((src / "config.json").read_text())
    config["architectures"] = ["SomethingElse"]
    (src / "config.json").write_text(json.dumps(config))
    index = json.loads((src / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if ".mtp." not in k}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    r = runner.invoke(app, ["export", str(src), "--out", str(tmp_path / "d")])
    assert_one_line_error(r, "is SomethingElse with no MTP tensors of a supported family")
    nothing_written(tmp_path / "d")
