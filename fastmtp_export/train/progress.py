"""Training progress on stderr: a bar with the loss per step position on a terminal,
otherwise a log line every twentieth of the run (CI logs and files stay readable)."""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any

log = logging.getLogger("fastmtp_export.train")


def loss_text(losses: list[float]) -> str:
    """``"2.31 / 3.02 / 3.55"``: step 1 first."""
    return " / ".join(f"{x:.3f}" for x in losses)


class Reporter:
    """Context manager reporting each optimizer step's per-position loss."""

    def __init__(self, total: int, start: int, steps: int, *, enabled: bool | None) -> None:
        self.total, self.step, self.steps = total, start, steps
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        self.quiet = enabled is False
        self.every = max(1, total // 20)
        self.bar: Any = None

    def __enter__(self) -> Reporter:
        if self.tty and not self.quiet:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total, initial=self.step, desc="train", unit="step", file=sys.stderr
            )
        return self

    def update(self, losses: list[float], lr: float) -> None:
        self.step += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss k=1..{self.steps}: {loss_text(losses)}", refresh=False)
            self.bar.update(1)
        elif not self.quiet and (self.step % self.every == 0 or self.step == self.total):
            log.info("step %d/%d: loss %s (lr %.2e)", self.step, self.total, loss_text(losses), lr)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.bar is not None:
            self.bar.close()
