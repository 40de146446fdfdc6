"""LongCat-Flash (``LongcatFlashForCausalLM``): ``model.mtp.layers.0.*`` and ``model.mtp.norm``.

SGLang 0.5.23 serves it with ``LongcatFlashForCausalLMNextN``
(``sglang/srt/models/longcat_flash_nextn.py``): a NextN fusion whose norms are named
``enorm.m`` / ``hnorm.m``, DeepSeek's multi-head latent attention, and a dense MLP under
``transformer_layer.mlp``. The loader reads layer 0 only and keeps the release's names;
the draft config is the release's (``ModelConfig`` sets ``num_hidden_layers`` from
``num_nextn_predict_layers`` when it loads a draft) minus ``auto_map``, plus a rope dict
(:func:`rope_dict`) where the release has ``rope_theta`` only. The release's
``model.mtp.embed_tokens`` copy is not exported: the embedding and head come from the
target.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..contract import DraftContract, int_field
from . import register_reader
from .base import ConfigChanges, ReleaseConfigReader
from .layouts import MLA_LEGEND, dense_mlp, layer_norms, mla_attention, mla_dims

_L = "model.mtp.layers.0."


def longcat_dims(config: Mapping[str, Any]) -> dict[str, int]:
    """Shape symbols of the LongCat-Flash MTP layer."""
    hidden = int_field(config, "hidden_size")
    return mla_dims(config) | {
        "H": hidden,
        "2H": 2 * hidden,
        "I": int_field(config, "ffn_hidden_size"),
    }


LONGCAT_FLASH_CONTRACT = DraftContract(
    family="longcat_flash",
    architecture="LongcatFlashForCausalLM",
    sglang_class="LongcatFlashForCausalLMNextN",
    vllm_class="LongCatFlashMTP",
    tensors={
        _L + "enorm.m.weight": ("H",),
        _L + "hnorm.m.weight": ("H",),
        _L + "eh_proj.weight": ("H", "2H"),
        **layer_norms(_L),
        **mla_attention(_L),
        **dense_mlp(_L + "transformer_layer.mlp."),
        "model.mtp.norm.weight": ("H",),
    },
    dims=longcat_dims,
    legend=f"H = hidden_size, I = ffn_hidden_size, {MLA_LEGEND}.",
)


@register_reader
class LongcatFlashReader(ReleaseConfigReader):
    family = "longcat_flash"
    architectures = ("LongcatFlashForCausalLM",)
    contract = LONGCAT_FLASH_CONTRACT
    LAYER_RE = re.compile(r"^model\.mtp\.layers\.(\d+)\.")
    PREFIX_REMAP = (("model.mtp.layers.{layer}.", _L), ("model.mtp.norm.", "model.mtp.norm."))
    SHARED = ("model.mtp.embed_tokens.weight",)
    MARKER = "model.mtp.layers.*"

    def draft_config(
        self, config: Mapping[str, Any], dtype: str | None
    ) -> tuple[dict[str, Any], ConfigChanges]:
        cfg, changes = super().draft_config(config, dtype)
        rope = rope_dict(cfg)
        if rope is None:
            return cfg, changes
        cfg["rope_scaling"] = rope
        return cfg, ConfigChanges(
            changes.removed, dict(sorted({**changes.set, "rope_scaling": rope}.items()))
        )

    def target_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        # transformers' LongCat rotary spans head_dim (default 64, the release's
        # qk_rope_head_dim); SGLang rotates qk_rope_head_dim dims: say so explicitly
        cfg = super().target_config(config)
        cfg["head_dim"] = int_field(config, "qk_rope_head_dim")
        return cfg

    def draft_config_problems(self, config: Mapping[str, Any]) -> list[str]:
        problems = super().draft_config_problems(config)
        if rope_dict(config) is not None:
            problems.append(
                "config.json has rope_theta but no rope_scaling dict: SGLang's "
                "LongcatFlashForCausalLMNextN fails on it (rope_parameters is None); re-export"
            )
        return problems


def rope_dict(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The rope dict a config with ``rope_theta`` only needs, else ``None``.

    The LongCat-Flash release config has ``rope_theta`` only. SGLang 0.5.23 builds it
    with its own ``LongcatFlashConfig``, which under the transformers it installs (5.x,
    where ``rope_scaling`` is an alias of ``rope_parameters``) leaves
    ``rope_parameters`` None, and the target and draft classes alike then fail on
    ``"rope_theta" in None``. A ``rope_scaling`` dict fills both (docs/format.md).
    """
    if config.get("rope_scaling") is not None or config.get("rope_parameters") is not None:
        return None
    if "rope_theta" not in config:
        return None
    return {"rope_type": "default", "rope_theta": config["rope_theta"]}
