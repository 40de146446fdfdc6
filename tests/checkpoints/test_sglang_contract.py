"""Every family's export, loaded by SGLang 0.5.23's own draft class and ``load_weights``.

For each family a tiny checkpoint in its release layout (tests/checkpoints/families.py)
is exported by ``fastmtp-export``; one subprocess in the lane environment then builds
each draft as SGLang's model runner would (``ModelConfig(is_draft_model=True)``, the
class SGLang picks, world size 1 on CPU) and reports, through
tests/sglang_lane/load_draft.py, the tensors SGLang ignored and the parameters it left
unfilled. A draft passes when SGLang picks the contract's class, uses every exported
tensor, fills every parameter except the embedding and head it takes from the target,
and (for families served with a token map) binds the reduced head it is handed. The
last tests show that the check fails on the mistakes it exists to catch.

A kept block-FP8 head (DeepSeek-V3 as released) is loaded the same way by
tests/checkpoints/load_fp8_draft.py, with the Fp8Config SGLang derives from the draft's
``quantization_config`` instead of none.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from fastmtp_export.artifact.export import export_draft
from fastmtp_export.checkpoints.readers import READERS
from fastmtp_export.checkpoints.readers.deepseek_v3 import DEEPSEEK_V3_CONTRACT
from fastmtp_export.checkpoints.synthetic import write_synthetic

from ..sglang_lane.server import lane_env, sglang_import_problem
from .families import (
    CASES,
    DEEPSEEK_V3,
    DEEPSEEK_V3_FP8,
    FP8_BLOCK,
    QWEN3_NEXT,
    FamilyCase,
    qwen3_5,
)
from .trainer_checkpoints import write_speculators

LOAD_DRAFT = Path(__file__).parents[1] / "sglang_lane" / "load_draft.py"
MISNAMED = "model.mtp.layers.0.mlp.gate_proj.weight"  # MiMo-V2's prefix in a MiMo draft


def _load(drafts: list[str], script: Path = LOAD_DRAFT) -> list[dict[str, Any]]:
    problem = sglang_import_problem()
    if problem is not None:
        pytest.fail(f"SGLang 0.5.23 is needed for the draft contract: {problem}")
    r = subprocess.run(
        [sys.executable, str(script), *drafts], env=lane_env(), capture_output=True,
        text=True, check=False, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    docs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(docs) == len(drafts), r.stdout[-3000:]
    return docs


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each case's export, and three broken drafts, as SGLang loads them."""
    root = tmp_path_factory.mktemp("families")
    args: dict[str, str] = {}
    for case in CASES:
        src = write_synthetic(
            root / case.id / "src", case.family, case.config,
            num_mtp_layers=case.mtp_layers, contract=case.contract,
        )  # fmt: skip
        draft = export_draft(src, root / case.id / "draft", progress=False).out
        args[case.id] = f"{draft}:{case.steps}" if case.steps else str(draft)
    # trainer checkpoints: speculators' names and fused experts, read as the release
    for family, config, text in (
        ("qwen3_next", QWEN3_NEXT, QWEN3_NEXT),
        ("qwen3_5", qwen3_5(moe=True), qwen3_5(moe=True)["text_config"]),
    ):
        release = write_synthetic(root / f"spec-{family}" / "release", family, config)
        trained = write_speculators(root / f"spec-{family}" / "trained", release, text)
        draft = export_draft(trained, root / f"spec-{family}" / "draft", progress=False).out
        args[f"speculators-{family}"] = str(draft)
    # a tensor under another family's prefix: SGLang's MiMoMTP skips it without a word
    misnamed = _copy_draft(root / "mimo" / "draft", root / "broken-misnamed")
    weights = load_file(misnamed / "model.safetensors")
    weights[MISNAMED] = weights.pop("model.mtp_layers.0.mlp.gate_proj.weight")
    save_file(weights, misnamed / "model.safetensors", metadata={"format": "pt"})
    args["broken-misnamed"] = str(misnamed)
    # a NextN draft that keeps num_hidden_layers but renames its layer: loads nothing
    mixed = _copy_draft(root / "deepseek_v3" / "draft", root / "broken-mixed-layout")
    config = json.loads((mixed / "config.json").read_text())
    config["num_hidden_layers"] = DEEPSEEK_V3["num_hidden_layers"]
    (mixed / "config.json").write_text(json.dumps(config))
    args["broken-mixed-layout"] = str(mixed)
    # multi-layer EAGLE with more draft steps than exported MTP layers
    args["broken-too-few-layers"] = f"{root / 'mimo_v2' / 'draft'}:4"
    return dict(zip(args, _load(list(args.values())), strict=True))


