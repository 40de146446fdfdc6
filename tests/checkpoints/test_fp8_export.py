"""Exporting a block-FP8 release (DeepSeek-V3/R1 as released): dequantized or kept.

The sources are the synthetic releases of tests/checkpoints/families.py, quantized by
the synthetic writer's own block quantizer (DeepSeek's ``weight_quant``); the expected
values come from test_fp8.py's transcription of DeepSeek's ``weight_dequant`` kernel,
over the source tensors read with safetensors directly. SGLang's view of the kept FP8
draft is tests/checkpoints/test_sglang_contract.py's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from fastmtp_export.artifact.inspect import inspect_artifact
from fastmtp_export.checkpoints.checkpoint import SourceCheckpoint
from fastmtp_export.checkpoints.readers import READERS
from fastmtp_export.checkpoints.synthetic import write_synthetic
from fastmtp_export.cli import app
from fastmtp_export.errors import SourceError

from ..conftest import (
    assert_one_line_error,
    export_cli,
    nothing_written,
    source_tensors,
    tree_digest,
)
from .families import DEEPSEEK_V3, DEEPSEEK_V3_FP8, FP8_BLOCK, QWEN3_NEXT
from .test_fp8 import _kernel_reference

_L = "model.layers.2."  # the NextN layer of the tiny DeepSeek (num_hidden_layers 2)
#: the DeepSeek-V3 release's fp8 tensors in the NextN layer, written out by hand: every
#: attention and expert projection; eh_proj, the router and the norms stay bf16
FP8_NAMES = sorted(
    [
        f"self_attn.{p}.weight"
        for p in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")
    ]
    + [
        f"mlp.experts.{e}.{p}.weight"
        for e in range(4)
        for p in ("gate_proj", "up_proj", "down_proj")
    ]
    + [f"mlp.shared_experts.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")]
)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _release(tmp_path: Path, config: dict[str, Any] = DEEPSEEK_V3_FP8, **kw: Any) -> Path:
    return write_synthetic(tmp_path / "src", "deepseek_v3", config, fp8_block=FP8_BLOCK, **kw)


def _draft(out: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(f))
    return tensors


def _rewrite(src: Path, edit: Any) -> None:
    """Apply ``edit(tensors, weight_map, shard)`` to every shard, then save shards and index."""
    index_path = src / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    for shard in sorted(set(index["weight_map"].values())):
        tensors = load_file(src / shard)
        edit(tensors, index["weight_map"], shard)
        save_file(tensors, src / shard, metadata={"format": "pt"})
    index_path.write_text(json.dumps(index))


def test_the_release_fixture_is_fp8_where_deepseek_is() -> None:
    """The synthetic writer's choice of fp8 tensors is the release's, as listed above."""
    from fastmtp_export.checkpoints.synthetic import family_tensor_shapes, fp8_release_weights

    shapes, mtp = family_tensor_shapes("deepseek_v3", DEEPSEEK_V3_FP8)
    assert sorted(fp8_release_weights(shapes, mtp)) == [_L + n for n in FP8_NAMES]


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
def test_dequantizing_export_is_deepseeks_weight_dequant(
    dtype: str, runner: CliRunner, tmp_path: Path
) -> None:
    src = _release(tmp_path)
    before = tree_digest(src)
    out = export_cli(src, tmp_path / "draft", "--dtype", dtype)
    want = _DTYPES[dtype]
    source = source_tensors(src, lambda n: n.startswith(_L))
    got = _draft(out)
    assert not any(n.endswith("_scale_inv") for n in got)  # consumed, not exported
    fp8 = {n for n, t in source.items() if t.dtype == torch.float8_e4m3fn}
    assert sorted(fp8) == [_L + n for n in FP8_NAMES]
    for name, t in got.items():
        src_name = _L + name.removeprefix("model.layers.0.")
        if src_name in fp8:
            scale = source[src_name + "_scale_inv"]
            ref = _kernel_reference(source[src_name], scale, FP8_BLOCK, want)
        else:
            ref = source[src_name].to(want)
        assert t.dtype == want, name
        assert torch.equal(t.view(torch.uint8), ref.view(torch.uint8)), name
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    manifest = json.loads((out / "fastmtp.json").read_text())
    assert "quantization_config" in manifest["config_changes"]["removed"]
    assert manifest["dtype"] == {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[dtype]
    assert manifest["source"]["dtypes"] == ["BF16", "F8_E4M3"]
    assert inspect_artifact(out).problems == []
    assert tree_digest(src) == before


def test_the_dequantized_head_is_the_model_it_was_quantized_from(tmp_path: Path) -> None:
    """Against the bf16 synthetic release with the same values: within fp8's precision."""
    fp8 = _draft(export_cli(_release(tmp_path), tmp_path / "fp8", "--dtype", "fp32"))
    plain_src = write_synthetic(tmp_path / "plain", "deepseek_v3", DEEPSEEK_V3_FP8)
    plain = _draft(export_cli(plain_src, tmp_path / "plain-draft", "--dtype", "fp32"))
    assert fp8.keys() == plain.keys()
    for name, t in plain.items():
        err = (fp8[name] - t).abs().max() / t.abs().max()
        assert err <= (2**-4 if name.removeprefix("model.layers.0.") in FP8_NAMES else 0), name


