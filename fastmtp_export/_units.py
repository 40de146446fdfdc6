"""Human-readable sizes, for the CLI and the model card alike."""

from __future__ import annotations


def human_bytes(n: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, like the Hub shows sizes)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
