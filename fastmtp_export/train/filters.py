"""Which distilled answers to leave out of training: cut answers and degenerate loops.

FastMTP cleans its self-distilled data before training (truncation and repetition
filters). A small model's answers need it more: sampled or greedy, some run to the
length limit (``finish_reason: "length"``, the answer stops mid-sentence, and the head
learns to continue text that the server never ends that way again) and some loop on
one phrase (a run of repeated n-grams teaches the head to predict the loop, which the
base model itself produces only on the same degenerate prefixes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CUT = "cut"
REPETITIVE = "repetitive"


@dataclass(frozen=True)
class DataFilter:
    """The filters ``train`` applies; the defaults keep every record."""

    drop_cut: bool = False  #: drop answers with finish_reason "length"
    max_repeat: float = 1.0  #: drop answers whose repeated-n-gram share exceeds this; 1 = off
    ngram: int = 4  #: n of the repeated n-grams, in tokens

    def verdict(self, record: Any, target: Sequence[int]) -> str | None:
        """Why ``record`` (its trained token ids ``target``) is dropped, or None to keep it."""
        if self.drop_cut and isinstance(record, dict) and record.get("finish_reason") == "length":
            return CUT
        if self.max_repeat < 1 and repeat_share(target, self.ngram) > self.max_repeat:
            return REPETITIVE
        return None


def repeat_share(ids: Sequence[int], n: int = 4) -> float:
    """Share of the n-grams of ``ids`` that already occurred earlier in ``ids``.

    0 for text that never repeats a phrase of n tokens; close to 1 for a loop.
    Sequences shorter than n have no n-grams and score 0.
    """
    total = len(ids) - n + 1
    if total <= 0:
        return 0.0
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for i in range(total):
        gram = tuple(ids[i : i + n])
        repeats += gram in seen
        seen.add(gram)
    return repeats / total
