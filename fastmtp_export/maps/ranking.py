"""A language's ranking past its map: ``rank_<lang>_<N>.json``, ids and token shares.

A map holds a language's top K ids; the plugin's draft buffer holds K_u >= K rows. The
ranking fills the rows a one-language batch would otherwise waste (issue 27: each
language's own top 2K ids beat a six-language union of 2K rows on every language), and
its shares let the plugin weigh a set's coverage of each language in a mixed batch.

Layout: JSON (no pickle, and not a ``.safetensors`` file an artifact's weight listing
would take for a shard), ``{"ids": [N ints], "shares": [N floats]}``: the language's
top N ids in rank order (EOS included, shortfalls padded as maps are) and each id's
share of the language's counted tokens (0 for padding).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._util.atomic import atomic_write
from ..errors import TokenMapError

#: file name of one ranking at the artifact root, beside the maps
RANK_NAME = "rank_{lang}_{size}.json"


@dataclass(frozen=True)
class Ranking:
    """``ids`` [N] in rank order and their token ``shares`` [N] (same order)."""

    ids: list[int]
    shares: list[float]


def token_shares(
    rankings: Mapping[str, Ranking], langs: Collection[str]
) -> dict[str, dict[int, float]] | None:
    """``lang -> {id: share}`` when every one of ``langs`` has a ranking, else ``None``:
    coverage of a draft set must compare every language like with like."""
    if set(rankings) != set(langs):
        return None
    return {lang: dict(zip(r.ids, r.shares, strict=True)) for lang, r in rankings.items()}


def save_ranking(path: Path, ids: Sequence[int], shares: Sequence[float]) -> None:
    """Write a ranking atomically (shares rounded to 9 significant digits)."""
    if len(ids) != len(shares):
        raise ValueError("ids and shares differ in length")
    doc = {"ids": [int(i) for i in ids], "shares": [float(f"{x:.9g}") for x in shares]}
    atomic_write(path, (json.dumps(doc, separators=(",", ":")) + "\n").encode())


def load_ranking(path: Path, *, vocab_size: int, size: int | None = None) -> Ranking:
    """Read and validate a ranking.

    Raises:
        TokenMapError: unreadable, wrong keys, ids out of range or repeated, shares not
            finite and non-negative or summing past 1; one line naming the file.
    """
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TokenMapError(f"cannot read the ranking {path} ({exc}); re-export it") from exc
    problem = _problem(doc, vocab_size, size)
    if problem:
        raise TokenMapError(f"ranking {path}: {problem}; rebuild it with token-map build")
    return Ranking(list(doc["ids"]), [float(x) for x in doc["shares"]])


def _problem(doc: object, vocab_size: int, size: int | None) -> str | None:
    if not isinstance(doc, dict) or set(doc) != {"ids", "shares"}:
        return "not an object of exactly 'ids' and 'shares'"
    ids, shares = doc["ids"], doc["shares"]
    if not isinstance(ids, list) or not isinstance(shares, list) or not ids:
        return "'ids' and 'shares' must be non-empty lists"
    if len(ids) != len(shares):
        return f"{len(ids)} ids but {len(shares)} shares"
    if size is not None and len(ids) != size:
        return f"{len(ids)} ids, but the manifest says {size}"
    if not all(type(i) is int and 0 <= i < vocab_size for i in ids):
        return f"ids that are not integers in the vocabulary [0, {vocab_size})"
    if len(set(ids)) != len(ids):
        return "repeated ids"
    ok = all(type(x) in (int, float) and math.isfinite(x) and x >= 0 for x in shares)
    if not ok:
        return "shares that are not finite non-negative numbers"
    if (total := math.fsum(shares)) > 1 + 1e-6:
        return f"shares summing to {total:.6f} > 1"
    return None
