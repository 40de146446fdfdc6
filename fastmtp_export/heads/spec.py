"""What differs between MTP families' draft heads, as data.

Every family SGLang serves with maps computes the same step::

    x   = proj(cat[norm_e(embed(t+1)), norm_h(h_t)])   # [T, 2H] -> [T, H] (MiMo: h first)
    x   = decoder_layer(x)                              # the family's own layer
    out = final_norm(x)                                 # [T, H], the next step's h
    logits = out @ lm_head.T                            # the target's head

A :class:`HeadSpec` names the draft tensors of the four fusion pieces, where the
decoder layer's tensors live, and how to build the layer from the installed
transformers (the family's ``*DecoderLayer``, ``*RMSNorm`` and ``*RotaryEmbedding``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


def single_layer(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config of a one-layer model whose layer 0 is the MTP layer: full attention and
    the sparse MLP, as SGLang builds the draft (``num_hidden_layers = 1``, the layer
    ``is_nextn``)."""
    cfg = copy.deepcopy(dict(config))
    cfg["num_hidden_layers"] = 1
    cfg["first_k_dense_replace"] = 0  # DeepSeek, GLM: the NextN layer is always MoE
    if "layer_types" in cfg or "full_attention_interval" in cfg:
        cfg["layer_types"] = ["full_attention"]  # Qwen3-Next / 3.5: MTP attention is full
    cfg["full_attention_interval"] = 1
    cfg["mlp_only_layers"] = []
    cfg["decoder_sparse_step"] = 1
    return cfg


@dataclass(frozen=True)
class HeadSpec:
    """One family's MTP head wiring (see the module docstring)."""

    family: str
    #: transformers modeling module, e.g. ``transformers.models.glm4_moe.modeling_glm4_moe``.
    module: str
    #: class-name prefix in that module (``Glm4Moe`` -> ``Glm4MoeDecoderLayer``, ...).
    prefix: str
    #: draft tensor names of the fusion norms, the projection and the final norm.
    embed_norm: str
    hidden_norm: str
    proj: str
    final_norm: str
    #: draft-name prefix of the decoder layer's tensors.
    layer: str
    #: draft sub-name -> layer sub-name, for the tensors whose names differ.
    renames: tuple[tuple[str, str], ...] = ()
    #: MiMo concatenates ``[hidden, embed]``; every NextN family ``[embed, hidden]``.
    hidden_first: bool = False
    #: MiMo zeroes the embedding at position 0; the NextN families do not.
    zero_first: bool = False
    #: the rotary class, when not ``<prefix>RotaryEmbedding``.
    rotary: str = ""
    #: transformers config -> the decoder layer (default ``<prefix>DecoderLayer(cfg, 0)``).
    build_layer: Callable[[Any, Any], Any] | None = field(default=None, compare=False)

    @property
    def fusion_names(self) -> tuple[str, str, str, str]:
        """Draft names of the embedding norm, hidden norm, projection and final norm."""
        return (self.embed_norm, self.hidden_norm, self.proj, self.final_norm)

    def layer_name(self, draft_name: str) -> str | None:
        """The decoder layer's parameter name of a draft tensor (None: not the layer's)."""
        if not draft_name.startswith(self.layer):
            return None
        sub = draft_name.removeprefix(self.layer)
        for old, new in self.renames:
            if sub.startswith(old):
                return new + sub.removeprefix(old)
        return sub

    def draft_name(self, layer_name: str) -> str:
        """Inverse of :meth:`layer_name`."""
        for old, new in self.renames:
            if layer_name.startswith(new):
                return self.layer + old + layer_name.removeprefix(new)
        return self.layer + layer_name


def nextn_spec(family: str, module: str, prefix: str) -> HeadSpec:
    """DeepSeek's NextN layout, which GLM-4.5 shares: the layer renamed
    ``model.layers.0.``, ``enorm``/``hnorm``/``eh_proj`` and ``shared_head.norm``."""
    layer = "model.layers.0."
    return HeadSpec(
        family=family,
        module=module,
        prefix=prefix,
        embed_norm=layer + "enorm.weight",
        hidden_norm=layer + "hnorm.weight",
        proj=layer + "eh_proj.weight",
        final_norm=layer + "shared_head.norm.weight",
        layer=layer,
    )


def qwen_mtp_spec(family: str, module: str, prefix: str, rotary: str = "") -> HeadSpec:
    """Qwen3-Next's MTP layout, which Qwen3.5 shares: ``mtp.pre_fc_norm_embedding`` /
    ``pre_fc_norm_hidden``, ``mtp.fc``, ``mtp.layers.0.`` and ``mtp.norm``."""
    return HeadSpec(
        family=family,
        module=module,
        prefix=prefix,
        embed_norm="mtp.pre_fc_norm_embedding.weight",
        hidden_norm="mtp.pre_fc_norm_hidden.weight",
        proj="mtp.fc.weight",
        final_norm="mtp.norm.weight",
        layer="mtp.layers.0.",
        rotary=rotary,
    )
