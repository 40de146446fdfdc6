"""Human-readable sizes and shares, for the CLI and the model card alike."""

from __future__ import annotations

from collections.abc import Mapping


def percent(share: float | None) -> str:
    """0.9876 -> '98.8%'; ``None`` (not measured) -> '-'."""
    return "-" if share is None else f"{100 * share:.1f}%"


def percents(by_lang: Mapping[str, float | None] | None) -> str:
    """{'zh': None, 'en': 0.99} -> 'en 99.0%, zh -' (by code; '' when there are none)."""
    return ", ".join(f"{k} {percent(v)}" for k, v in sorted((by_lang or {}).items()))


def human_bytes(n: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, like the Hub shows sizes)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
