"""Streamed, batched token counting per language, with a deterministic held-out slice.

Memory is bounded by ``languages x vocab`` int64 counters (two per language: counted
and held out), never by corpus size: records are read, encoded in batches through the
fast tokenizer and dropped.

Large corpora are split into line-aligned byte ranges (:class:`~.corpus.Chunk`) counted
by worker processes, one single-threaded tokenizer each, and the integer counters are
summed: the result is identical for any number of workers. Measured on 2 cores, this
beats one process whose tokenizer uses every core (36 s vs 50 s on 200 MB): JSON
parsing and id extraction are Python work that a single process cannot overlap.

A record is held out when the crc32 of its line falls in the first ``holdout`` share
of the hash range: deterministic, and independent of file order and chunking.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .corpus import Chunk, CorpusStats, ReadOptions, read_chunk
from .lang import DetectorSpec

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from .tokenizer import LocalTokenizer

#: bytes per unit of parallel work; small enough for an even split and steady progress
CHUNK_BYTES = 16 * 2**20


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
    languages: dict[str, LanguageCounts] = field(default_factory=dict)

    def lang(self, lang: str) -> LanguageCounts:
        if lang not in self.languages:
            self.languages[lang] = LanguageCounts(
                np.zeros(self.vocab_size, dtype=np.int64),  # [vocab]
                np.zeros(self.vocab_size, dtype=np.int64),  # [vocab]
            )
        return self.languages[lang]

    def merge(self, other: TokenCounts) -> None:
        for lang, o in other.languages.items():
            c = self.lang(lang)
            c.counted += o.counted
            c.heldout += o.heldout
            c.records += o.records
            c.heldout_records += o.heldout_records

    def total(self) -> NDArray[np.int64]:
        """Counted tokens over all languages (the padding ranking)."""
        out = np.zeros(self.vocab_size, dtype=np.int64)  # [vocab]
        for c in self.languages.values():
            out += c.counted
        return out


@dataclass(frozen=True)
class CountJob:
    """Everything a worker process needs to count a chunk (picklable)."""

    tokenizer_file: str
    vocab_size: int
    read: ReadOptions = ReadOptions()
    detect: DetectorSpec | None = None
    holdout: float = 0.05
    batch_size: int = 2048


def count_chunk(
    chunk: Chunk,
    job: CountJob,
    tokenizer: LocalTokenizer,
    detect: Callable[[str], str | None] | None,
) -> tuple[TokenCounts, CorpusStats]:
    """Count one chunk: batches of ``job.batch_size`` records through ``tokenizer``."""
    counts = TokenCounts(job.vocab_size)
    stats = CorpusStats()
    threshold = job.holdout * 2**32
    samples = read_chunk(chunk, job.read, stats, detect)
    while batch := list(itertools.islice(samples, job.batch_size)):
        ids = tokenizer.encode_batch([text for _lang, text, _crc in batch])
        groups: dict[tuple[str, bool], list[list[int]]] = {}
        for (lang, _text, crc), row in zip(batch, ids, strict=True):
            groups.setdefault((lang, crc < threshold), []).append(row)
        for (lang, held), rows in groups.items():
            n = sum(map(len, rows))
            flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=n)
            c = counts.lang(lang)
            if held:
                c.heldout += np.bincount(flat, minlength=job.vocab_size)
                c.heldout_records += len(rows)
            else:
                c.counted += np.bincount(flat, minlength=job.vocab_size)
                c.records += len(rows)
    return counts, stats


def default_workers() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def count_corpora(
    chunks: Sequence[Chunk],
    job: CountJob,
    tokenizer: LocalTokenizer,
    *,
    workers: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[TokenCounts, CorpusStats]:
    """Count every chunk, in worker processes when there are several chunks and CPUs.

    ``tokenizer`` is used directly in the single-process path (its own threads use
    every core); workers load ``job.tokenizer_file`` single-threaded.
    """
    if not 0 <= job.holdout < 1:
        raise ValueError("holdout must be in [0, 1)")
    workers = min(workers or default_workers(), len(chunks))
    counts, stats = TokenCounts(job.vocab_size), CorpusStats()
    if workers <= 1:
        detect = job.detect.build() if job.detect else None
        results: Iterator[tuple[Chunk, TokenCounts, CorpusStats]] = (
            (c, *count_chunk(c, job, tokenizer, detect)) for c in chunks
        )
        for chunk, part, part_stats in results:
            counts.merge(part)
            stats.merge(part_stats)
            if on_bytes is not None:
                on_bytes(chunk.nbytes)
        return counts, stats
    import multiprocessing

    # spawn: a forked child would inherit the tokenizer's thread pool state
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        for chunk, part, part_stats in pool.imap_unordered(
            functools.partial(_worker_count, job=job), chunks
        ):
            counts.merge(part)
            stats.merge(part_stats)
            if on_bytes is not None:
                on_bytes(chunk.nbytes)
    return counts, stats


def _init_worker() -> None:
    # one tokenizer thread per process: the processes are the parallelism
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"


@functools.cache
def _worker_tools(job: CountJob) -> tuple[LocalTokenizer, Callable[[str], str | None] | None]:
    from pathlib import Path

    from tokenizers import Tokenizer

    from .tokenizer import LocalTokenizer

    path = Path(job.tokenizer_file)
    tok = LocalTokenizer(path, path, Tokenizer.from_file(job.tokenizer_file), (), job.vocab_size)
    return tok, job.detect.build() if job.detect else None


def _worker_count(chunk: Chunk, job: CountJob) -> tuple[Chunk, TokenCounts, CorpusStats]:
    tok, detect = _worker_tools(job)
    return (chunk, *count_chunk(chunk, job, tok, detect))
