"""A starting MTP layer for a model that has none, built from its own trunk.

Models without an MTP head (Llama, SmolLM2) need one before ``train`` can fine-tune it.
The untrained head passes the trunk's final hidden state straight through: ``input_proj``
selects the (normed) hidden half, the decoder block is a copy of the trunk's last layer
with its two residual branches zeroed (``o_proj``, ``down_proj``), and the final norm
is a plain RMS norm. It therefore drafts what the trunk would predict *next*, a sane
start (cross-entropy about 7-9 nats on SmolLM2 against 40-70 for an averaged input or
a live copied block, measured in docs/train.md). Training switches on the token input
and the branches; the untrained head is the baseline of the FastMTP table there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

MTP_PREFIX = "model.mtp_layers.0."
#: the decoder-block tensors an MTP layer shares in name with a trunk layer
BLOCK = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.weight",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.weight",
    "self_attn.v_proj.bias",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)


def initial_head(
    trunk: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """The 16 ``model.mtp_layers.0.*`` tensors of a fresh MTP layer for ``trunk``."""
    last = f"model.layers.{int(config['num_hidden_layers']) - 1}."
    hidden = int(config["hidden_size"])
    dtype = trunk["model.norm.weight"].dtype
    eye = torch.eye(hidden, dtype=dtype)  # [H, H]
    head = {MTP_PREFIX + name: trunk[last + name].clone() for name in BLOCK}
    for branch in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
        head[MTP_PREFIX + branch].zero_()  # [H, Q] / [H, I]: the block starts as identity
    head[MTP_PREFIX + "token_layernorm.weight"] = torch.ones(hidden, dtype=dtype)  # [H]
    head[MTP_PREFIX + "hidden_layernorm.weight"] = torch.ones(hidden, dtype=dtype)  # [H]
    # [H, 2H], input order [hidden, token]: the hidden state only, until training
    head[MTP_PREFIX + "input_proj.weight"] = torch.cat((eye, torch.zeros_like(eye)), dim=1)
    head[MTP_PREFIX + "final_layernorm.weight"] = torch.ones(hidden, dtype=dtype)  # [H]
    return head
