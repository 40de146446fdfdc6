"""Ranking files: what the plugin reads beyond the maps is validated like the maps are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastmtp_export.errors import TokenMapError
from fastmtp_export.maps.ranking import load_ranking, save_ranking


def test_round_trip(tmp_path: Path) -> None:
    save_ranking(tmp_path / "r.json", [5, 3, 0], [0.5, 0.25, 0.125])
    r = load_ranking(tmp_path / "r.json", vocab_size=8, size=3)
    assert r.ids == [5, 3, 0]
    assert r.shares == [0.5, 0.25, 0.125]


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"ids": [1, 2]}, "exactly 'ids' and 'shares'"),
        ({"ids": [], "shares": []}, "non-empty lists"),
        ({"ids": [1, 2], "shares": [0.1]}, "2 ids but 1 shares"),
        ({"ids": [1, 9], "shares": [0.1, 0.1]}, "integers in the vocabulary [0, 8)"),
        ({"ids": [1, True], "shares": [0.1, 0.1]}, "integers in the vocabulary"),
        ({"ids": [1, 1], "shares": [0.1, 0.1]}, "repeated ids"),
        ({"ids": [1, 2], "shares": [0.1, -0.1]}, "finite non-negative"),
        ({"ids": [1, 2], "shares": [0.9, 0.9]}, "summing to 1.800000 > 1"),
        ({"ids": [1, 2, 3], "shares": [0.1, 0.1, 0.1]}, "3 ids, but the manifest says 2"),
    ],
)
def test_bad_rankings_are_one_line_errors(tmp_path: Path, doc: dict, needle: str) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(TokenMapError) as err:
        load_ranking(path, vocab_size=8, size=2 if "manifest" in needle else None)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)
    assert "token-map build" in str(err.value)


def test_unreadable_ranking(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_bytes(b"\xff{")
    with pytest.raises(TokenMapError, match="cannot read the ranking"):
        load_ranking(tmp_path / "r.json", vocab_size=8)
