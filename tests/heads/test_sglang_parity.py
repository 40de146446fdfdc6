"""Each family's reference head against SGLang 0.5.23's own draft class, run on CPU.

For every family served with maps, a tiny draft (tests/checkpoints/families.py) is
exported; SGLang's class for it runs EAGLE's prefill draft-extend in-process
(tests/sglang_lane/draft_logits.py: SGLang's loader, ``set_embed_and_head``, the
``torch_native`` attention backend with real KV pools) on the same hidden states,
token ids, embedding and head as our reference (fastmtp_export/heads, and MiMo's
evaluate/reference.py). The draft logits and the hidden state fed to the next step
must agree within float32 rounding (:data:`ATOL`, :data:`RTOL`); a head wired in the
other concat order must not.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from fastmtp_export.artifact.export import export_draft
from fastmtp_export.checkpoints.synthetic import write_synthetic
from fastmtp_export.evaluate.reference import load_artifact_weights, reference_head
from fastmtp_export.heads.module import FamilyHead
from fastmtp_export.heads.registry import HEADS, has_head
from fastmtp_export.maps.eos import read_json

from ..checkpoints.families import CASES, FamilyCase
from ..sglang_lane.server import lane_env, sglang_import_problem

DRAFT_LOGITS = Path(__file__).parents[1] / "sglang_lane" / "draft_logits.py"
PARITY_CASES = [c for c in CASES if has_head(c.family) and c.mtp_layers == 1]
T, H, V = 11, 64, 256
#: float32 on both sides; SGLang fuses and orders some reductions differently (fused
#: q/k/v and gate/up projections, absorbed MLA, its own RMSNorm kernel)
ATOL, RTOL = 2e-4, 1e-4


@pytest.fixture(scope="module")
def parity(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case's draft, the shared inputs, and SGLang's outputs for each draft."""
    problem = sglang_import_problem()
    if problem is not None:
        pytest.fail(f"SGLang 0.5.23 is needed for the parity test: {problem}")
    root = tmp_path_factory.mktemp("parity")
    drafts = {}
    for case in PARITY_CASES:
        src = write_synthetic(
            root / case.id / "src", case.family, case.config, contract=case.contract
        )
        drafts[case.id] = export_draft(src, root / case.id / "draft", progress=False).out
    gen = torch.Generator().manual_seed(7)
    inputs = {
        "input_ids": torch.randint(0, V, (T,), generator=gen),  # [T]
        "positions": torch.arange(T),  # [T]
        "hidden": torch.randn(T, H, generator=gen),  # [T, H]
        "embed": torch.randn(V, H, generator=gen) * 0.5,  # [V, H]
        "lm_head": torch.randn(V, H, generator=gen) * 0.5,  # [V, H]
    }
    save_file(inputs, root / "in.safetensors")
    r = subprocess.run(
        [sys.executable, str(DRAFT_LOGITS), str(root / "in.safetensors"),
         str(root / "out.safetensors"), *map(str, drafts.values())],
        env=lane_env(), capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    out = load_file(root / "out.safetensors")
    docs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    sglang = {cid: (out[f"{i}.logits"], out[f"{i}.out"], docs[i]) for i, cid in enumerate(drafts)}
    return {"drafts": drafts, "inputs": inputs, "sglang": sglang}


def _ours(
    draft: Path, case: FamilyCase, inputs: dict[str, torch.Tensor], *, miswired: bool = False
) -> Any:
    config = read_json(draft / "config.json")
    weights = load_artifact_weights(draft)
    if miswired:
        spec = dataclasses.replace(HEADS[case.family](config), hidden_first=True)
        head: Any = FamilyHead(
            spec, weights, config, inputs["embed"], inputs["lm_head"], torch.float32
        )
    else:
        head = reference_head(
            case.family, weights, config, inputs["embed"], inputs["lm_head"], torch.float32
        )
    return head(inputs["hidden"], inputs["input_ids"], inputs["positions"])


@pytest.mark.parametrize("case", PARITY_CASES, ids=lambda c: c.id)
def test_reference_head_equals_sglangs_draft_class(
    case: FamilyCase, parity: dict[str, Any]
) -> None:
    logits, out = _ours(parity["drafts"][case.id], case, parity["inputs"])
    sg_logits, sg_out, doc = parity["sglang"][case.id]
    assert doc["class"] == READERS_CLASS[case.family]
    assert logits.shape == sg_logits.shape == (T, V)
    torch.testing.assert_close(out.float(), sg_out, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(logits, sg_logits, atol=ATOL, rtol=RTOL)
    assert sg_logits.abs().max() > 1.0  # not a vacuous comparison of near-zero logits


@pytest.mark.parametrize(
    "case", [c for c in PARITY_CASES if c.family in HEADS][:2], ids=lambda c: c.id
)
def test_a_miswired_head_fails_the_comparison(case: FamilyCase, parity: dict[str, Any]) -> None:
    """MiMo's ``[hidden, embed]`` order on a NextN family: the check must see it."""
    logits, _ = _ours(parity["drafts"][case.id], case, parity["inputs"], miswired=True)
    sg_logits = parity["sglang"][case.id][0]
    assert not torch.allclose(logits, sg_logits, atol=ATOL * 100, rtol=RTOL * 100)


def _classes() -> dict[str, str]:
    from fastmtp_export.checkpoints.readers import READERS

    return {f: r.contract.sglang_class for f, r in READERS.items()}


READERS_CLASS = _classes()
