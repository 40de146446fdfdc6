"""DeepSeek-style NextN checkpoints: the MTP layer is ``model.layers.{L}``, L = num_hidden_layers.

DeepSeek-V3/R1 and GLM-4.5/4.6 number their MTP layer after the trunk's and give it its
own copies of the embedding (``embed_tokens``) and head (``shared_head.head``). SGLang
0.5.23's NextN draft classes take both from the target instead
(``EagleDraftWorker.init_lm_head`` -> ``set_embed_and_head``), so the draft holds the
layer without them, renamed ``model.layers.0.*`` with ``num_hidden_layers: 1`` — the
layout of SGLang's own ``scripts/export_deepseek_nextn.py`` — and ``auto_map`` dropped
(transformers ships both configs; the draft carries no modeling code). A draft that
mixes the layouts (``num_hidden_layers`` kept, names renamed) loads *nothing* without a
word; the contract and ``inspect`` check both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..contract import int_field
from .base import ConfigChanges, MTPReader

DRAFT_LAYER = "model.layers.0."

NEXTN_LEGEND = (
    "H = hidden_size, E = n_routed_experts, MI = moe_intermediate_size, "
    "SI = moe_intermediate_size x n_shared_experts"
)


def moe_dims(config: Mapping[str, Any]) -> dict[str, int]:
    """Shape symbols of the NextN fusion and its mixture of experts."""
    hidden = int_field(config, "hidden_size")
    moe = int_field(config, "moe_intermediate_size")
    return {
        "H": hidden,
        "2H": 2 * hidden,
        "E": int_field(config, "n_routed_experts"),
        "MI": moe,
        "SI": moe * int_field(config, "n_shared_experts", 1),
    }


class NextNReader(MTPReader):
    """The NextN layout; a family adds its architecture, attention and draft class."""

    LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.")
    PREFIX_REMAP = (("model.layers.{layer}.", DRAFT_LAYER),)
    SHARED = (
        "model.layers.{layer}.embed_tokens.weight",
        "model.layers.{layer}.shared_head.head.weight",
    )
    MARKER = "model.layers.{num_hidden_layers}.* (NextN)"

    def layer_offset(self, config: Mapping[str, Any]) -> int:
        return int_field(config, "num_hidden_layers")

    def draft_config(
        self, config: Mapping[str, Any], dtype: str | None
    ) -> tuple[dict[str, Any], ConfigChanges]:
        cfg = dict(config)
        removed = [k for k in ("auto_map",) if k in cfg]
        for key in removed:
            del cfg[key]
        wanted: dict[str, Any] = {
            "architectures": [self.contract.architecture],
            "num_hidden_layers": 1,  # SGLang then reads model.layers.0.*
            "num_nextn_predict_layers": 1,  # asserted by the NextN classes
        }
        if dtype is not None:
            wanted["torch_dtype"] = dtype
            if "dtype" in cfg:
                wanted["dtype"] = dtype
        changed = {k: v for k, v in wanted.items() if cfg.get(k) != v}
        cfg.update(wanted)
        return cfg, ConfigChanges(tuple(removed), dict(sorted(changed.items())))

    def draft_config_problems(self, config: Mapping[str, Any]) -> list[str]:
        problems = super().draft_config_problems(config)
        for key in ("num_hidden_layers", "num_nextn_predict_layers"):
            if config.get(key) != 1:
                problems.append(
                    f"config.json {key} is {config.get(key)!r}, must be 1 "
                    f"(SGLang reads the layer as {DRAFT_LAYER}*)"
                )
        return problems

    def needs_remote_code(self, config: Mapping[str, Any]) -> bool:
        return False