def test_keep_copies_the_fp8_head_with_its_scales_and_config(tmp_path: Path) -> None:
    src = _release(tmp_path)
    out = export_cli(src, tmp_path / "draft")  # --dtype keep is the default
    source = source_tensors(src, lambda n: n.startswith(_L))
    got = _draft(out)
    scales = sorted(n for n in got if n.endswith("_scale_inv"))
    assert scales == [f"model.layers.0.{n}_scale_inv" for n in FP8_NAMES]
    for name, t in got.items():
        ref = source[_L + name.removeprefix("model.layers.0.")]
        assert t.dtype == ref.dtype
        assert torch.equal(t.view(torch.uint8), ref.view(torch.uint8))
    assert got["model.layers.0.eh_proj.weight"].dtype == torch.bfloat16
    assert got["model.layers.0.mlp.gate.weight"].dtype == torch.bfloat16
    config = json.loads((out / "config.json").read_text())
    release = json.loads((src / "config.json").read_text())
    assert config["quantization_config"] == release["quantization_config"]
    manifest = json.loads((out / "fastmtp.json").read_text())
    assert manifest["dtype"] == "mixed"
    assert "quantization_config" not in manifest["config_changes"]["removed"]
    assert inspect_artifact(out).problems == []
    # sharded: scales and weights may land in different files
    sharded = export_cli(src, tmp_path / "sharded", "--max-shard-size", "40000")
    assert len(list(sharded.glob("*.safetensors"))) > 1
    assert inspect_artifact(sharded).problems == []


def test_inspect_flags_fp8_tensors_and_config_that_disagree(tmp_path: Path) -> None:
    kept = export_cli(_release(tmp_path), tmp_path / "kept")
    config = json.loads((kept / "config.json").read_text())
    quant = config.pop("quantization_config")
    (kept / "config.json").write_text(json.dumps(config))
    problems = " ".join(inspect_artifact(kept, check_hashes=False).problems)
    assert "is F8_E4M3 but config.json has no block-FP8 quantization_config" in problems
    plain = export_cli(_release(tmp_path / "b"), tmp_path / "plain", "--dtype", "bf16")
    config = json.loads((plain / "config.json").read_text())
    (plain / "config.json").write_text(json.dumps({**config, "quantization_config": quant}))
    problems = " ".join(inspect_artifact(plain, check_hashes=False).problems)
    assert "block-FP8 quantization_config but no tensor is fp8" in problems


def _drop_scale(tensors: dict, weight_map: dict, shard: str) -> None:
    weight_map.pop(_L + "self_attn.o_proj.weight_scale_inv", None)
    tensors.pop(_L + "self_attn.o_proj.weight_scale_inv", None)


def _transpose_scale(tensors: dict, weight_map: dict, shard: str) -> None:
    name = _L + "self_attn.o_proj.weight_scale_inv"  # o_proj [192, 64]: scale [2, 1]
    if name in tensors:
        tensors[name] = tensors[name].T.contiguous()


