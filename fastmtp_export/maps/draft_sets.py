"""Which ids a language set drafts over, and which set a batch of requests drafts with.

The one definition both sides use: sglang_patch's bank at serve time and ``eval
--choose`` when it predicts the plugin. Pure Python (and a dense share vector per
language when rankings ship), no SGLang.

A *language set* is the languages whose maps the active draft buffer of K_u rows
holds whole. Its slots are its languages' maps interleaved rank by rank, then their
rankings past K (``rank_<lang>_<N>``, :mod:`.ranking`), then the other languages', so
no row is wasted: a one-language batch drafts over its own top K_u ids. An artifact
without rankings keeps the old layout, a one-language set padded with repeats of its
own K ids (a repeated row yields the same logit and id: exactly its own map).

With rankings the plugin also knows each language's token shares, so it chooses the
set a batch drafts with by *expected accepted drafts*: from the share of each
request's tokens its set's slots hold (p), a K-step chain accepts about p + p² + p³,
summed over the batch. One more set competes then, every language
interleaved (each keeps its top rows, as a static union map does), which wins when a
batch spreads over more languages than any fitting set holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Container, Iterable, Mapping, Sequence
from itertools import combinations

LangSet = frozenset[str]
#: the start-up table of every language set's slots is capped at this many bytes; sets
#: of more languages than fit are not offered (their batches draft with fewer languages)
MAX_TABLE_BYTES = 64 * 2**20


def default_rows(size: int, n_langs: int, vocab: int) -> int:
    """K_u when the operator sets none: room for two languages' maps (K for one), capped at V."""
    return min(size * min(n_langs, 2), vocab)


def set_label(langs: LangSet) -> str:
    """``frozenset({"zh", "en"})`` -> ``"en+zh"`` (logs and metric labels)."""
    return "+".join(sorted(langs))


def _take(out: list[int], seen: set[int], lists: Sequence[Sequence[int]], rows: int) -> None:
    """Append ``lists`` interleaved rank by rank (deduplicated) until ``out`` has ``rows``."""
    for rank in range(max((len(ids) for ids in lists), default=0)):
        for ids in lists:
            if len(out) >= rows:
                return
            if rank < len(ids) and ids[rank] not in seen:
                seen.add(ids[rank])
                out.append(ids[rank])


def slot_ids(
    maps: Mapping[str, Sequence[int]],
    langs: Collection[str],
    rows: int,
    rankings: Mapping[str, Sequence[int]] | None = None,
) -> list[int]:
    """The ``rows`` full ids of the slots of the language set ``langs``.

    The set's maps first, interleaved rank by rank (deduplicated), so when the union
    does not fit every language loses only its tail; then, with ``rankings``, their
    rankings past the maps; then the other languages' maps and rankings; then repeats.
    Without rankings a single language is padded with repeats of its own ids only.
    """
    chosen = sorted(langs)
    others = sorted(set(maps) - set(chosen))
    out: list[int] = []
    seen: set[int] = set()
    _take(out, seen, [maps[lang] for lang in chosen], rows)
    if rankings:
        _take(out, seen, [rankings.get(lang, ()) for lang in chosen], rows)
    if len(chosen) > 1 or rankings:
        _take(out, seen, [maps[lang] for lang in others], rows)
        if rankings:
            _take(out, seen, [rankings.get(lang, ()) for lang in others], rows)
    base = len(out)
    while len(out) < rows:
        out.append(out[(len(out) - base) % base])
    return out


def fitting_sets(maps: Mapping[str, Sequence[int]], rows: int) -> list[LangSet]:
    """Every language, then every set of 2, 3, ... languages whose maps' union fits in ``rows``.

    A superset's union is never smaller, so the search stops at the first size where no
    set fits, or where the table would pass :data:`MAX_TABLE_BYTES`.
    """
    langs = sorted(maps)
    found = [frozenset({lang}) for lang in langs]
    for n in range(2, len(langs) + 1):
        fit = [
            frozenset(c)
            for c in combinations(langs, n)
            if len(set().union(*(maps[lang] for lang in c))) <= rows
        ]
        if not fit or (len(found) + len(fit)) * rows * 4 > MAX_TABLE_BYTES:
            break
        found += fit
    return found


def offered_sets(maps: Mapping[str, Sequence[int]], rows: int, with_all: bool) -> list[LangSet]:
    """:func:`fitting_sets`, plus every language at once when ``with_all`` and it does
    not fit already (the union-like set coverage choice may pick)."""
    sets = fitting_sets(maps, rows)
    every = frozenset(maps)
    if with_all and every not in sets:
        sets.append(every)
    return sets


def language_counts(langs: Iterable[str | None], default: str) -> Counter[str]:
    """Requests per language; unknown requests count as ``default`` (they draft with it)."""
    return Counter(lang or default for lang in langs)


