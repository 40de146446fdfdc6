"""A starting MTP layer for a model that has none, built from its own trunk.

Models without an MTP head (Llama, SmolLM2) need one before ``train`` can fine-tune it.
The decoder block starts as a copy of the trunk's last layer (already at home in the
trunk's hidden space) and the final norm as the trunk's final norm; ``input_proj``
averages the two normed inputs, so the untrained head sees both the hidden state and
the next token. Training moves it from there; the untrained head is the baseline the
FastMTP table in docs/train.md starts from.
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
    head[MTP_PREFIX + "token_layernorm.weight"] = torch.ones(hidden, dtype=dtype)  # [H]
    head[MTP_PREFIX + "hidden_layernorm.weight"] = torch.ones(hidden, dtype=dtype)  # [H]
    head[MTP_PREFIX + "input_proj.weight"] = torch.cat((eye, eye), dim=1) / 2  # [H, 2H]
    head[MTP_PREFIX + "final_layernorm.weight"] = trunk["model.norm.weight"].clone()  # [H]
    return head
