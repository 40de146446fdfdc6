"""stdout carries results (text or JSON); stderr carries logs and progress."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import typer

from .._util.units import human_bytes

__all__ = ["emit_json", "human_bytes", "setup_logging"]


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
