"""The reader interface: one subclass per checkpoint family, renames kept as data.

A reader knows three architecture-specific things and nothing else:

1. where the MTP tensors live in the source (``LAYER_RE`` + ``PREFIX_REMAP``, offset by
   ``layer_offset`` for families that number MTP layers after the trunk's, minus the
   ``SHARED`` tensors the target supplies at run time),
2. which SGLang contract the draft must satisfy (``contract`` / ``contract_for``),
3. how the source ``config.json`` becomes a loadable draft config (``draft_config``).

Everything generic (layer choice, shape checks, error messages) lives here, so adding a
family is adding a file under ``readers/`` with ``@register_reader``.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ...errors import ContractError, ShapeMismatchError, SourceError
from ..checkpoint import SourceCheckpoint
from ..contract import DraftContract, contract_problems, expected_shapes
from ..quantization import QuantizedHead, judge_quantization, quantization_keys
from ..safetensors_io import TensorInfo

log = logging.getLogger(__name__)

#: the serving engines a draft is written for (``export --for``)
Engine = Literal["sglang", "vllm"]
ENGINES: tuple[Engine, ...] = ("sglang", "vllm")


@dataclass(frozen=True)
class ConfigChanges:
    """How the draft ``config.json`` differs from the source one (kept in the manifest)."""

    removed: tuple[str, ...] = ()
    set: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HeadPlan:
    """Everything needed to write one MTP head: draft name -> source tensor, and config."""

    family: str
    contract: DraftContract
    layer: int
    available_layers: tuple[int, ...]
    #: draft tensor name -> where its bytes are in the source
    tensors: Mapping[str, TensorInfo]
    #: the source config, less ``dropped``
    source_config: Mapping[str, Any]
    #: stale source config keys the draft config leaves out (``text_config.`` for nested)
    dropped: tuple[str, ...] = ()
    #: a block-FP8 head's format and scales (``tensors`` then holds fp8 weights);
    #: ``None`` for a plain head
    quant: QuantizedHead | None = None


class MTPReader(ABC):
    """Base class for a checkpoint family's MTP-head reader."""

    family: ClassVar[str]
    #: ``architectures[0]`` values this reader claims.
    architectures: ClassVar[tuple[str, ...]]
    #: the draft contract (``contract_for`` picks a variant where a family has several).
    contract: ClassVar[DraftContract]
    #: matches a source MTP tensor name; group 1 is the layer's index in the source.
    LAYER_RE: ClassVar[re.Pattern[str]]
    #: (source prefix template, draft prefix template); ``{layer}`` is the source index of
    #: the exported MTP layer. A family whose draft keeps the source numbering uses
    #: ``{layer}`` in both.
    PREFIX_REMAP: ClassVar[tuple[tuple[str, str], ...]]
    #: source names (``{layer}`` templates) of per-layer copies of the embedding and head:
    #: SGLang replaces them with the target's, so they are not exported.
    SHARED: ClassVar[tuple[str, ...]] = ()
    #: SGLang serves the family with multi-layer EAGLE (draft step i runs MTP layer i):
    #: every MTP layer is exported, under its source name.
    ALL_LAYERS: ClassVar[bool] = False
    #: why SGLang cannot serve a reduced draft vocabulary for this family, or ``None``.
    NO_MAPS: ClassVar[str | None] = None
    #: human hint for "no MTP tensors", e.g. ``model.mtp_layers.*``.
    MARKER: ClassVar[str]
    #: the trunk's embedding and final norm in the release layout (synthetic checkpoints).
    TRUNK_EMBED: ClassVar[str] = "model.embed_tokens.weight"
    TRUNK_NORM: ClassVar[str] = "model.norm.weight"

    def layer_offset(self, config: Mapping[str, Any]) -> int:
        """Source index of MTP layer 0 (DeepSeek-style checkpoints number them after
        the trunk's ``num_hidden_layers``)."""
        return 0

    def contract_for(
        self, config: Mapping[str, Any], names: Collection[str] | None = None
    ) -> DraftContract:
        """The contract a draft with this (source or draft) config must satisfy.

        ``names`` (draft tensor names at hand) picks between variants that the config
        alone cannot tell apart, e.g. fused or per-expert MoE weights.
        """
        return self.contract

    def contracts(self) -> tuple[DraftContract, ...]:
        """Every contract variant of the family (docs)."""
        return (self.contract,)

    def layout(self, engine: Engine) -> MTPReader:
        """The reader that writes this family's draft for ``engine``. Most families have
        one draft layout that both engines load (tests/checkpoints/test_vllm_contract.py);
        the NextN families keep the release's layer numbering for vLLM (readers/nextn.py).

        Raises:
            SourceError: ``engine`` has no MTP draft class for this family.
        """
        if engine == "vllm" and all(c.vllm_class is None for c in self.contracts()):
            raise SourceError(
                f"vLLM has no MTP draft class for {self.family}; export it with --for sglang"
            )
        return self

    def draft_layout(self, config: Mapping[str, Any]) -> MTPReader:
        """The reader whose layout a written draft with this ``config`` has (``inspect``)."""
        return self

    def default_layout(
        self, weights: Mapping[str, Any], config: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A written draft's tensors and config as this family's default export names
        them (what the reference heads read): unchanged but for the NextN families'
        release-numbered layout."""
        return dict(weights), dict(config)

    def engines(
        self, config: Mapping[str, Any], names: Collection[str] | None = None
    ) -> dict[str, str]:
        """Engine -> the class that loads a draft of this layout with this config."""
        contract = self.contract_for(config, names)
        served = {"sglang": contract.sglang_class}
        if contract.vllm_class is not None:
            served["vllm"] = contract.vllm_class
        return served

    def mtp_layers(self, ckpt: SourceCheckpoint) -> tuple[int, ...]:
        """MTP layer indices present in the source (0 = the first MTP layer), ascending."""
        offset = self.layer_offset(ckpt.config)
        found = {int(m.group(1)) - offset for k in ckpt.weight_map if (m := self.LAYER_RE.match(k))}
        return tuple(sorted(i for i in found if i >= 0))

    def _remap(self, config: Mapping[str, Any], layer: int) -> list[tuple[str, str]]:
        at = self.layer_offset(config) + layer
        return [(src.format(layer=at), dst.format(layer=at)) for src, dst in self.PREFIX_REMAP]

    def source_prefixes(self, config: Mapping[str, Any], layer: int) -> tuple[str, ...]:
        """The source name prefixes that hold MTP ``layer``."""
        return tuple(src for src, _ in self._remap(config, layer))

    def shared_names(self, config: Mapping[str, Any], layer: int) -> tuple[str, ...]:
        """Source names of MTP ``layer``'s own embedding/head copies (never exported)."""
        at = self.layer_offset(config) + layer
        return tuple(t.format(layer=at) for t in self.SHARED)

    def draft_name(self, source_name: str, config: Mapping[str, Any], layer: int) -> str | None:
        """The draft name for a source tensor of MTP ``layer``, or ``None`` if it is not
        exported (not part of the layer, or a ``SHARED`` copy of the embedding/head)."""
        if source_name in self.shared_names(config, layer):
            return None
        for src, dst in self._remap(config, layer):
            if source_name.startswith(src):
                return dst + source_name[len(src) :]
        return None

    def source_name(self, draft_name: str, config: Mapping[str, Any], layer: int) -> str | None:
        """The inverse of :meth:`draft_name`, or ``None`` when ``draft_name`` belongs to
        another MTP layer (synthetic checkpoints)."""
        for src, dst in self._remap(config, layer):
            if draft_name.startswith(dst):
                return src + draft_name[len(dst) :]
        return None

    def draft_architectures(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """``architectures[0]`` values a draft config may carry (SGLang maps each to the
        family's draft class)."""
        return (self.contract_for(config).architecture,)

    def draft_config_problems(self, config: Mapping[str, Any]) -> list[str]:
        """What in a written draft ``config.json`` would make SGLang load the wrong
        class or size (``inspect``)."""
        want = self.draft_architectures(config)
        arch = (config.get("architectures") or [None])[0]
        if arch not in want:
            needs = " or ".join(map(repr, want))
            return [f"config.json architectures[0] is {arch!r}, SGLang needs {needs}"]
        return []

    @abstractmethod
    def draft_config(
        self, config: Mapping[str, Any], dtype: str | None
    ) -> tuple[dict[str, Any], ConfigChanges]:
        """Source config -> draft config that SGLang loads; ``dtype`` set when converting."""

    @abstractmethod
    def needs_remote_code(self, config: Mapping[str, Any]) -> bool:
        """Whether serving the *base* model from this config needs ``--trust-remote-code``."""

    def target_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The base config as a stock transformers model (the trunk; its MTP tensors are
        skipped on load). ``eval`` and ``train`` load the target through it, without
        remote code: the release's config, less remote-code and quantization keys.
        """
        return without_keys(config, ("auto_map", *quantization_keys(config)))

    def plan(
        self, ckpt: SourceCheckpoint, layer: int | None, *, quantized: bool = False
    ) -> HeadPlan:
        """Select and check the MTP tensors of one layer.

        ``quantized``: the caller reads block-FP8 heads (``plan.quant``: the exporter
        dequantizes or copies them); other callers get plain heads only.

        Raises:
            SourceError: no MTP tensors, or the requested layer does not exist; a
                quantized head :func:`~..quantization.judge_quantization` refuses, or
                any quantized head unless ``quantized``.
            ContractError: the layer lacks tensors SGLang needs, or has extra ones.
            ShapeMismatchError: a tensor's shape disagrees with ``config.json``.
        """
        layers = self.mtp_layers(ckpt)
        if not layers:
            raise SourceError(
                f"source {ckpt.path} ({ckpt.architecture}) has no {self.MARKER} tensors: "
                "it is a base model without its MTP head; pass a checkpoint that includes it"
            )
        if self.ALL_LAYERS and layer is not None:
            raise SourceError(
                f"--mtp-layer does not apply to {self.family}: SGLang serves it with "
                "multi-layer EAGLE (draft step i runs MTP layer i), so every MTP layer "
                "is exported; drop --mtp-layer"
            )
        if layer is None:
            layer = layers[0]
        if layer not in layers:
            raise SourceError(
                f"--mtp-layer {layer} does not exist in {ckpt.path}; "
                f"available MTP layers: {', '.join(map(str, layers))}"
            )
        names: dict[str, str] = {}
        for src in ckpt.weight_map:
            for at in layers if self.ALL_LAYERS else (layer,):
                if dst := self.draft_name(src, ckpt.config, at):
                    names[dst] = src
        infos = {dst: ckpt.tensor(src) for dst, src in sorted(names.items())}
        infos, quant, dropped = judge_quantization(ckpt, infos)  # the scales are not weights
        if quant is not None and not quantized:
            raise SourceError(
                f"source {ckpt.path} is quantized (quant_method=fp8; MTP tensors in F8_E4M3); "
                "this command reads bf16/fp16/fp32 heads: pass the bf16 release (DeepSeek's "
                "fp8_cast_bf16.py makes one)"
            )
        shapes = {dst: info.shape for dst, info in infos.items()}
        contract = self.contract_for(ckpt.config, shapes.keys())
        problems = contract_problems(contract, ckpt.config, shapes)
        key_problems = [p for p in problems if p.startswith(("missing", "unexpected"))]
        if key_problems:
            shown = key_problems[:4] + (
                [f"{len(key_problems) - 4} more"] if len(key_problems) > 4 else []
            )
            which = "the MTP layers" if self.ALL_LAYERS else f"MTP layer {layer}"
            raise ContractError(
                f"{which} in {ckpt.path} does not match SGLang's "
                f"{contract.sglang_class} ({'; '.join(shown)}); "
                "the checkpoint is incomplete or not a supported MTP layout"
            )
        if problems:
            expected = expected_shapes(contract, ckpt.config)
            name = next(n for n in sorted(shapes) if shapes[n] != expected[n])
            raise ShapeMismatchError(
                f"{names[name]} in {ckpt.weight_map[names[name]]} has shape "
                f"{list(shapes[name])} but config.json implies {list(expected[name])} "
                "(hidden_size / num_attention_heads / num_key_value_heads / head_dim / "
                "intermediate_size); config.json and weights are from different models"
            )
        config = without_keys(ckpt.config, dropped)
        return HeadPlan(self.family, contract, layer, layers, infos, config, dropped, quant)


def without_keys(config: Mapping[str, Any], keys: Collection[str]) -> dict[str, Any]:
    """``config`` less ``keys`` (``text_config.KEY`` for a nested one)."""
    cfg = dict(config)
    for key in keys:
        if key.startswith("text_config."):
            cfg["text_config"] = {
                k: v for k, v in cfg["text_config"].items() if k != key.split(".", 1)[1]
            }
        else:
            cfg.pop(key, None)
    return cfg


class ReleaseConfigReader(MTPReader):
    """A family whose draft keeps the release's config and architecture: SGLang's
    ``ModelConfig`` maps that architecture to the MTP draft class by itself."""

    def draft_architectures(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        return self.architectures

    def draft_config(
        self, config: Mapping[str, Any], dtype: str | None
    ) -> tuple[dict[str, Any], ConfigChanges]:
        return passthrough_config(config, dtype)

    def needs_remote_code(self, config: Mapping[str, Any]) -> bool:
        return False  # transformers ships these configs; the draft carries no code


def passthrough_config(
    config: Mapping[str, Any], dtype: str | None
) -> tuple[dict[str, Any], ConfigChanges]:
    """The release's config for a draft SGLang maps to its MTP class by itself: unchanged
    but for ``auto_map`` (the draft ships no modeling code; transformers has the config)
    and the dtype when converting."""
    cfg = dict(config)
    removed = tuple(k for k in ("auto_map",) if k in cfg)
    for key in removed:
        del cfg[key]
    changed: dict[str, Any] = {}
    if dtype is not None:
        changed["torch_dtype"] = dtype
        if "dtype" in cfg:
            changed["dtype"] = dtype
    cfg.update(changed)
    return cfg, ConfigChanges(removed, dict(sorted(changed.items())))
