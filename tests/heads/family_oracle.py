"""Tiny full releases (trunk and MTP layer) of every family served with maps, whose
greedy output and draft acceptance are known.

The trunk is the family's own transformers model (random init from the release config,
saved in transformers' layout); the MTP tensors are in the release layout export reads.
As in fastmtp_export/checkpoints/oracle.py, the trunk writes little to the residual
(every ``o_proj`` / ``down_proj`` / ``out_proj`` scaled by ``residual``) and ``lm_head``
row ``perm[t]`` is token ``t``'s embedding, so greedy decoding follows ``t -> perm[t]``.
The *copy* MTP layer passes the next token's embedding through (``eh_proj``/``fc`` =
``[I | 0]``, its ``o_proj`` and ``down_proj`` zero, norms at their identity), so every
draft is right: K=3 acceptance is 4 tokens per verify, and 1 with a vocabulary that
lacks the chain's tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fastmtp_export.checkpoints.oracle import EOS, HEAD_SCALE, chain_permutation
from fastmtp_export.checkpoints.readers import READERS
from fastmtp_export.checkpoints.synthetic import family_tensor_shapes

#: residual-writing projections (attention out, MLP / expert down, linear-attention out)
_WRITES = ("o_proj.weight", "down_proj.weight", "experts.down_proj", "out_proj.weight")


def _oracle_config(config: dict[str, Any]) -> dict[str, Any]:
    """float32, and the oracle's EOS (id 0, on the ``en`` cycle)."""
    cfg = {k: v for k, v in config.items() if k not in ("torch_dtype", "dtype", "pad_token_id")}
    cfg |= {"torch_dtype": "float32", "eos_token_id": EOS}
    if isinstance(cfg.get("text_config"), dict):
        cfg["text_config"] = _oracle_config(cfg["text_config"])
    return cfg


def _trunk(family: str, config: dict[str, Any], path: Path, seed: int) -> dict[str, torch.Tensor]:
    """The transformers model of the release config, saved and read back by name."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = READERS[family].target_config(config)
    model_type = cfg.pop("model_type")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **cfg))
    model.save_pretrained(path / "_trunk")
    tensors = load_file(path / "_trunk" / "model.safetensors")
    for f in (path / "_trunk").iterdir():
        f.unlink()
    (path / "_trunk").rmdir()
    return tensors


def write_family_oracle(
    path: Path,
    family: str,
    config: dict[str, Any],
    *,
    residual: float = 0.01,
    copy: bool = True,
    draft_noise: float = 0.0,
    seed: int = 0,
) -> Path:
    """A ``family`` release at ``path`` whose target follows :func:`chain_permutation`
    (ids past the oracle's 256 are fixed points); ``copy=False`` gives a random MTP
    layer instead of the copy draft (a head to train); ``draft_noise`` blurs the copy
    draft's projection so that only some drafts are right."""
    path.mkdir(parents=True)
    config = _oracle_config(config)
    tensors = _trunk(family, config, path, seed)
    gen = torch.Generator().manual_seed(seed)
    perm = chain_permutation(0)
    embed_name = next(n for n in tensors if n.endswith("embed_tokens.weight"))
    v, h = tensors[embed_name].shape
    perm += list(range(len(perm), v))
    embed = torch.randn(v, h, generator=gen)  # [V, H]
    head = torch.zeros(v, h)  # [V, H]: row perm[t] is token t's direction
    for tok in range(v):
        head[perm[tok]] = embed[tok] / embed[tok].norm() * HEAD_SCALE
    # Gemma-style norms (Qwen3-Next / 3.5) scale by 1 + w: their identity is w = 0
    gemma = family in ("qwen3_next", "qwen3_5")
    for name, t in tensors.items():
        if name.endswith(_WRITES):
            tensors[name] = t * residual
    tensors[embed_name] = embed
    tensors["lm_head.weight"] = head
    # the MTP layer, in the release's names
    shapes, mtp = family_tensor_shapes(family, config)
    for name in sorted(mtp):
        shape = shapes[name]
        if name.endswith(("norm.weight", "norm.m.weight", "layernorm.weight")):
            t = torch.zeros(shape) if gemma else torch.ones(shape)  # [shape]: scale 1
        elif name.endswith(("e_score_correction_bias", ".bias")):
            t = torch.zeros(shape)  # [shape]
        elif copy and name.endswith(("eh_proj.weight", "fc.weight")):
            t = torch.cat([torch.eye(h), torch.zeros(h, h)], dim=1)  # [H, 2H]: the embedding
            t = t + draft_noise * torch.randn(t.shape, generator=gen)
        elif copy and name.endswith(_WRITES):
            t = torch.zeros(shape)  # [shape]: the block writes nothing back
        elif name.endswith("embed_tokens.weight"):
            t = embed.clone()
        else:
            t = torch.randn(shape, generator=gen) * 0.1  # [shape]
        tensors[name] = t
    save_file({k: v.contiguous() for k, v in tensors.items()}, path / "model.safetensors",
              metadata={"format": "pt"})  # fmt: skip
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path
