"""LongCat-Flash (SGLang ``LongcatFlashForCausalLMNextN``): NextN fusion (norms named
``enorm.m`` / ``hnorm.m``), a *dense* layer of LongCat's scaled MLA and SwiGLU MLP
(``ffn_hidden_size``), and ``model.mtp.norm``. transformers ships LongCat's MLA and MLP
but only the dual-sublayer MoE block, so :class:`DenseLayer` assembles the NextN layer
from them, as SGLang's ``LongcatFlashDenseDecoderLayer`` does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .registry import register_head
from .spec import HeadSpec

_L = "model.mtp.layers.0."


class DenseLayer(nn.Module):
    """Pre-norm MLA + pre-norm MLP with residuals (LongCat's NextN decoder layer)."""

    def __init__(self, mod: Any, config: Any) -> None:
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = mod.LongcatFlashMLA(config=config, layer_idx=0)
        self.mlp = mod.LongcatFlashMLP(config, intermediate_size=config.ffn_hidden_size)
        self.input_layernorm = mod.LongcatFlashRMSNorm(h, eps=eps)
        self.post_attention_layernorm = mod.LongcatFlashRMSNorm(h, eps=eps)

    def forward(self, hidden_states: torch.Tensor, **kw: Any) -> torch.Tensor:
        kw.pop("use_cache", None)
        kw.pop("position_ids", None)
        attn, _ = self.self_attn(self.input_layernorm(hidden_states), **kw)
        x = hidden_states + attn
        return x + self.mlp(self.post_attention_layernorm(x))


@register_head("longcat_flash")
def longcat_flash(config: Mapping[str, Any]) -> HeadSpec:
    return HeadSpec(
        family="longcat_flash",
        module="transformers.models.longcat_flash.modeling_longcat_flash",
        prefix="LongcatFlash",
        embed_norm=_L + "enorm.m.weight",
        hidden_norm=_L + "hnorm.m.weight",
        proj=_L + "eh_proj.weight",
        final_norm="model.mtp.norm.weight",
        layer=_L,
        renames=(("transformer_layer.mlp.", "mlp."),),
        build_layer=DenseLayer,
    )
