"""The MTP layer as a trainable module, computing what SGLang's ``MiMoMTP`` computes.

The math is :mod:`..evaluate.reference`'s (norms, rotary, SwiGLU, input order
``[hidden, token]``, the embedding zeroed at position 0); only attention differs in
form: PyTorch's fused causal kernel over the whole sequence instead of the reference's
explicit scores with a KV cache, since training never decodes incrementally. A test
holds the two to the same logits. The target's embedding and ``lm_head`` are frozen
buffers, shared as SGLang shares them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ..evaluate.reference import PREFIX, MTPDims, mlp, rms_norm, rope_cos_sin, rotate_half
from ..heads.module import FamilyHead


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots


class TrainableHead(nn.Module):
    """One MTP layer (trainable, float32) over the target's frozen embedding and head."""

    def __init__(
        self,
        weights: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        embed: torch.Tensor,
        lm_head: torch.Tensor,
    ) -> None:
        """Args:
        weights: the 16 MTP tensors (``model.mtp_layers.0.`` prefix optional).
        embed, lm_head: the target's [V, H] tensors, kept frozen.
        """
        super().__init__()
        w = {k.removeprefix(PREFIX): v for k, v in weights.items()}
        self.params = nn.ParameterDict(
            {_key(k): nn.Parameter(v.detach().float().clone()) for k, v in sorted(w.items())}
        )
        self.embed: torch.Tensor
        self.lm_head: torch.Tensor
        self.register_buffer("embed", embed.detach().float(), persistent=False)  # [V, H]
        self.register_buffer("lm_head", lm_head.detach().float(), persistent=False)  # [V, H]
        self.dims = MTPDims.from_config(config)

    def weights(self, state: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The layer's tensors under their checkpoint names (``model.mtp_layers.0.*``), from
        the module or from a full ``state`` dict of it (a sharded head's, gathered)."""
        state = self.state_dict() if state is None else state
        return {
            PREFIX + k.removeprefix("params.").replace("__", "."): v.detach()
            for k, v in state.items()
            if k.startswith("params.")
        }

    def _w(self, name: str) -> torch.Tensor:
        return self.params[_key(name)]

    def step(
        self, hidden: torch.Tensor, next_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """One MTP step over a sequence: hidden [..., T, H], next_ids [..., T] -> [..., T, H].

        A leading batch dimension runs right-padded sequences together (causal
        attention: no real token sees a later pad); positions [T] are shared.
        """
        eps = self.dims.rms_norm_eps
        e = self.embed[next_ids].masked_fill((positions == 0)[:, None], 0.0)  # [..., T, H]
        x = torch.cat(
            (
                rms_norm(hidden, self._w("hidden_layernorm.weight"), eps),
                rms_norm(e, self._w("token_layernorm.weight"), eps),
            ),
            dim=-1,
        )  # [..., T, 2H], order [hidden, token]
        x = F.linear(x, self._w("input_proj.weight"))  # [..., T, H]
        x = x + self._attention(rms_norm(x, self._w("input_layernorm.weight"), eps), positions)
        block = {k: self._w(k) for k in ("mlp.gate_proj.weight", "mlp.up_proj.weight")}
        block["mlp.down_proj.weight"] = self._w("mlp.down_proj.weight")
        x = x + mlp(rms_norm(x, self._w("post_attention_layernorm.weight"), eps), block)
        return rms_norm(x, self._w("final_layernorm.weight"), eps)  # [..., T, H]

    def _attention(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Causal GQA attention over each sequence, x [..., T, H] -> [..., T, H]."""
        d, lead, t = self.dims, x.shape[:-2], x.shape[-2]
        q = F.linear(x, self._w("self_attn.q_proj.weight"), self._w("self_attn.q_proj.bias"))
        k = F.linear(x, self._w("self_attn.k_proj.weight"), self._w("self_attn.k_proj.bias"))
        v = F.linear(x, self._w("self_attn.v_proj.weight"), self._w("self_attn.v_proj.bias"))
        q = q.view(*lead, t, d.num_heads, d.head_dim).transpose(-3, -2)  # [..., nh, T, hd]
        k = k.view(*lead, t, d.num_kv_heads, d.head_dim).transpose(-3, -2)  # [..., nkv, T, hd]
        v = v.view(*lead, t, d.num_kv_heads, d.head_dim).transpose(-3, -2)  # [..., nkv, T, hd]
        cos, sin = rope_cos_sin(positions, d.head_dim, d.rope_theta, x.dtype)  # [T, hd]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=True
        )  # [..., nh, T, hd]
        out = out.transpose(-3, -2).reshape(*lead, t, d.num_heads * d.head_dim)
        return F.linear(out, self._w("self_attn.o_proj.weight"))  # [..., T, H]

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits of final-normed rows, out [N, H] -> [N, V]."""
        return F.linear(out, self.lm_head)


#: any family's trainable head
Head = TrainableHead | FamilyHead


def trainable_head(
    family: str,
    weights: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    embed: torch.Tensor,
    lm_head: torch.Tensor,
) -> Head:
    """``family``'s MTP layer to train in float32: :class:`TrainableHead` for MiMo, else
    the family's :class:`~..heads.module.FamilyHead` (same ``step`` / ``logits`` /
    ``weights`` interface)."""
    if family == "mimo":
        return TrainableHead(weights, config, embed, lm_head)
    return FamilyHead.of(family, weights, config, embed, lm_head, torch.float32)
