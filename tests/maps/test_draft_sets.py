"""Draft sets with rankings: every row used, and the batch's set chosen by coverage.

The plugin's bank and ``eval --choose`` share :mod:`fastmtp_export.maps.draft_sets`; the
bank is checked here with rankings and shares (its behaviour without them is in
tests/sglang_patch/test_sglang_patch_logic.py).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from fastmtp_export.maps.draft_sets import (
    SetTable,
    covered_set,
    fitting_sets,
    offered_sets,
    slot_ids,
)
from sglang_patch.bank import DraftVocabBank

V, H = 16, 2
EN, ZH, JA = [1, 2, 3, 0], [7, 8, 9, 0], [4, 5, 6, 0]
MAPS = {"en": EN, "zh": ZH, "ja": JA}
RANK = {"en": [1, 2, 3, 0, 10, 11, 12, 13], "zh": [7, 8, 9, 0, 14, 15, 10, 2], "ja": JA}


def _set(*langs: str) -> frozenset[str]:
    return frozenset(langs)


def test_one_language_fills_its_rows_from_its_own_ranking_not_repeats() -> None:
    assert slot_ids(MAPS, ["en"], 8, RANK) == [1, 2, 3, 0, 10, 11, 12, 13]
    # without rankings: repeats of its own map (the old layout, exactly its K-row map)
    assert slot_ids(MAPS, ["en"], 8) == EN + EN
    # a ranking shorter than the rows: then the other languages' maps, then rankings
    assert slot_ids(MAPS, ["ja"], 8, RANK) == [4, 5, 6, 0, 1, 7, 2, 8]


def test_a_set_keeps_every_map_whole_before_any_ranking_tail() -> None:
    got = slot_ids(MAPS, ["en", "zh"], 10, RANK)
    assert got[:7] == [1, 7, 2, 8, 3, 9, 0]  # both maps, interleaved, EOS once
    assert got[7:] == [10, 14, 11]  # then both rankings past their maps, interleaved
    assert len(set(got)) == len(got)


def test_every_language_at_once_is_offered_only_with_shares() -> None:
    assert _set("en", "ja", "zh") not in fitting_sets(MAPS, 8)
    assert offered_sets(MAPS, 8, with_all=True)[-1] == _set("en", "ja", "zh")
    assert _set("en", "ja", "zh") not in offered_sets(MAPS, 8, with_all=False)


def test_covered_set_maximises_the_batch_expected_coverage() -> None:
    cov = {
        _set("en"): {"en": 0.9, "zh": 0.1, "ja": 0.1},
        _set("zh"): {"en": 0.2, "zh": 0.9, "ja": 0.1},
        _set("en", "zh"): {"en": 0.8, "zh": 0.8, "ja": 0.1},
        _set("en", "ja", "zh"): {"en": 0.7, "zh": 0.7, "ja": 0.7},
    }
    en = _set("en")
    assert covered_set(Counter(en=8), current=en, coverage=cov) == en
    # 31 en + 1 zh: one zh request is not worth 31 x 0.1 of English coverage
    assert covered_set(Counter(en=31, zh=1), current=en, coverage=cov) == en
    assert covered_set(Counter(en=4, zh=4), current=en, coverage=cov) == _set("en", "zh")
    # three languages evenly: the every-language set wins (2.1 > 1.7)
    assert covered_set(Counter(en=1, zh=1, ja=1), current=en, coverage=cov) == _set(
        "en", "ja", "zh"
    )
    assert covered_set(Counter(), current=_set("zh"), coverage=cov) == _set("zh")
    # a tie keeps the current set
    tie = {_set("en"): {"en": 0.5}, _set("zh"): {"en": 0.5}}
    assert covered_set(Counter(en=1), current=_set("zh"), coverage=tie) == _set("zh")


def _shares(ranking: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    """Geometric shares down each ranking (the shape of real token frequencies)."""
    out = {}
    for lang, ids in ranking.items():
        w = [0.5**r for r in range(len(ids))]
        out[lang] = {i: x / (2 * sum(w)) for i, x in zip(ids, w, strict=True)}
    return out


@pytest.fixture
def head() -> torch.Tensor:
    return torch.randn(V, H)  # [V, H]


def test_bank_with_rankings_drafts_one_language_over_its_top_rows(head: torch.Tensor) -> None:
    bank = DraftVocabBank(MAPS, head, default="en", rows=8, rankings=RANK, shares=_shares(RANK))
    assert bank.active_ids.tolist() == [1, 2, 3, 0, 10, 11, 12, 13]
    assert torch.equal(bank.active_head, head[bank.active_ids])
    assert bank.coverage is not None
    assert _set("en", "ja", "zh") in bank.sets  # offered with shares
    assert bank.choose(Counter(en=5)) == _set("en")
    # an even three-language batch: ja's set holds all of ja and the top of en and zh
    # (its ranking is short, so the rest of its rows come from theirs), which covers
    # more of this batch than the pair the request counts would pick
    batch = Counter(en=2, zh=2, ja=2)
    cov = bank.coverage

    def score(s: frozenset[str]) -> float:
        return sum(n * cov[s][lang] for lang, n in batch.items())

    assert bank.choose(batch) == _set("ja")
    assert score(_set("ja")) > score(_set("en", "zh"))
    assert score(_set("ja")) == max(score(s) for s in bank.sets)
    bank.switch(bank.choose(Counter(zh=3, en=3)))
    assert bank.active == _set("en", "zh")
    assert set(EN) | set(ZH) <= set(bank.active_ids.tolist())
    for i in [1, 7, 9, 10]:  # every held id round-trips through the inverse
        assert int(bank.to_full(bank.to_slots(torch.tensor(i)))) == i


def test_bank_coverage_is_the_share_of_each_language_its_slots_hold(head: torch.Tensor) -> None:
    shares = _shares(RANK)
    bank = DraftVocabBank(MAPS, head, default="en", rows=8, rankings=RANK, shares=shares)
    assert bank.coverage is not None
    for langs, index in bank.sets.items():
        held = set(bank.table[index].tolist())
        for lang, row in shares.items():
            want = sum(v for i, v in row.items() if i in held)
            assert bank.coverage[langs][lang] == pytest.approx(want), (langs, lang)


def test_bank_without_shares_chooses_by_request_counts(head: torch.Tensor) -> None:
    bank = DraftVocabBank(MAPS, head, default="en", rows=8, rankings=RANK)
    assert bank.coverage is None
    assert _set("en", "ja", "zh") not in bank.sets
    # the most frequent two languages that fit
    assert bank.choose(Counter(en=1, zh=3, ja=2)) == _set("ja", "zh")


def test_disjoint_languages_keep_their_top_two_pair_under_coverage_choice() -> None:
    """The oracle's case (languages share no token): with shares, a crowded batch of four
    languages still drafts with its two most frequent languages' maps whole, as the
    request-count rule did (the every-language set covers only half of each), so the
    plugin keeps its lead over a union there (docs/sglang_patch.md, the oracle table)."""
    import random

    k = 8
    maps = {lang: list(range(i * k, (i + 1) * k)) for i, lang in enumerate("abcd")}
    shares = {lang: dict.fromkeys(ids, 1 / k) for lang, ids in maps.items()}
    table = SetTable(maps, 2 * k, rankings=maps, shares=shares)
    assert frozenset("abcd") in table.sets  # offered, and never the best here
    rng = random.Random(0)
    for _ in range(200):
        counts = Counter(rng.choices("abcd", k=32))
        top = sorted(counts, key=lambda x: (-counts[x], x))
        got = table.choose(counts, frozenset({"a"}))
        assert len(got) == 2, counts
        # the pair holds the two most frequent languages (ties: any of the tied ones)
        assert sum(counts[x] for x in got) == counts[top[0]] + counts[top[1]], (counts, got)
