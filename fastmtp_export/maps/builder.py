"""``token-map build``: corpora -> one FR-Spec map per language + coverage report.

Pipeline: :mod:`corpus` streams ``(language, text)`` records, :mod:`token_counts`
counts tokens per language with a held-out slice, :mod:`token_maps` ranks and pads
each language to the same K, and the held-out counts score every map on every
language (the coverage matrix, a cheap proxy for draft acceptance). The output
directory appears atomically with the maps and ``token_maps.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._util.atomic import atomic_directory
from .._util.hashing import sha256_file
from .._util.progress import byte_progress
from .._version import __version__
from ..errors import CorpusError, TokenMapError
from . import summary as ms
from .corpus import Chunk, CorpusFile, CorpusStats, ReadOptions, plan_chunks
from .counts import CHUNK_BYTES, CountJob, TokenCounts, count_corpora
from .lang import DetectorSpec
from .ranking import RANK_NAME, save_ranking
from .token_map import MAP_NAME, ranked_ids, save_token_map, select_hot_ids
from .union import EQUAL, UNION, check_weights, parse_weights, union_hot_ids

if TYPE_CHECKING:
    from .tokenizer import LocalTokenizer

log = logging.getLogger(__name__)

DEFAULT_SIZE = 32768


@dataclass(frozen=True)
class BuildResult:
    out: Path
    summary: ms.TokenMapSummary


def coverage_matrix(
    counts: TokenCounts, maps: dict[str, list[int]]
) -> dict[str, dict[str, float | None]]:
    """``[text_lang][map_lang]`` share of held-out tokens of text_lang that the map holds."""
    import numpy as np

    out: dict[str, dict[str, float | None]] = {}
    for text_lang, c in sorted(counts.languages.items()):
        total = int(c.heldout.sum())
        out[text_lang] = {
            map_lang: (
                round(int(c.heldout[np.asarray(ids, dtype=np.int64)].sum()) / total, 6)
                if total
                else None
            )
            for map_lang, ids in sorted(maps.items())
        }
    return out


def hot_maps(counts: TokenCounts, size: int, required: Sequence[int]) -> dict[str, list[int]]:
    """One K=``size`` map per language; shortfalls padded from the all-language ranking."""
    fallback = ranked_ids(counts.total())
    return {
        lang: select_hot_ids(
            ranked_ids(c.counted),
            size,
            required=required,
            fallback=fallback,
            vocab_size=counts.vocab_size,
        )
        for lang, c in sorted(counts.languages.items())
    }


def build_token_maps(
    corpora: Sequence[CorpusFile],
    tokenizer: LocalTokenizer,
    out: Path,
    *,
    size: int = DEFAULT_SIZE,
    sizes: Sequence[int] = (),
    lang_field: str = "lang",
    text_field: str = "text",
    detect: DetectorSpec | None = None,
    languages: Sequence[str] | None = None,
    skip_bad: bool = False,
    holdout: float = 0.05,
    batch_size: int = 2048,
    workers: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    overwrite: bool = False,
    progress: bool | None = None,
    union: int | None = None,
    weights: str = EQUAL,
    rank: int | None = None,
) -> BuildResult:
    """Count ``corpora`` with ``tokenizer`` and write one map per language into ``out``.

    Args:
        size: K of the written maps (equal for every language).
        sizes: extra K values scored in the coverage report only.
        holdout: share of each language's records held out for coverage.
        detect: detect the language of records that have none.
        workers: counting processes (default: one per CPU; 1 = in this process).
        union: also write one ``freq_union_<union>.pt`` map of this many ids holding the
            languages' rankings interleaved (:mod:`.union`).
        weights: the union's row shares: ``equal``, ``tokens`` or ``en=0.7,zh=0.3``.
        rank: also write each language's top ``rank`` ids with their token shares
            (``rank_<lang>_<rank>.json``, :mod:`.ranking`): the rows sglang_patch's
            draft buffer (K_u) fills beyond the map. At least ``size``.

    Raises:
        CorpusError, TokenizerError, TokenMapError, OutputError: with one-line messages;
            nothing is written on any error.
    """
    if not 0 <= holdout < 1:
        raise ValueError("holdout must be in [0, 1)")
    all_sizes = sorted({size, *sizes})
    for k in all_sizes:  # fail before counting, not after
        if not 0 < k <= tokenizer.vocab_size:
            raise TokenMapError(
                f"map size {k} must be between 1 and the vocab size {tokenizer.vocab_size}"
            )
    if union is not None:
        _check_union_args(union, weights, tokenizer.vocab_size, len(tokenizer.eos_ids))
    if rank is not None and not size <= rank <= tokenizer.vocab_size:
        raise TokenMapError(
            f"--rank {rank} must be between the map size {size} and the vocab size "
            f"{tokenizer.vocab_size}; it is K_u, the plugin's draft rows (e.g. 2 x --size)"
        )
    # entered first so a bad --out fails fast; the hidden temp dir stays empty until the end
    with atomic_directory(out, overwrite=overwrite, protect=[f.path for f in corpora]) as tmp:
        job = CountJob(
            tokenizer_file=str(tokenizer.file),
            vocab_size=tokenizer.vocab_size,
            read=ReadOptions(
                lang_field=lang_field,
                text_field=text_field,
                languages=tuple(languages) if languages else None,
                skip_bad=skip_bad,
            ),
            detect=detect,
            holdout=holdout,
            batch_size=batch_size,
        )
        chunks = plan_chunks(corpora, chunk_bytes)
        counts, stats = _count(chunks, job, tokenizer, workers, progress)
        required = list(tokenizer.eos_ids)
        maps_by_size = {k: hot_maps(counts, k, required) for k in all_sizes}
        coverage = {str(k): coverage_matrix(counts, maps_by_size[k]) for k in all_sizes}
        entries = {
            lang: _write_map(tmp, lang, ids, counts, required, coverage[str(size)][lang][lang])
            for lang, ids in maps_by_size[size].items()
        }
        if rank is not None:  # a ranking is the language's map at N = rank
            ranked = maps_by_size.get(rank) or hot_maps(counts, rank, required)
            held = coverage_matrix(counts, ranked)
            entries = {
                lang: e.model_copy(
                    update={
                        "ranking": _write_ranking(tmp, lang, ranked[lang], counts, held[lang][lang])
                    }
                )
                for lang, e in entries.items()
            }
        union_entry = None
        if union is not None:
            union_entry = _write_union(tmp, counts, union, weights, required)
        summary = ms.TokenMapSummary(
            format=ms.SUMMARY_FORMAT,
            format_version=3 if rank is not None else 2 if union_entry else 1,
            size=size,
            vocab_size=tokenizer.vocab_size,
            tokenizer=str(tokenizer.path),
            eos_ids=required,
            holdout=holdout,
            default_lang=max(entries, key=lambda lang: (entries[lang].tokens, lang)),
            languages=entries,
            coverage=coverage,
            corpora=[
                ms.CorpusEntry(path=str(f.path), lang=f.lang, size=f.path.stat().st_size)
                for f in corpora
            ],
            skipped_bad_records=stats.skipped_bad,
            skipped_undetected=stats.skipped_undetected,
            tool_version=__version__,
            union=union_entry,
        )
        (tmp / ms.SUMMARY_NAME).write_text(summary.canonical_json())
    return BuildResult(Path(out).absolute(), summary)


def _count(
    chunks: Sequence[Chunk],
    job: CountJob,
    tokenizer: LocalTokenizer,
    workers: int | None,
    progress: bool | None,
) -> tuple[TokenCounts, CorpusStats]:
    """Count with a byte progress bar over the corpora, then log what was skipped."""
    total_bytes = sum(c.nbytes for c in chunks)
    with byte_progress(total_bytes, "counting", enabled=progress) as advance:
        counts, stats = count_corpora(chunks, job, tokenizer, workers=workers, on_bytes=advance)
    if not counts.languages:
        raise CorpusError("the corpora hold no usable records; check the files and --lang-field")
    log.info(
        "counted %d records in %d languages (%s corpus bytes)",
        stats.records,
        len(counts.languages),
        f"{total_bytes:,}",
    )
    if stats.skipped_bad:
        log.warning(
            "skipped %d bad records, e.g. %s", stats.skipped_bad, "; ".join(stats.bad_examples)
        )
    if stats.skipped_undetected:
        log.warning("skipped %d records whose language was not detected", stats.skipped_undetected)
    for lang, c in counts.languages.items():
        if job.holdout and not c.heldout_records:
            log.warning("%s has too few records to hold any out: no coverage figure", lang)
    return counts, stats


def _write_map(
    directory: Path,
    lang: str,
    ids: list[int],
    counts: TokenCounts,
    required: Sequence[int],
    coverage: float | None,
) -> ms.LanguageSummary:
    c = counts.languages[lang]
    name = MAP_NAME.format(lang=lang, size=len(ids))
    save_token_map(directory / name, ids)
    return ms.LanguageSummary(
        file=name,
        sha256=sha256_file(directory / name),
        records=c.records,
        tokens=int(c.counted.sum()),
        distinct_tokens=int((c.counted > 0).sum()),
        padded=sum(1 for i in ids if c.counted[i] == 0 and i not in required),
        heldout_records=c.heldout_records,
        heldout_tokens=int(c.heldout.sum()),
        coverage=coverage,
    )


def _write_ranking(
    directory: Path, lang: str, ids: list[int], counts: TokenCounts, coverage: float | None
) -> ms.RankingSummary:
    """Write ``rank_<lang>_<N>.json``: the language's top N ``ids`` (EOS kept, shortfalls
    padded as maps are) and each one's share of its counted tokens."""
    import numpy as np

    c = counts.languages[lang]
    total = int(c.counted.sum())
    shares = (
        (c.counted[np.asarray(ids, dtype=np.int64)] / total).tolist() if total else [0.0] * len(ids)
    )
    name = RANK_NAME.format(lang=lang, size=len(ids))
    save_ranking(directory / name, ids, shares)
    return ms.RankingSummary(
        file=name, sha256=sha256_file(directory / name), size=len(ids), coverage=coverage
    )


