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
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file, save_file

from fastmtp_export.artifact.export import export_draft
from fastmtp_export.checkpoints.readers import READERS
from fastmtp_export.checkpoints.synthetic import write_synthetic

from ..sglang_lane.server import lane_env, sglang_import_problem
from .families import CASES, DEEPSEEK_V3, QWEN3_NEXT, FamilyCase, qwen3_5
from .trainer_checkpoints import write_speculators

LOAD_DRAFT = Path(__file__).parents[1] / "sglang_lane" / "load_draft.py"
MISNAMED = "model.mtp.layers.0.mlp.gate_proj.weight"  # MiMo-V2's prefix in a MiMo draft


def _load(drafts: list[str]) -> list[dict[str, Any]]:
    problem = sglang_import_problem()
    if problem is not None:
        pytest.fail(f"SGLang 0.5.23 is needed for the draft contract: {problem}")
    r = subprocess.run(
        [sys.executable, str(LOAD_DRAFT), *drafts], env=lane_env(), capture_output=True,
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