def draft_set(counts: Counter[str], *, current: LangSet, sets: Container[LangSet]) -> LangSet:
    """The largest set of a batch's most frequent languages that is one of ``sets``.

    Ties prefer languages of ``current`` (no needless switch), then code order
    (deterministic). An empty batch keeps ``current``. The choice for artifacts without
    rankings (no shares to weigh coverage with).
    """
    ranked = sorted(counts, key=lambda lang: (-counts[lang], lang not in current, lang))
    for n in range(len(ranked), 0, -1):
        if (langs := frozenset(ranked[:n])) in sets:
            return langs
    return current


def expected_drafts(coverage: float, depth: int) -> float:
    """Expected accepted drafts of a K=``depth`` chain whose every draft is in the draft
    vocabulary with probability ``coverage``: ``p + p^2 + ... + p^depth`` (a chain stops
    at its first miss). Convex in ``p``: one request fully covered is worth more than
    two half covered, which a sum of coverages would call equal."""
    return sum(coverage**j for j in range(1, depth + 1))


def covered_set(
    counts: Counter[str],
    *,
    current: LangSet,
    coverage: Mapping[LangSet, Mapping[str, float]],
    depth: int = 3,
) -> LangSet:
    """The set whose slots give the batch the most expected accepted drafts.

    ``coverage[set][lang]``: the share of ``lang``'s tokens the set's slots hold, scored
    per request by :func:`expected_drafts`. Ties keep ``current``, then prefer fewer
    languages, then code order. An empty batch keeps ``current``.
    """
    if not counts:
        return current

    def score(s: LangSet) -> float:
        row = coverage[s]
        return sum(n * expected_drafts(row.get(lang, 0.0), depth) for lang, n in counts.items())

    return max(
        coverage,
        key=lambda s: (round(score(s), 9), s == current, -len(s), [-ord(c) for c in set_label(s)]),
    )


def prefill_choice(counts: Counter[str], current: LangSet) -> bool:
    """Whether a prefill's draft-extend keeps ``current``: it holds every new language.

    Only the new requests are in a prefill batch; keeping a set that already covers them
    drafts their first token over a superset of their maps and spares a switch back when
    the running requests draft next.
    """
    return set(counts) <= current


class SetTable:
    """Every set a draft buffer of ``rows`` offers, its slots, coverage and the choice.

    Args:
        maps: ``lang -> hot ids`` (all the same length K).
        rows: K_u.
        rankings: ``lang -> ids`` past the map; fill the rows instead of repeats.
        shares: ``lang -> {id: share of its tokens}``; with them the batch's set is the
            one of most expected accepted drafts, every language at once among the
            candidates.
        depth: K, the draft steps per round (the chain :func:`expected_drafts` scores).
    """

    def __init__(
        self,
        maps: Mapping[str, Sequence[int]],
        rows: int,
        rankings: Mapping[str, Sequence[int]] | None = None,
        shares: Mapping[str, Mapping[int, float]] | None = None,
        depth: int = 3,
    ) -> None:
        self.depth = depth
        self.sets = offered_sets(maps, rows, with_all=bool(shares))
        #: [S][rows] each set's full ids, in slot order
        self.slots = [slot_ids(maps, s, rows, rankings) for s in self.sets]
        #: coverage[set][lang]: the share of lang's tokens the set's slots hold
        self.coverage: dict[LangSet, dict[str, float]] | None = None
        if shares:
            self.coverage = _coverage(self.sets, self.slots, shares)

    def choose(self, counts: Counter[str], current: LangSet) -> LangSet:
        """The set a batch with these requests per language drafts with."""
        if self.coverage is not None:
            return covered_set(counts, current=current, coverage=self.coverage, depth=self.depth)
        return draft_set(counts, current=current, sets=set(self.sets))

    def choose_prefill(self, counts: Counter[str], current: LangSet) -> LangSet:
        """The set a prefill's draft-extend uses: ``current`` when it holds every new
        language (no switch back when the running requests draft next)."""
        return current if prefill_choice(counts, current) else self.choose(counts, current)


def _coverage(
    sets: Sequence[LangSet],
    slots: Sequence[Sequence[int]],
    shares: Mapping[str, Mapping[int, float]],
) -> dict[LangSet, dict[str, float]]:
    """coverage[set][lang]: the summed shares of the distinct ids in the set's slots
    (vectorized: start-up cost stays small at K_u = 65,536 rows and many sets)."""
    import numpy as np

    top = 1 + max([max(ids) for ids in slots] + [max(r, default=0) for r in shares.values()])
    dense = {}
    for lang, row in shares.items():
        d = np.zeros(top, dtype=np.float64)  # [V'] share per id
        d[np.fromiter(row.keys(), dtype=np.int64, count=len(row))] = list(row.values())
        dense[lang] = d
    out = {}
    for s, ids in zip(sets, slots, strict=True):
        held = np.unique(np.asarray(ids, dtype=np.int64))  # [<= K_u]
        out[s] = {lang: float(d[held].sum()) for lang, d in dense.items()}
    return out
