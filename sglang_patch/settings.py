"""When the plugin acts: version guard, kill switch, and the artifact's language maps.

The plugin does nothing unless the draft directory holds a fastmtp-export manifest
with token maps; an explicit ``--speculative-token-map`` wins (stock behaviour), and
``FASTMTP_SGLANG_PATCH=0`` disables it entirely. It refuses unknown SGLang versions,
whose private seams may have moved, unless ``FASTMTP_SGLANG_PATCH_ANY_VERSION=1``.
No SGLang import here: the hook module passes the facts in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fastmtp_export import manifest as mf
from fastmtp_export.errors import FastMTPError
from fastmtp_export.token_maps import load_token_map

#: SGLang versions whose hooked seams sglang_patch/INVENTORY.md was checked against
SUPPORTED_SGLANG = ("0.5.23",)
ENABLE_ENV = "FASTMTP_SGLANG_PATCH"
ANY_VERSION_ENV = "FASTMTP_SGLANG_PATCH_ANY_VERSION"


def disabled() -> bool:
    """``FASTMTP_SGLANG_PATCH=0`` (or ``false``/``off``) turns the plugin off."""
    return os.environ.get(ENABLE_ENV, "1").strip().lower() in ("0", "false", "off", "no")


def version_problem(version: str) -> str | None:
    """A one-line refusal for an unsupported SGLang version, or ``None``."""
    if version in SUPPORTED_SGLANG or os.environ.get(ANY_VERSION_ENV) == "1":
        return None
    return (
        f"fastmtp sglang_patch supports SGLang {', '.join(SUPPORTED_SGLANG)}, found {version}; "
        f"install a supported SGLang, set {ENABLE_ENV}=0 to run without the plugin, or "
        f"{ANY_VERSION_ENV}=1 to try anyway"
    )


@dataclass(frozen=True)
class ArtifactMaps:
    """The validated maps of a draft artifact."""

    maps: dict[str, list[int]]
    default: str
    size: int


def artifact_maps(draft_dir: Path) -> ArtifactMaps | None:
    """The language maps of ``draft_dir``, or ``None`` when it is not a map-carrying artifact.

    Maps are validated as the exporter does (ids within the draft config's vocab, no
    duplicates, EOS present, one K).

    Raises:
        FastMTPError: the artifact claims maps that are missing or invalid.
    """
    if not (draft_dir / mf.MANIFEST_NAME).is_file():
        return None
    manifest = mf.load(draft_dir)
    info = manifest.token_maps
    if info is None:
        return None
    try:
        vocab = int(json.loads((draft_dir / "config.json").read_text())["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FastMTPError(f"{draft_dir}/config.json has no usable vocab_size ({exc})") from exc
    maps = {
        lang: load_token_map(
            draft_dir / e.file, vocab_size=vocab, required=info.required_ids, size=info.size
        )
        for lang, e in info.languages.items()
    }
    return ArtifactMaps(maps, info.default_lang, info.size)
