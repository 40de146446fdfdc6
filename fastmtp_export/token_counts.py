"""Streamed, batched token counting per language, with a deterministic held-out slice.

Memory is bounded by ``languages x vocab`` int64 counters (two per language: counted
and held out), never by corpus size: texts are read, encoded in batches of
``batch_size`` through the fast tokenizer (which uses every core) and dropped.

No reader thread: encoding already keeps every core busy, and measured on 2 cores a
thread that parsed and encoded ahead made counting slower (GIL contention), not faster.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from .tokenizer import LocalTokenizer


@dataclass
class LanguageCounts:
    """Token counters of one language: ``counted`` builds the map, ``heldout`` scores it."""

    counted: NDArray[np.int64]  # [vocab]
    heldout: NDArray[np.int64]  # [vocab]
    records: int = 0
    heldout_records: int = 0


@dataclass
class TokenCounts:
    """Per-language counters over one vocabulary."""

    vocab_size: int
    holdout: float
    languages: dict[str, LanguageCounts] = field(default_factory=dict)

    def lang(self, lang: str) -> LanguageCounts:
        if lang not in self.languages:
            self.languages[lang] = LanguageCounts(
                np.zeros(self.vocab_size, dtype=np.int64),  # [vocab]
                np.zeros(self.vocab_size, dtype=np.int64),  # [vocab]
            )
        return self.languages[lang]

    def is_heldout(self, lang: str) -> bool:
        """Assign the next record of ``lang``: held out iff it crosses a multiple of 1/holdout.

        With ``holdout=0.05`` records 20, 40, 60... of each language are held out: exact,
        deterministic, and independent of how other languages interleave.
        """
        c = self.lang(lang)
        n = c.records + c.heldout_records
        held = int((n + 1) * self.holdout) > int(n * self.holdout)
        if held:
            c.heldout_records += 1
        else:
            c.records += 1
        return held

    def total(self) -> NDArray[np.int64]:
        """Counted tokens over all languages (the padding ranking)."""
        out = np.zeros(self.vocab_size, dtype=np.int64)  # [vocab]
        for c in self.languages.values():
            out += c.counted
        return out


def _encoded(
    samples: Iterable[tuple[str, str]], tokenizer: LocalTokenizer, size: int
) -> Iterator[tuple[list[str], list[list[int]]]]:
    """Batches of (languages, token ids)."""
    it = iter(samples)
    while batch := list(itertools.islice(it, size)):
        yield [lang for lang, _t in batch], tokenizer.encode_batch([t for _l, t in batch])


def count_tokens(
    samples: Iterable[tuple[str, str]],
    tokenizer: LocalTokenizer,
    *,
    holdout: float = 0.05,
    batch_size: int = 2048,
    on_batch: Callable[[int], None] | None = None,
) -> TokenCounts:
    """Count the tokens of ``(language, text)`` samples per language.

    Args:
        holdout: share of each language's records kept out of the counts for the
            coverage report (0 disables it).
        on_batch: progress callback, called with the number of records per batch.
    """
    if not 0 <= holdout < 1:
        raise ValueError("holdout must be in [0, 1)")
    counts = TokenCounts(tokenizer.vocab_size, holdout)
    for langs, ids in _encoded(samples, tokenizer, batch_size):
        groups: dict[tuple[str, bool], list[list[int]]] = {}
        for lang, row in zip(langs, ids, strict=True):
            groups.setdefault((lang, counts.is_heldout(lang)), []).append(row)
        for (lang, held), rows in groups.items():
            n = sum(map(len, rows))
            flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=n)
            c = counts.lang(lang)
            target = c.heldout if held else c.counted
            target += np.bincount(flat, minlength=counts.vocab_size)
        if on_batch is not None:
            on_batch(len(langs))
    return counts
