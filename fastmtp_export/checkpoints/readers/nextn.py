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

vLLM's NextN classes (``DeepSeekMTP``, ``Glm4MoeMTP``) read the layer under the
release's own number, ``model.layers.{num_hidden_layers}`` of the *target's* config, and
pick the draft class from the release's ``model_type``/architecture; they refuse the
layout above (``Glm4MoeForCausalLMNextN`` is no vLLM architecture; a DeepSeek draft
renamed to layer 0 leaves the layer unloaded). ``export --for vllm``
(:meth:`NextNReader.layout`) therefore keeps the release's numbering, architecture and
``num_hidden_layers``: a draft SGLang loads as well (its NextN classes read layer
``num_hidden_layers`` when that is not 1), checked in both contract lanes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any, ClassVar

from ..contract import DraftContract, int_field
from .base import ConfigChanges, Engine, MTPReader, passthrough_config

DRAFT_LAYER = "model.layers.0."
#: the layer under the release's number (``{layer}`` = num_hidden_layers)
RELEASE_LAYER = "model.layers.{layer}."

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


def _release_layer(config: Mapping[str, Any]) -> range:
    at = int_field(config, "num_hidden_layers")
    return range(at, at + 1)


def release_numbering(contract: DraftContract, architecture: str, vllm_class: str) -> DraftContract:
    """``contract`` with its layer under the release's number and architecture: the
    draft both vLLM's and SGLang's NextN classes load."""

    def renamed(template: str) -> str:
        if template.startswith(DRAFT_LAYER):
            return RELEASE_LAYER + template[len(DRAFT_LAYER) :]
        return template

    return replace(
        contract,
        variant=", ".join(v for v in (contract.variant, "release layer numbering") if v),
        architecture=architecture,
        tensors={renamed(t): shape for t, shape in contract.tensors.items()},
        layers=_release_layer,
        fp8_weights=frozenset(map(renamed, contract.fp8_weights)),
        vllm_class=vllm_class,
    )


class NextNReader(MTPReader):
    """The NextN layout; a family adds its architecture, attention and draft classes."""

    LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.")
    PREFIX_REMAP = (("model.layers.{layer}.", DRAFT_LAYER),)
    SHARED = (
        "model.layers.{layer}.embed_tokens.weight",
        "model.layers.{layer}.shared_head.head.weight",
    )
    MARKER = "model.layers.{num_hidden_layers}.* (NextN)"
    #: the class vLLM builds for the release-numbered draft.
    VLLM_CLASS: ClassVar[str]
    #: this reader writes (and checks) the release-numbered draft (:meth:`layout`).
    release_numbered: bool = False

    def layer_offset(self, config: Mapping[str, Any]) -> int:
        return int_field(config, "num_hidden_layers")

    def layout(self, engine: Engine) -> MTPReader:
        if engine != "vllm" or self.release_numbered:
            return self
        variant = copy.copy(self)
        variant.release_numbered = True
        return variant

    def draft_layout(self, config: Mapping[str, Any]) -> MTPReader:
        """A written draft is release-numbered when it keeps the release's architecture
        and a ``num_hidden_layers`` other than 1 (a mix of the two layouts is checked as
        SGLang's, whose problems then name the field to fix)."""
        arch = (config.get("architectures") or [None])[0]
        if arch in self.architectures and config.get("num_hidden_layers") != 1:
            return self.layout("vllm")
        return self

    def default_layout(
        self, weights: Mapping[str, Any], config: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if not self.release_numbered:
            return super().default_layout(weights, config)
        plain = copy.copy(self)
        plain.release_numbered = False
        at = RELEASE_LAYER.format(layer=self.layer_offset(config))
        renamed = {
            DRAFT_LAYER + n[len(at) :] if n.startswith(at) else n: t for n, t in weights.items()
        }
        return renamed, plain.draft_config(config, None)[0]

    def _remap(self, config: Mapping[str, Any], layer: int) -> list[tuple[str, str]]:
        if not self.release_numbered:
            return super()._remap(config, layer)
        first = self.layer_offset(config)  # the exported layer is the draft's only one
        src = RELEASE_LAYER.format(layer=first + layer)
        return [(src, RELEASE_LAYER.format(layer=first))]

    def contract_for(
        self, config: Mapping[str, Any], names: Collection[str] | None = None
    ) -> DraftContract:
        return self._in_layout(self.sglang_contract(config, names))

    def contracts(self) -> tuple[DraftContract, ...]:
        return tuple(map(self._in_layout, self.sglang_contracts()))

    def _in_layout(self, contract: DraftContract) -> DraftContract:
        if not self.release_numbered:
            return contract
        return release_numbering(contract, self.architectures[0], self.VLLM_CLASS)

    def sglang_contract(
        self, config: Mapping[str, Any], names: Collection[str] | None = None
    ) -> DraftContract:
        """The contract of SGLang's own layout (layer 0) for this config."""
        return self.contract

    def sglang_contracts(self) -> tuple[DraftContract, ...]:
        """Every variant of SGLang's own layout (docs)."""
        return (self.contract,)

    def draft_config(
        self, config: Mapping[str, Any], dtype: str | None
    ) -> tuple[dict[str, Any], ConfigChanges]:
        if self.release_numbered:  # the release's config, with one MTP layer
            cfg, changes = passthrough_config(config, dtype)
            if cfg.get("num_nextn_predict_layers") != 1:
                cfg["num_nextn_predict_layers"] = 1
                changes = ConfigChanges(
                    changes.removed,
                    dict(sorted({**changes.set, "num_nextn_predict_layers": 1}.items())),
                )
            return cfg, changes
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
        if self.release_numbered:  # the tensor names are checked against num_hidden_layers
            if config.get("num_nextn_predict_layers") != 1:
                problems.append(
                    "config.json num_nextn_predict_layers is "
                    f"{config.get('num_nextn_predict_layers')!r}, must be 1 (one MTP layer)"
                )
            return problems
        for key in ("num_hidden_layers", "num_nextn_predict_layers"):
            if config.get(key) != 1:
                problems.append(
                    f"config.json {key} is {config.get(key)!r}, must be 1 "
                    f"(SGLang reads the layer as {DRAFT_LAYER}*)"
                )
        return problems

    def needs_remote_code(self, config: Mapping[str, Any]) -> bool:
        return False
