"""Progress bars on stderr, never stdout (stdout carries results and ``--json``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager


@contextmanager
def progress(
    total: int, desc: str, *, unit: str = "B", enabled: bool | None = None
) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(n)`` callback drawing a bar on stderr.

    ``unit="B"`` counts bytes (scaled, KiB/MiB); any other unit counts items.
    ``enabled=None`` shows the bar only when stderr is a terminal, so logs and CI
    output stay clean.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda _n: None
        return
    from tqdm import tqdm

    scale = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
    with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, **scale) as bar:
        yield bar.update


def byte_progress(
    total: int, desc: str, *, enabled: bool | None = None
) -> AbstractContextManager[Callable[[int], None]]:
    """:func:`progress` in bytes."""
    return progress(total, desc, unit="B", enabled=enabled)
