"""Registry of checkpoint-family readers.

Adding a family (DeepSeek-V3 NextN, GLM-4.5, Qwen3-Next) means adding a module here
that defines an :class:`MTPReader` subclass decorated with :func:`register_reader`, and
importing it at the bottom of this file; no dispatcher is edited.
"""

from __future__ import annotations

from ...errors import SourceError
from ..checkpoint import SourceCheckpoint
from .base import ConfigChanges, HeadPlan, MTPReader

READERS: dict[str, MTPReader] = {}


def register_reader(cls: type[MTPReader]) -> type[MTPReader]:
    """Class decorator: make ``cls`` resolvable by family name and architecture."""
    READERS[cls.family] = cls()
    return cls


def supported() -> str:
    """``"mimo (MiMoForCausalLM)"``-style list for error messages."""
    return ", ".join(f"{f} ({', '.join(r.architectures)})" for f, r in sorted(READERS.items()))


def resolve_reader(ckpt: SourceCheckpoint) -> MTPReader:
    """The reader for ``ckpt``: by ``architectures[0]``, else by MTP tensor names.

    Raises:
        SourceError: nothing matches; names the architecture found and the families
            supported.
    """
    arch = ckpt.architecture
    for reader in READERS.values():
        if arch in reader.architectures:
            return reader
    for reader in READERS.values():  # renamed architecture but a familiar MTP layout
        if reader.mtp_layers(ckpt):
            return reader
    raise SourceError(
        f"source {ckpt.path} is {arch} with no MTP tensors of a supported family; "
        f"supported: {supported()}"
    )


from . import mimo  # noqa: E402  (registers itself; must follow register_reader)

__all__ = [
    "READERS",
    "ConfigChanges",
    "HeadPlan",
    "MTPReader",
    "mimo",
    "register_reader",
    "resolve_reader",
]
