"""stdout carries results (text or JSON); stderr carries logs and progress."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import typer


def emit_json(doc: Any) -> None:
    """Pretty, key-sorted JSON on stdout."""
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))


def setup_logging(quiet: bool) -> None:
    """INFO lines from the library on stderr, or only warnings with ``--quiet``."""
    logger = logging.getLogger("fastmtp_export")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def human_bytes(n: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, like the Hub shows sizes)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
