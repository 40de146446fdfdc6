"""Registry of checkpoint-family readers.

Adding a family means adding a module here that defines an :class:`MTPReader` subclass
decorated with :func:`register_reader`, and importing it at the bottom of this file; no
dispatcher is edited.
"""

from __future__ import annotations

from ...errors import FastMTPError, SourceError
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


def detect_reader(ckpt: SourceCheckpoint) -> MTPReader | None:
    """The reader for ``ckpt``: by ``architectures[0]``, else by MTP tensor names."""
    arch = ckpt.architecture
    for reader in READERS.values():
        if arch in reader.architectures:
            return reader
    for reader in READERS.values():  # renamed architecture but a familiar MTP layout
        try:
            if reader.mtp_layers(ckpt):
                return reader
        except FastMTPError:  # a config without the keys this layout is numbered by
            continue
    return None


def resolve_reader(ckpt: SourceCheckpoint, family: str | None = None) -> MTPReader:
    """The reader for ``ckpt``, detected from its config, or ``family`` when forced.

    Raises:
        SourceError: nothing matches (names the architecture found and the families
            supported), an unknown ``family``, or a forced ``family`` whose MTP layout
            the checkpoint does not have (names the detected one).
    """
    detected = detect_reader(ckpt)
    if family is None:
        if detected is None:
            raise SourceError(
                f"source {ckpt.path} is {ckpt.architecture} with no MTP tensors of a supported "
                f"family; supported: {supported()}"
            )
        return detected
    reader = READERS.get(family)
    if reader is None:
        raise SourceError(
            f"unknown --family {family!r}; choose one of: {', '.join(sorted(READERS))}"
        )
    if reader is not detected and not reader.mtp_layers(ckpt):
        seen = f"a {detected.family} checkpoint" if detected else f"{ckpt.architecture}"
        raise SourceError(
            f"--family {family} does not match {ckpt.path}: it is {seen} with no "
            f"{reader.MARKER} tensors; drop --family to detect it"
        )
    return reader


# each module registers itself; they must follow register_reader. Order matters only
# for checkpoints whose architecture no reader claims (detected by tensor names).
from . import (  # noqa: E402
    deepseek_v3,
    glm4_moe,
    longcat_flash,
    mimo,
    mimo_v2,
    qwen3_5,
    qwen3_next,
    step3p5,
)

__all__ = [
    "READERS",
    "ConfigChanges",
    "HeadPlan",
    "MTPReader",
    "deepseek_v3",
    "glm4_moe",
    "longcat_flash",
    "mimo",
    "mimo_v2",
    "qwen3_5",
    "qwen3_next",
    "register_reader",
    "resolve_reader",
    "step3p5",
]