def _check_union_args(union: int, weights: str, vocab_size: int, n_required: int) -> None:
    """Refuse a bad ``--union``/``--weights`` before the (long) count, not after it."""
    if not n_required <= union <= vocab_size:
        raise TokenMapError(
            f"--union {union} must be between {max(n_required, 1)} and the vocab size "
            f"{vocab_size}; it is the number of ids in the union map"
        )
    check_weights(weights)  # the syntax now; the languages once counted


def _write_union(
    directory: Path, counts: TokenCounts, size: int, weights: str, required: Sequence[int]
) -> ms.UnionSummary:
    """Write ``freq_union_<size>.pt`` from the full per-language rankings; its summary."""
    tokens = {lang: int(c.counted.sum()) for lang, c in counts.languages.items()}
    shares = parse_weights(weights, sorted(counts.languages), tokens)
    ids = union_hot_ids(
        {lang: ranked_ids(counts.languages[lang].counted) for lang in shares},
        shares,
        size,
        required=required,
        fallback=ranked_ids(counts.total()),
        vocab_size=counts.vocab_size,
    )
    name = MAP_NAME.format(lang=UNION, size=size)
    save_token_map(directory / name, ids)
    coverage = coverage_matrix(counts, {UNION: ids})
    return ms.UnionSummary(
        file=name,
        sha256=sha256_file(directory / name),
        size=size,
        weights={lang: round(w, 6) for lang, w in shares.items()},
        coverage={text: row[UNION] for text, row in coverage.items()},
    )
