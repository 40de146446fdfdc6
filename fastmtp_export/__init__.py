"""fastmtp-export: turn a trained FastMTP MTP head into a small SGLang draft artifact.

The public API is imported lazily so that ``fastmtp-export --help`` and
``import fastmtp_export`` stay fast (no torch, no pydantic until needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .artifact.export import ExportResult, export_draft
    from .artifact.inspect import ArtifactReport, inspect_artifact
    from .errors import FastMTPError

_LAZY = {
    "ArtifactReport": "artifact.inspect",
    "inspect_artifact": "artifact.inspect",
    "FastMTPError": "errors",
    "ExportResult": "artifact.export",
    "export_draft": "artifact.export",
}

__all__ = [
    "ArtifactReport",
    "ExportResult",
    "FastMTPError",
    "__version__",
    "export_draft",
    "inspect_artifact",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
