"""Every family's PyTorch reference head (fastmtp_export/heads), on its own.

The heads are checked against SGLang's own draft classes in
tests/heads/test_sglang_parity.py; here: they take exactly the exported tensors, give
them back unchanged, and decode incrementally as they run over a whole sequence.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from fastmtp_export.artifact.export import export_draft
from fastmtp_export.checkpoints.synthetic import write_synthetic
from fastmtp_export.evaluate.reference import load_artifact_weights
from fastmtp_export.heads.module import FamilyHead
from fastmtp_export.heads.registry import HEADS, has_head
from fastmtp_export.maps.eos import read_json

from ..checkpoints.families import CASES, FamilyCase

FAMILY_CASES = [c for c in CASES if c.family in HEADS]


def test_every_family_served_with_maps_has_a_head() -> None:
    from fastmtp_export.checkpoints.readers import READERS

    with_maps = {f for f, r in READERS.items() if r.NO_MAPS is None}
    assert {f for f in with_maps if has_head(f)} == with_maps
    assert not has_head("mimo_v2")
    assert not has_head("step3p5")


def _draft(root: Path, case: FamilyCase) -> Path:
    src = write_synthetic(
        root / "src", case.family, case.config,
        num_mtp_layers=case.mtp_layers, contract=case.contract,
    )  # fmt: skip
    return export_draft(src, root / "draft", progress=False).out


def _head(draft: Path, case: FamilyCase, *, hidden_first: bool = False) -> FamilyHead:
    config = read_json(draft / "config.json")
    spec = HEADS[case.family](config)
    if hidden_first:
        spec = dataclasses.replace(spec, hidden_first=True)
    gen = torch.Generator().manual_seed(1)
    embed = torch.randn(256, 64, generator=gen)  # [V, H]
    lm_head = torch.randn(256, 64, generator=gen)  # [V, H]
    return FamilyHead(spec, load_artifact_weights(draft), config, embed, lm_head, torch.float32)


def _inputs(t: int = 9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(t, 64, generator=gen)  # [T, H]
    ids = torch.randint(0, 256, (t,), generator=gen)  # [T]
    return hidden, ids, torch.arange(t)


@pytest.mark.parametrize("case", FAMILY_CASES, ids=lambda c: c.id)
def test_the_head_holds_exactly_the_exported_tensors(case: FamilyCase, tmp_path: Path) -> None:
    draft = _draft(tmp_path, case)
    exported = load_artifact_weights(draft)
    back = _head(draft, case).weights()
    assert sorted(back) == sorted(exported)
    for name, t in exported.items():
        assert back[name].shape == t.shape, name
        assert torch.equal(back[name].to(t.dtype), t), name


@pytest.mark.parametrize("case", FAMILY_CASES, ids=lambda c: c.id)
def test_incremental_decoding_equals_the_whole_sequence(case: FamilyCase, tmp_path: Path) -> None:
    head = _head(_draft(tmp_path, case), case)
    hidden, ids, pos = _inputs()
    whole, _ = head(hidden, ids, pos)  # [T, V]
    cache = head.new_cache()
    parts = [head.trunk(hidden[:5], ids[:5], pos[:5], cache)]
    parts += [head.trunk(hidden[i : i + 1], ids[i : i + 1], pos[i : i + 1], cache) for i in (5, 6)]
    parts.append(head.trunk(hidden[7:], ids[7:], pos[7:], cache))  # a 2-token extend
    torch.testing.assert_close(head.logits(torch.cat(parts)).float(), whole, atol=1e-4, rtol=1e-4)
    # crop and save/restore: speculative steps leave no trace
    cache.crop(5)
    saved = cache.save()
    head.trunk(hidden[5:7], ids[5:7], pos[5:7], cache)
    cache.restore(saved, slice(5, 7))
    again = head.trunk(hidden[5:], ids[5:], pos[5:], cache)
    torch.testing.assert_close(head.logits(again).float(), whole[5:], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", FAMILY_CASES[:1] + FAMILY_CASES[-1:], ids=lambda c: c.id)
def test_the_concat_order_matters(case: FamilyCase, tmp_path: Path) -> None:
    """A head wired ``[hidden, embed]`` (MiMo's order) computes something else."""
    draft = _draft(tmp_path, case)
    hidden, ids, pos = _inputs()
    right, _ = _head(draft, case)(hidden, ids, pos)
    wrong, _ = _head(draft, case, hidden_first=True)(hidden, ids, pos)
    assert not torch.allclose(right, wrong, atol=1e-3)


def test_a_tensor_without_a_place_is_refused(tmp_path: Path) -> None:
    case = next(c for c in FAMILY_CASES if c.family == "glm4_moe")
    draft = _draft(tmp_path, case)
    config = read_json(draft / "config.json")
    weights = load_artifact_weights(draft)
    weights["model.layers.0.mlp.extra.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.extra\.weight"):
        FamilyHead(HEADS["glm4_moe"](config), weights, config, torch.zeros(256, 64),
                   torch.zeros(256, 64))  # fmt: skip
    del weights["model.layers.0.mlp.extra.weight"]
    del weights["model.layers.0.self_attn.q_proj.bias"]
    with pytest.raises(ValueError, match=r"lacks model\.layers\.0\.self_attn\.q_proj\.bias"):
        FamilyHead(HEADS["glm4_moe"](config), weights, config, torch.zeros(256, 64),
                   torch.zeros(256, 64))  # fmt: skip
