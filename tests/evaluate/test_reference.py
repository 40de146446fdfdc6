"""The pure-PyTorch MTP forward: checked against transformers' Qwen2 decoder layer,
and used to prove exported tensors give bit-identical logits to the source tensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fastmtp_export.artifact.export import export_draft
from fastmtp_export.evaluate.reference import MiMoMTPReference, load_artifact_weights

from ..conftest import source_tensors

P = "model.mtp_layers.0."


def _load_source(src: Path, names: list[str]) -> dict[str, torch.Tensor]:
    return source_tensors(src, set(names).__contains__)


def _source_head(
    src: Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """(config, MTP layer-0 tensors, embed, lm_head) read straight from the source."""
    cfg = json.loads((src / "config.json").read_text())
    weight_map = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    names = [n for n in weight_map if n.startswith(P)]
    w = _load_source(src, [*names, "model.embed_tokens.weight", "lm_head.weight"])
    return cfg, w, w.pop("model.embed_tokens.weight"), w.pop("lm_head.weight")


def _inputs(
    cfg: dict, t: int = 9, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(t, cfg["hidden_size"], generator=g)  # [T, H]
    next_ids = torch.randint(0, cfg["vocab_size"], (t,), generator=g)  # [T]
    positions = torch.arange(t)  # [T]
    return hidden, next_ids, positions


def test_matches_transformers_qwen2_layer(tiny_source: Path) -> None:
    from transformers import Qwen2Config, Qwen2Model

    cfg, w, embed, head = _source_head(tiny_source)
    w = {k: v.float() for k, v in w.items()}
    embed, head = embed.float(), head.float()
    ref = MiMoMTPReference(w, cfg, embed, head, dtype=torch.float32)
    hidden, next_ids, positions = _inputs(cfg)
    logits, out = ref(hidden, next_ids, positions)

    # Independent computation: MTP input written out by hand, then transformers' own
    # Qwen2 decoder layer + final RMSNorm (a 1-layer Qwen2Model fed inputs_embeds).
    eps = cfg["rms_norm_eps"]

    def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weight * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    e = embed[next_ids].clone()
    e[0] = 0.0  # position 0 sees no token embedding
    x_in = torch.cat(
        (rms(hidden, w[P + "hidden_layernorm.weight"]), rms(e, w[P + "token_layernorm.weight"])), -1
    )
    x_in = x_in @ w[P + "input_proj.weight"].T
    qwen2: dict[str, Any] = dict(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=1,
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"],
        rms_norm_eps=eps,
        rope_theta=cfg["rope_theta"],
        max_position_embeddings=cfg["max_position_embeddings"],
        attn_implementation="eager",
    )
    model = Qwen2Model(Qwen2Config(**qwen2)).eval()
    state = {
        "layers.0." + k.removeprefix(P): v
        for k, v in w.items()
        if not k.endswith(
            (
                "token_layernorm.weight",
                "hidden_layernorm.weight",
                "input_proj.weight",
                "final_layernorm.weight",
            )
        )
    }
    state["norm.weight"] = w[P + "final_layernorm.weight"]
    state["embed_tokens.weight"] = embed
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected
    assert all("rotary" in m for m in missing)
    with torch.no_grad():
        hf_out = model(inputs_embeds=x_in[None], position_ids=positions[None]).last_hidden_state[0]
    torch.testing.assert_close(out, hf_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, hf_out @ head.T, rtol=1e-5, atol=1e-5)


def test_exported_tensors_give_bit_identical_logits(tiny_source: Path, tmp_path: Path) -> None:
    export_draft(tiny_source, tmp_path / "draft")
    draft = load_artifact_weights(tmp_path / "draft")
    cfg = json.loads((tiny_source / "config.json").read_text())
    source = _load_source(tiny_source, [*draft, "model.embed_tokens.weight", "lm_head.weight"])
    embed, head = source.pop("model.embed_tokens.weight"), source.pop("lm_head.weight")
    hidden, next_ids, positions = _inputs(cfg)
    from_source = MiMoMTPReference(source, cfg, embed, head)
    from_draft = MiMoMTPReference(
        draft, json.loads((tmp_path / "draft" / "config.json").read_text()), embed, head
    )
    assert from_draft.dtype == torch.bfloat16
    # step 1, then a recursive step 2 fed with step 1's output (FastMTP's K-step use)
    l1s, h1s = from_source(hidden, next_ids, positions)
    l1d, h1d = from_draft(hidden, next_ids, positions)
    l2s, _ = from_source(h1s, next_ids.roll(-1), positions)
    l2d, _ = from_draft(h1d, next_ids.roll(-1), positions)
    assert torch.equal(l1s, l1d)
    assert torch.equal(l2s, l2d)


@pytest.mark.parametrize("swap", ["hidden_layernorm.weight", "input_proj.weight"])
def test_bit_identity_check_can_fail(tiny_source: Path, swap: str) -> None:
    """Guard for the test above: a perturbed tensor must change the logits."""
    cfg, w, embed, head = _source_head(tiny_source)
    bad = dict(w)
    bad[P + swap] = w[P + swap] * 1.01
    args = _inputs(cfg)
    assert not torch.equal(
        MiMoMTPReference(w, cfg, embed, head)(*args)[0],
        MiMoMTPReference(bad, cfg, embed, head)(*args)[0],
    )


def test_position_zero_ignores_the_token(tiny_source: Path, tmp_path: Path) -> None:
    export_draft(tiny_source, tmp_path / "draft")
    cfg = json.loads((tiny_source / "config.json").read_text())
    src = _load_source(tiny_source, ["model.embed_tokens.weight", "lm_head.weight"])
    ref = MiMoMTPReference(
        load_artifact_weights(tmp_path / "draft"),
        cfg,
        src["model.embed_tokens.weight"],
        src["lm_head.weight"],
        dtype=torch.float32,
    )
    hidden, ids, pos = _inputs(cfg)
    other = ids.clone()
    other[0] = (ids[0] + 1) % cfg["vocab_size"]
    a, _ = ref(hidden, ids, pos)
    b, _ = ref(hidden, other, pos)
    assert torch.equal(a[0], b[0])  # embedding zeroed at position 0
    other[1] = (ids[1] + 1) % cfg["vocab_size"]
    c, _ = ref(hidden, other, pos)
    assert not torch.equal(a[1], c[1])  # but not elsewhere
