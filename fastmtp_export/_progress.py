"""Progress bars on stderr, never stdout (stdout carries results and ``--json``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def byte_progress(
    total: int, desc: str, *, enabled: bool | None = None
) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(nbytes)`` callback drawing a byte bar on stderr.

    ``enabled=None`` shows the bar only when stderr is a terminal, so logs and CI
    output stay clean.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda _n: None
        return
    from tqdm import tqdm

    with tqdm(
        total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr
    ) as bar:
        yield bar.update
