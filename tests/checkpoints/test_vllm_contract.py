"""Every family's export, loaded by vLLM 0.34.0's own MTP draft class as its runner does.

For each family vLLM has an MTP class for, the tiny release checkpoint of the SGLang
contract test (tests/checkpoints/families.py) is exported; one subprocess with the vLLM
lane's interpreter then builds each draft beside its base model's config
(tests/vllm_lane/load_draft.py: ``EngineArgs(speculative_config={"method": "mtp"})``,
vLLM's ``load_eagle_model`` with its ``DefaultModelLoader``, every parameter NaN first,
then leave-one-out per tensor). A draft passes when vLLM resolves the contract's
``vllm_class``, uses every exported tensor, and leaves no parameter unfilled once the
target's embedding and head are shared. The NextN families' default (SGLang) layout
must fail there, which is why ``export --for vllm`` exists; that layout must still load
in SGLang. The last tests show the check fails on the mistakes it exists to catch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file, save_file

from fastmtp_export.artifact.export import export_draft
from fastmtp_export.artifact.inspect import inspect_artifact
from fastmtp_export.checkpoints.readers import READERS
from fastmtp_export.checkpoints.synthetic import write_synthetic

from ..vllm_lane import LOAD_DRAFT, vllm_env, vllm_import_problem, vllm_python
from .families import CASES, FamilyCase
from .test_sglang_contract import _load as sglang_load

#: families whose SGLang draft renames the NextN layer to 0: vLLM needs ``--for vllm``
NEXTN = ("deepseek_v3", "glm4_moe")
#: vLLM's MiMoV2MTP builds one MTP layer (``_MIMO_V2_FLASH_NUM_MTP_LAYERS``) and skips the
#: others' tensors; it drafts every step with layer 0
FIRST_LAYER_ONLY = ("mimo_v2",)
#: MiMo-V2's prefix in a MiMo draft, on a projection vLLM's strict check exempts (a
#: misnamed half of a stacked one, gate_proj, it does refuse)
MISNAMED = "model.mtp.layers.0.self_attn.o_proj.weight"


def _vllm_load(pairs: list[tuple[Path, Path]]) -> list[dict[str, Any]]:
    problem = vllm_import_problem()
    if problem is not None:
        pytest.fail(f"vLLM 0.34.0 is needed for the vLLM draft contract: {problem}")
    r = subprocess.run(
        [str(vllm_python()), str(LOAD_DRAFT), *(f"{t}={d}" for t, d in pairs)],
        env=vllm_env(), capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    docs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(docs) == len(pairs), (r.stdout[-2000:], r.stderr[-3000:])
    return docs


def _target(src: Path, family: str, out: Path) -> Path:
    """The base model as vLLM reads its config here: the release's config without remote
    code (MiMo's ``auto_map`` needs modeling files a tiny release has not got). vLLM never
    builds the target in the lane; its config sizes most MTP classes."""
    config = json.loads((src / "config.json").read_text())
    target = {**READERS[family].target_config(config), "architectures": config["architectures"]}
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(target))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """id -> (target, draft): each case's default export, the NextN families' ``--for
    vllm`` exports (``ID+vllm``), and a broken draft."""
    root = tmp_path_factory.mktemp("vllm")
    out: dict[str, tuple[Path, Path]] = {}
    for case in CASES:
        src = write_synthetic(
            root / case.id / "src", case.family, case.config,
            num_mtp_layers=case.mtp_layers, contract=case.contract,
        )  # fmt: skip
        target = _target(src, case.family, root / case.id / "target")
        out[case.id] = (target, export_draft(src, root / case.id / "draft", progress=False).out)
        if case.family in NEXTN:
            vllm = export_draft(src, root / case.id / "vllm", progress=False, engine="vllm")
            out[f"{case.id}+vllm"] = (target, vllm.out)
    # a tensor under another family's prefix: vLLM's MiMoMTP skips it without a word
    target, draft = out["mimo"]
    misnamed = root / "broken-misnamed"
    shutil.copytree(draft, misnamed)
    weights = load_file(misnamed / "model.safetensors")
    weights[MISNAMED] = weights.pop("model.mtp_layers.0.self_attn.o_proj.weight")
    save_file(weights, misnamed / "model.safetensors", metadata={"format": "pt"})
    out["broken-misnamed"] = (target, misnamed)
    return out


@pytest.fixture(scope="module")
def loaded(exported: dict[str, tuple[Path, Path]]) -> dict[str, dict[str, Any]]:
    return dict(zip(exported, _vllm_load(list(exported.values())), strict=True))


SERVED = [c for c in CASES if c.family not in NEXTN] + [c for c in CASES if c.family in NEXTN]


def _key(case: FamilyCase) -> str:
    return f"{case.id}+vllm" if case.family in NEXTN else case.id


def _expected_shared(case: FamilyCase) -> list[str]:
    """The parameters vLLM's ``load_eagle_model`` replaces with the target's."""
    shared = {"lm_head.weight", "model.embed_tokens.weight"} & set(case.from_target)
    if case.family == "step3p5":  # its own head is exported (SGLang's class needs it)
        shared = {"model.embed_tokens.weight"}
    if case.family in NEXTN:  # each MTP layer's own head is the target's too
        shared.add(f"model.layers.{case.config['num_hidden_layers']}.shared_head.head.weight")
    return sorted(shared)


@pytest.mark.parametrize("case", SERVED, ids=_key)
def test_vllm_loads_every_tensor_of_the_export(
    case: FamilyCase,
    loaded: dict[str, dict[str, Any]],
    exported: dict[str, tuple[Path, Path]],
) -> None:
    doc = loaded[_key(case)]
    assert "error" not in doc, doc.get("error")
    report = inspect_artifact(exported[_key(case)][1])
    assert report.ok, report.problems
    assert doc["class"] == report.engines["vllm"]
    assert doc["unfilled"] == [], "parameters vLLM left unloaded"
    assert doc["shared_from_target"] == _expected_shared(case)
    ignored = doc["ignored_or_partial"]
    if case.family in FIRST_LAYER_ONLY:
        assert ignored
        assert all(not n.startswith("model.mtp.layers.0.") for n in ignored)
        assert all(n.startswith("model.mtp.layers.") for n in ignored)
    else:
        assert ignored == [], "vLLM ignored exported tensors"


@pytest.mark.parametrize("case", [c for c in CASES if c.family in NEXTN], ids=lambda c: c.id)
def test_vllm_refuses_the_sglang_layout_of_a_nextn_draft(
    case: FamilyCase,
    loaded: dict[str, dict[str, Any]],
    exported: dict[str, tuple[Path, Path]],
) -> None:
    """Why ``--for vllm`` exists, and why ``inspect`` does not list vLLM for this layout:
    DeepSeekMTP reads the layer at the target's ``num_hidden_layers`` (vLLM's strict
    loader then refuses the draft), and ``Glm4MoeForCausalLMNextN`` is no vLLM class."""
    error = loaded[case.id].get("error", "")
    if case.family == "deepseek_v3":
        assert "were not initialized from checkpoint" in error
    else:
        assert "Glm4MoeForCausalLMNextN" in error
        assert "not supported" in error
    assert "vllm" not in inspect_artifact(exported[case.id][1]).engines


def test_the_vllm_layout_of_a_nextn_draft_loads_in_sglang_too(
    exported: dict[str, tuple[Path, Path]],
) -> None:
    """One ``--for vllm`` directory serves both engines: SGLang's NextN classes read the
    layer at ``num_hidden_layers`` when that is not 1, and bind the reduced head."""
    keys = [k for k in exported if k.endswith("+vllm")]
    docs = sglang_load([str(exported[k][1]) for k in keys])
    for key, doc in zip(keys, docs, strict=True):
        assert "error" not in doc, (key, doc.get("error"))
        assert doc["class"] == inspect_artifact(exported[key][1]).engines["sglang"], key
        assert doc["ignored_or_partial"] == [], key
        assert doc["unfilled"] == ["lm_head.weight", "model.embed_tokens.weight"], key
        assert doc["head_follows_target"] is True, key


def test_a_misnamed_tensor_is_reported_ignored_and_its_parameter_unfilled(
    loaded: dict[str, dict[str, Any]],
) -> None:
    """vLLM's own strict check passes this draft (every linear layer is exempt from it in
    an unquantized model), which would serve o_proj uninitialised; the lane's NaN and
    leave-one-out checks do not pass it."""
    doc = loaded["broken-misnamed"]
    assert "error" not in doc, doc.get("error")
    assert doc["ignored_or_partial"] == [MISNAMED]
    assert [u for u in doc["unfilled"] if u.endswith("self_attn.o_proj.weight")]
