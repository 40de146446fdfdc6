"""A tiny GLM-4.5 release (trunk and NextN layer) whose MTP head drafts well.

The trunk (layer 0 dense, layer 1 MoE, GLM's attention with biases and q/k norms) adds
little to the residual (projections scaled by 0.01), so the target's next token is about
``argmax lm_head(norm(embed(t)))``: a near-bigram model. The NextN layer copies the
token embedding through ``eh_proj = [I | 0]`` and writes nothing back (zero ``o_proj``
and ``down_proj``), so its head sees the same thing and drafts the target's tokens
most of the time: acceptance well above 1 shows SGLang really runs the exported layer,
and a draft vocabulary without the target's tokens drops it to about 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from fastmtp_export.checkpoints.synthetic import family_tensor_shapes

from ..checkpoints.families import glm4_moe

CONFIG: dict[str, Any] = {**glm4_moe(qk_norm=True), "torch_dtype": "float32"}


Shapes = dict[str, tuple[int, ...]]


def _trunk_shapes(cfg: dict[str, Any], mtp: Shapes) -> Shapes:
    """Layers 0 .. L-1 in the release's names: the NextN layer's block, dense below
    ``first_k_dense_replace``."""
    layers = cfg["num_hidden_layers"]
    block = {
        n.split(".", 3)[3]: s
        for n, s in mtp.items()
        if n.startswith(f"model.layers.{layers}.")
        and not any(x in n for x in ("enorm", "hnorm", "eh_proj", "shared_head", "embed_tokens"))
    }
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    out: Shapes = {}
    for layer in range(layers):
        p = f"model.layers.{layer}."
        for name, shape in block.items():
            if layer < cfg["first_k_dense_replace"] and name.startswith("mlp."):
                continue
            out[p + name] = shape
        if layer < cfg["first_k_dense_replace"]:
            out |= {
                p + "mlp.gate_proj.weight": (i, h),
                p + "mlp.up_proj.weight": (i, h),
                p + "mlp.down_proj.weight": (h, i),
            }
    return out


def write_glm_release(path: Path) -> Path:
    """The release directory: ``config.json`` and one ``model.safetensors``."""
    cfg = CONFIG
    shapes, mtp_names = family_tensor_shapes("glm4_moe", cfg)
    shapes |= _trunk_shapes(cfg, {n: shapes[n] for n in mtp_names})
    nextn = f"model.layers.{cfg['num_hidden_layers']}."
    h = cfg["hidden_size"]
    gen = torch.Generator().manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in sorted(shapes.items()):
        if name.endswith(("norm.weight",)):
            t = torch.ones(shape)  # [shape]
        elif name.endswith((".bias", "e_score_correction_bias")):
            t = torch.zeros(shape)  # [shape]
        else:
            t = torch.randn(shape, generator=gen) * 0.1  # [shape]
        is_nextn = name.startswith(nextn)
        if not is_nextn and name.endswith(("o_proj.weight", "down_proj.weight")):
            t = t * 0.01  # the trunk barely moves the residual: a near-bigram target
        if is_nextn and name.endswith("eh_proj.weight"):
            t = torch.cat([torch.eye(h), torch.zeros(h, h)], dim=1)  # [H, 2H]: the embedding
        elif is_nextn and name.endswith(("o_proj.weight", "down_proj.weight")):
            t = torch.zeros(shape)  # the block writes nothing back
        tensors[name] = t.contiguous()
    path.mkdir(parents=True)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return path