def _per_tensor_scales(tensors: dict, weight_map: dict, shard: str) -> None:
    """GLM-4.5-FP8 / compressed-tensors style: one ``weight_scale`` per weight."""
    for name in [n for n in tensors if n.endswith("weight_scale_inv")]:
        new = name.removesuffix("_inv")
        tensors[new] = tensors.pop(name).amax().reshape(1)
        weight_map[new] = weight_map.pop(name)


def _int4(tensors: dict, weight_map: dict, shard: str) -> None:
    """A GPTQ/AWQ int4 layout: packed ``qweight`` and group ``scales``."""
    name = _L + "self_attn.o_proj.weight"
    if name in tensors:
        w = tensors.pop(name)
        tensors[name.replace(".weight", ".qweight")] = torch.zeros(64 // 8, 192, dtype=torch.int32)
        tensors[name.replace(".weight", ".scales")] = torch.ones(1, 192, dtype=torch.float16)
        weight_map[name.replace(".weight", ".qweight")] = weight_map.pop(name)
        weight_map[name.replace(".weight", ".scales")] = shard
        del w


@pytest.mark.parametrize(
    ("edit", "config_edit", "needles"),
    [
        (
            _drop_scale, None,
            ("model.layers.2.self_attn.o_proj.weight in model-", "is F8_E4M3 but the checkpoint "
             "has no model.layers.2.self_attn.o_proj.weight_scale_inv", "re-download"),
        ),
        (
            _transpose_scale, None,
            ("o_proj.weight_scale_inv is F32[1, 2] but model.layers.2.self_attn.o_proj.weight "
             "[192, 64] in 128x128 blocks needs F32[2, 1]", "restore the release's files"),
        ),
        (
            _per_tensor_scales, None,
            ("is quantized (quantization_config.quant_method=fp8; quantization tensor "
             "model.layers.2.", "weight_scale)", "*_scale_inv layout", "bf16"),
        ),
        (
            _int4, {"quant_method": "awq", "bits": 4, "group_size": 128},
            ("quant_method=awq", "quantization tensor model.layers.2.self_attn.o_proj.qweight",
             "pass the unquantized (bf16) release"),
        ),
        (
            None, "drop",
            ("is FP8 (MTP tensors in F8_E4M3 with *_scale_inv) but its config.json has no "
             "quantization_config", 'restore the release config.json (quant_method "fp8"'),
        ),
        (
            None, {"quant_method": "fp8", "fmt": "e4m3"},  # no weight_block_size
            ("quant_method=fp8; no weight_block_size", "restore the release config.json"),
        ),
    ],
    ids=["missing-scale", "transposed-scale", "per-tensor-fp8", "int4", "no-config", "no-block"],
)  # fmt: skip
@pytest.mark.parametrize("dtype", ["keep", "bf16"])
def test_bad_quantized_sources_are_refused_in_one_line(
    edit: Any, config_edit: Any, needles: tuple[str, ...], dtype: str,
    runner: CliRunner, tmp_path: Path,
) -> None:  # fmt: skip
    src = _release(tmp_path)
    if edit is not None:
        _rewrite(src, edit)
    if config_edit is not None:
        config = json.loads((src / "config.json").read_text())
        if config_edit == "drop":
            del config["quantization_config"]
        else:
            config["quantization_config"] = config_edit
        (src / "config.json").write_text(json.dumps(config))
    out = tmp_path / "draft"
    r = runner.invoke(app, ["export", str(src), "--out", str(out), "--dtype", dtype])
    assert_one_line_error(r, *needles)
    nothing_written(out)


def test_keep_is_refused_where_sglang_cannot_build_the_fp8_layers(
    runner: CliRunner, tmp_path: Path
) -> None:
    """The tiny DeepSeek's q_lora_rank 48 and moe_intermediate_size 32 are not whole
    128-row blocks: SGLang's Fp8MoEMethod refuses to build the experts, and q_a_proj's
    scale rows do not line up in the fused projection (test_sglang_contract.py shows
    both); the dequantized export is fine."""
    src = _release(tmp_path, DEEPSEEK_V3)
    out = tmp_path / "draft"
    r = runner.invoke(app, ["export", str(src), "--out", str(out)])
    assert_one_line_error(
        r, "--dtype keep cannot ship the FP8 head", "DeepseekV3ForCausalLMNextN",
        "MI = 32 is not a multiple of the 128-row block", "QL = 48", "pass --dtype bf16",
    )  # fmt: skip
    nothing_written(out)
    assert inspect_artifact(export_cli(src, out, "--dtype", "bf16")).ok


def test_keep_is_refused_for_an_fp8_weight_sglang_builds_unquantized(
    runner: CliRunner, tmp_path: Path
) -> None:
    """SGLang's NextN eh_proj is a plain nn.Linear: it would load the fp8 values
    unscaled and skip the scale without a word (test_sglang_contract.py)."""
    src = _release(tmp_path)
    name = _L + "eh_proj.weight"

    def quantize_eh_proj(tensors: dict, weight_map: dict, shard: str) -> None:
        if name in tensors:
            w = tensors[name]
            tensors[name] = w.to(torch.float8_e4m3fn)
            tensors[name + "_scale_inv"] = torch.ones(2, 3)  # [192, 384] in 128x128 blocks
            weight_map[name + "_scale_inv"] = shard

    _rewrite(src, quantize_eh_proj)
    out = tmp_path / "draft"
    r = runner.invoke(app, ["export", str(src), "--out", str(out)])
    assert_one_line_error(
        r, "model.layers.0.eh_proj.weight is fp8 but SGLang's DeepseekV3ForCausalLMNextN "
        "builds it unquantized", "pass --dtype bf16",
    )  # fmt: skip
    nothing_written(out)
    got = _draft(export_cli(src, out, "--dtype", "bf16"))
    assert torch.equal(got["model.layers.0.eh_proj.weight"].float(), source_tensors(
        src, lambda n: n == name)[name].float())  # fmt: skip


def test_keep_is_refused_for_a_static_activation_scheme(runner: CliRunner, tmp_path: Path) -> None:
    src = _release(tmp_path)
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"]["activation_scheme"] = "static"
    (src / "config.json").write_text(json.dumps(config))
    out = tmp_path / "draft"
    r = runner.invoke(app, ["export", str(src), "--out", str(out)])
    assert_one_line_error(r, "activation_scheme is 'static'", "pass --dtype bf16")
    nothing_written(out)


def test_other_families_fp8_heads_dequantize_and_keep_is_refused(
    runner: CliRunner, tmp_path: Path
) -> None:
    """The same block format in a Qwen3-Next head (Qwen's FP8 releases use it): the
    dequantizing export is the family's; SGLang's Qwen3-Next MTP class is not checked
    with FP8 weights here, so keep is refused."""
    src = write_synthetic(tmp_path / "src", "qwen3_next", QWEN3_NEXT, fp8_block=FP8_BLOCK)
    source = source_tensors(src, lambda n: n.startswith("mtp."))
    fp8 = sorted(n for n, t in source.items() if t.dtype == torch.float8_e4m3fn)
    assert "mtp.layers.0.self_attn.q_proj.weight" in fp8
    assert "mtp.fc.weight" not in fp8
    assert "mtp.layers.0.mlp.gate.weight" not in fp8
    out = tmp_path / "draft"
    r = runner.invoke(app, ["export", str(src), "--out", str(out)])
    assert_one_line_error(
        r, "checked with FP8 weights (deepseek_v3), not qwen3_next", "--dtype bf16"
    )
    nothing_written(out)
    got = _draft(export_cli(src, out, "--dtype", "bf16"))
    for name in fp8:
        ref = _kernel_reference(
            source[name], source[name + "_scale_inv"], FP8_BLOCK, torch.bfloat16
        )
        assert torch.equal(got[name].view(torch.int16), ref.view(torch.int16)), name
    assert inspect_artifact(out).problems == []


def test_readers_other_than_the_exporter_get_plain_heads_only(tmp_path: Path) -> None:
    """eval and train read ``plan.tensors`` as weights: an fp8 head is refused there."""
    ckpt = SourceCheckpoint.open(_release(tmp_path))
    with pytest.raises(SourceError, match="this command reads bf16/fp16/fp32 heads"):
        READERS["deepseek_v3"].plan(ckpt, None)
    plan = READERS["deepseek_v3"].plan(ckpt, None, quantized=True)
    assert plan.quant is not None
    assert len(plan.quant.scales) == len(FP8_NAMES)
