"""The reader interface: one subclass per checkpoint family, renames kept as data.

A reader knows three architecture-specific things and nothing else:

1. where the MTP tensors live in the source (``LAYER_RE`` + ``PREFIX_REMAP``),
2. which SGLang contract the draft must satisfy (``contract``),
3. how the source ``config.json`` becomes a loadable draft config (``draft_config``).

Everything generic (layer choice, shape checks, error messages) lives here, so adding a
family is adding a file under ``readers/`` with ``@register_reader``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...errors import ContractError, ShapeMismatchError, SourceError
from ..checkpoint import SourceCheckpoint
from ..contract import DraftContract, contract_problems, expected_shapes
from ..safetensors_io import TensorInfo


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
    source_config: Mapping[str, Any]


class MTPReader(ABC):
    """Base class for a checkpoint family's MTP-head reader."""

    family: ClassVar[str]
    #: ``architectures[0]`` values this reader claims.
    architectures: ClassVar[tuple[str, ...]]
    contract: ClassVar[DraftContract]
    #: matches a source MTP tensor name; group 1 is the MTP layer index.
    LAYER_RE: ClassVar[re.Pattern[str]]
    #: (source prefix template, draft prefix); ``{layer}`` is the chosen MTP layer.
    PREFIX_REMAP: ClassVar[tuple[tuple[str, str], ...]]
    #: human hint for "no MTP tensors", e.g. ``model.mtp_layers.*``.
    MARKER: ClassVar[str]

    def mtp_layers(self, ckpt: SourceCheckpoint) -> tuple[int, ...]:
        """MTP layer indices present in the source, ascending."""
        found = {int(m.group(1)) for k in ckpt.weight_map if (m := self.LAYER_RE.match(k))}
        return tuple(sorted(found))

    def draft_name(self, source_name: str, layer: int) -> str | None:
        """The draft name for a source tensor of ``layer``, or ``None`` if not part of it."""
        for src, dst in self.PREFIX_REMAP:
            prefix = src.format(layer=layer)
            if source_name.startswith(prefix):
                return dst + source_name[len(prefix) :]
        return None

    @abstractmethod
    def draft_config(
        self, config: Mapping[str, Any], dtype: str | None
    ) -> tuple[dict[str, Any], ConfigChanges]:
        """Source config -> draft config that SGLang loads; ``dtype`` set when converting."""

    @abstractmethod
    def needs_remote_code(self, config: Mapping[str, Any]) -> bool:
        """Whether serving the *base* model from this config needs ``--trust-remote-code``."""

    @abstractmethod
    def target_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The base config as a stock transformers ``*ForCausalLM`` (the trunk, no MTP).

        ``fastmtp-export eval`` loads the target through it, without remote code.
        """

    def plan(self, ckpt: SourceCheckpoint, layer: int | None) -> HeadPlan:
        """Select and check the MTP tensors of one layer.

        Raises:
            SourceError: no MTP tensors, or the requested layer does not exist.
            ContractError: the layer lacks tensors SGLang needs, or has extra ones.
            ShapeMismatchError: a tensor's shape disagrees with ``config.json``.
        """
        layers = self.mtp_layers(ckpt)
        if not layers:
            raise SourceError(
                f"source {ckpt.path} ({ckpt.architecture}) has no {self.MARKER} tensors: "
                "it is a base model without its MTP head; pass a checkpoint that includes it"
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
            m = self.LAYER_RE.match(src)
            if m and int(m.group(1)) == layer and (dst := self.draft_name(src, layer)):
                names[dst] = src
        infos = {dst: ckpt.tensor(src) for dst, src in sorted(names.items())}
        shapes = {dst: info.shape for dst, info in infos.items()}
        problems = contract_problems(self.contract, ckpt.config, shapes)
        key_problems = [p for p in problems if p.startswith(("missing", "unexpected"))]
        if key_problems:
            raise ContractError(
                f"MTP layer {layer} in {ckpt.path} does not match SGLang's "
                f"{self.contract.sglang_class} ({'; '.join(key_problems)}); "
                "the checkpoint is incomplete or not a supported MTP layout"
            )
        if problems:
            expected = expected_shapes(self.contract, ckpt.config)
            name = next(n for n in sorted(shapes) if shapes[n] != expected[n])
            raise ShapeMismatchError(
                f"{names[name]} in {ckpt.weight_map[names[name]]} has shape "
                f"{list(shapes[name])} but config.json implies {list(expected[name])} "
                "(hidden_size / num_attention_heads / num_key_value_heads / head_dim / "
                "intermediate_size); config.json and weights are from different models"
            )
        return HeadPlan(self.family, self.contract, layer, layers, infos, dict(ckpt.config))