def _copy_draft(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _expected_unfilled(case: FamilyCase) -> list[str]:
    if case.steps is None:
        return sorted(case.from_target)
    return [f"step {i}: {p}" for i in range(case.steps) for p in sorted(case.from_target)]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sglang_loads_every_tensor_of_the_export(
    case: FamilyCase, loaded: dict[str, dict[str, Any]]
) -> None:
    doc = loaded[case.id]
    assert "error" not in doc, doc.get("error")
    reader = READERS[case.family]
    assert doc["class"] == reader.contract_for(case.config).sglang_class
    assert doc["ignored_or_partial"] == [], "SGLang ignored exported tensors"
    assert doc["unfilled"] == _expected_unfilled(case), "parameters SGLang left unloaded"


@pytest.mark.parametrize(
    "case", [c for c in CASES if READERS[c.family].NO_MAPS is None], ids=lambda c: c.id
)
def test_the_draft_head_is_the_reduced_head_sglang_hands_it(
    case: FamilyCase, loaded: dict[str, dict[str, Any]]
) -> None:
    """``init_lm_head`` passes ``head[hot_token_id]`` to ``set_embed_and_head``; the
    plugin swaps languages by rebinding ``model.lm_head.weight``. Both need the class to
    keep the head it is given (a tied Qwen3.5 head would not, untied by the export)."""
    assert loaded[case.id]["head_follows_target"] is True


@pytest.mark.parametrize("family", ["qwen3_next", "qwen3_5"])
def test_sglang_loads_a_speculators_fine_tune(
    family: str, loaded: dict[str, dict[str, Any]]
) -> None:
    doc = loaded[f"speculators-{family}"]
    assert "error" not in doc, doc.get("error")
    assert doc["class"] == READERS[family].contract.sglang_class
    assert doc["ignored_or_partial"] == []
    assert doc["unfilled"] == ["lm_head.weight", "model.embed_tokens.weight"]
    assert doc["head_follows_target"] is True


def test_a_misnamed_tensor_is_reported_ignored_and_its_parameter_unfilled(
    loaded: dict[str, dict[str, Any]],
) -> None:
    doc = loaded["broken-misnamed"]
    assert "error" not in doc, doc.get("error")
    assert [t["tensor"] for t in doc["ignored_or_partial"]] == [MISNAMED]
    assert "model.mtp_block.mlp.gate_up_proj.weight" in doc["unfilled"]


def test_a_nextn_draft_mixing_layouts_loads_nothing(loaded: dict[str, dict[str, Any]]) -> None:
    """Why the NextN readers rename the layer *and* set num_hidden_layers: 1 (and why
    ``inspect`` checks both)."""
    doc = loaded["broken-mixed-layout"]
    assert len(doc["ignored_or_partial"]) == doc["tensors"]


def test_more_draft_steps_than_mtp_layers_leaves_a_runner_unloaded(
    loaded: dict[str, dict[str, Any]],
) -> None:
    """Multi-layer EAGLE gives step 3 no weights at all, silently (hence every MTP layer
    is exported, and the launch command's step count comes from the layer count)."""
    step3 = [u for u in loaded["broken-too-few-layers"]["unfilled"] if u.startswith("step 3")]
    assert "step 3: model.eh_proj.weight" in step3


# --- block FP8 (DeepSeek-V3 as released), kept: SGLang's own Fp8Config ---------------

LOAD_FP8 = Path(__file__).with_name("load_fp8_draft.py")
#: parameters a block-FP8 DeepSeek draft leaves to SGLang: the target's embedding and
#: head, and the fp8 KV-cache scales its Fp8Config adds, which no DeepSeek checkpoint
#: holds (SGLang sets them to 1.0 when none is loaded)
FP8_UNFILLED = sorted(
    [
        "lm_head.weight",
        "model.embed_tokens.weight",
        *(f"model.decoder.self_attn.attn_{a}.{kv}_scale" for a in ("mha", "mqa") for kv in "kv"),
    ]
)


@pytest.fixture(scope="module")
def fp8_loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The FP8 release's kept export (and its bf16 export, to compare), and drafts the
    exporter refuses to write, as SGLang loads them with its Fp8Config."""
    root = tmp_path_factory.mktemp("fp8")
    src = write_synthetic(root / "src", "deepseek_v3", DEEPSEEK_V3_FP8, fp8_block=FP8_BLOCK)
    kept = export_draft(src, root / "kept", progress=False).out
    bf16 = export_draft(src, root / "bf16", dtype="bf16", progress=False).out
    args = {"kept": f"{kept}={bf16}"}
    # an fp8 eh_proj: SGLang's NextN layer builds it as a plain nn.Linear
    eh_proj = _copy_draft(kept, root / "broken-fp8-eh-proj")
    weights = load_file(eh_proj / "model.safetensors")
    name = "model.layers.0.eh_proj.weight"
    weights[name] = weights[name].to(torch.float8_e4m3fn)
    weights[name + "_scale_inv"] = torch.ones(2, 3)  # [192, 384] in 128x128 blocks
    save_file(weights, eh_proj / "model.safetensors", metadata={"format": "pt"})
    args["broken-fp8-eh-proj"] = str(eh_proj)
    # rows that are not whole blocks where SGLang fuses or merges them: written with the
    # exporter's check switched off
    unaligned = replace(DEEPSEEK_V3_CONTRACT, fp8_aligned=())
    for case, config in (
        ("broken-fp8-moe-rows", {**DEEPSEEK_V3_FP8, "moe_intermediate_size": 32}),
        ("broken-fp8-q-lora-rows", {**DEEPSEEK_V3_FP8, "q_lora_rank": 48}),
    ):
        release = write_synthetic(root / case / "src", "deepseek_v3", config, fp8_block=FP8_BLOCK)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(READERS["deepseek_v3"], "contract", unaligned)
            args[case] = str(export_draft(release, root / case / "draft", progress=False).out)
    return dict(zip(args, _load(list(args.values()), LOAD_FP8), strict=True))


def test_sglang_loads_the_kept_fp8_head_with_its_scales(
    fp8_loaded: dict[str, dict[str, Any]],
) -> None:
    doc = fp8_loaded["kept"]
    assert "error" not in doc, doc.get("error")
    assert (doc["class"], doc["quant_config"]) == ("DeepseekV3ForCausalLMNextN", "Fp8Config")
    assert doc["ignored_or_partial"] == [], "SGLang ignored exported tensors"
    assert doc["unfilled"] == FP8_UNFILLED, "parameters SGLang left unloaded"
    assert doc["head_follows_target"] is True


def test_sglang_builds_fp8_layers_for_exactly_the_exported_fp8_weights(
    fp8_loaded: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SGLang fuses q_a/kv_a, each expert's gate/up and the shared gate/up, so names
    differ; every element of its fp8 weights and block scales is one of ours (the
    leave-one-out above shows each of ours lands in one)."""
    doc = fp8_loaded["kept"]
    params = doc["fp8_params"]
    draft = Path(doc["draft"])
    ours = load_file(draft / "model.safetensors")

    def numel(shape: list[int]) -> int:
        return int(torch.Size(shape).numel())

    fp8 = {n: t for n, t in ours.items() if t.dtype == torch.float8_e4m3fn}
    scales = {n: t for n, t in ours.items() if n.endswith("_scale_inv")}
    assert scales.keys() == {n + "_scale_inv" for n in fp8}
    theirs_fp8 = [s for n, (s, d) in params.items() if d == "float8_e4m3fn"]
    theirs_scales = [s for n, (s, d) in params.items() if n.endswith("weight_scale_inv")]
    assert all(d == "float32" for n, (_, d) in params.items() if n.endswith("weight_scale_inv"))
    assert sum(map(numel, theirs_fp8)) == sum(t.numel() for t in fp8.values())
    assert sum(map(numel, theirs_scales)) == sum(t.numel() for t in scales.values())
    assert len(theirs_fp8) == len(theirs_scales) == 8  # 4 attention, 2 experts, 2 shared


def test_sglang_dequantizes_the_kept_head_to_the_bf16_export(
    fp8_loaded: dict[str, dict[str, Any]],
) -> None:
    """SGLang's block_quant_dequant of each kept fp8 weight equals, bit for bit, the
    same tensor of the --dtype bf16 export."""
    doc = fp8_loaded["kept"]
    assert doc["dequant_checked"] == 20
    assert doc["dequant_mismatches"] == []


def test_an_fp8_weight_sglang_builds_unquantized_loses_its_scale(
    fp8_loaded: dict[str, dict[str, Any]],
) -> None:
    """Why --dtype keep refuses an fp8 eh_proj: SGLang copies the fp8 values into its
    plain eh_proj and skips the scale without a word."""
    doc = fp8_loaded["broken-fp8-eh-proj"]
    assert "error" not in doc, doc.get("error")
    assert [t["tensor"] for t in doc["ignored_or_partial"]] == [
        "model.layers.0.eh_proj.weight_scale_inv"
    ]


@pytest.mark.parametrize(
    ("case", "refusal"),
    [
        (
            "broken-fp8-moe-rows",
            "ValueError: The output_size of gate's and up's weight = 32 is not divisible by "
            "weight quantization block_n = 128.",
        ),
        (
            "broken-fp8-q-lora-rows",
            "AssertionError: param.shape=torch.Size([1, 2]) param.dtype=torch.float32 "
            "loaded_weight.shape=torch.Size([2, 2])",
        ),
    ],
)
def test_sglang_fails_on_fp8_rows_that_are_not_whole_blocks(
    case: str, refusal: str, fp8_loaded: dict[str, dict[str, Any]]
) -> None:
    """What the exporter's keep check (fp8_aligned: MI, SI, QL) prevents."""
    assert refusal in fp8_loaded[case].get("error", ""), fp8_loaded[case]


def test_sglang_fp8_layers_post_load_on_this_machine(
    fp8_loaded: dict[str, dict[str, Any]],
) -> None:
    """The loader's next step converts the fp8 layers for the CPU kernels: SGLang 0.5.23
    asserts ``cpu_has_amx_support()``, i.e. an AMX CPU *and* sgl_kernel's CPU build
    (``convert_weight_packed``); the CUDA wheel the lane installs has no CPU ops, so on
    this lane it fails there, after every weight is loaded (docs/format.md)."""
    after = fp8_loaded["kept"]["after_loading"]
    if after != {"ok": True}:
        assert all("on CPU requires that CPU has AMX support" in e for e in after["errors"])
