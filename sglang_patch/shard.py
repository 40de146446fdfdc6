"""Draft slots for a vocabulary-parallel head (TP > 1): each rank scores rows it holds.

At TP > 1 SGLang keeps rows ``[r * P, (r + 1) * P)`` of the target ``lm_head`` on rank
``r`` (P: rows per rank, padded), and the draft's logits processor all-gathers every
rank's logits along the vocabulary in rank order. Stock SGLang 0.5.23 slices the rank's
shard with *global* hot ids and crashes (``IndexError`` at start-up). A reduced draft
vocabulary keeps SGLang's own shape instead:

- the draft slots are ``size`` blocks of ``width`` W; block ``r`` holds the hot ids rank
  ``r`` owns, so rank ``r`` gathers its [W, H] head rows from its own shard: no
  collective, at start-up or per switch, and no copy of other ranks' rows;
- the gathered draft logits [B, size * W] are then in slot order, and ``hot_token_id``
  (the same [size * W] global ids on every rank) maps a slot to its token as at TP 1;
- W is the largest share any rank holds of any set, so every rank scores the same
  number of rows (the all-gather needs equal blocks). A block with fewer ids repeats its
  own (a repeated row gives the same logit and the same token), and a rank holding none
  of a set's ids fills its block with its first row: a real token outside the map, a
  wasted slot, never a wrong draft (the target verifies every draft).

Pure integer work: no torch, no SGLang; unit-tested with a simulated all-gather.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class VocabShard:
    """Which ``lm_head`` rows this rank holds: ``[rank * rows, (rank + 1) * rows)``."""

    rank: int
    size: int
    #: rows per rank (SGLang pads the vocabulary so every rank holds the same count)
    rows: int
    #: the real vocabulary size V (rows at or past it are padding, never tokens)
    vocab: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.size or self.rows < 1:
            raise ValueError(f"bad shard: rank {self.rank} of {self.size}, {self.rows} rows")
        if self.rows * self.size < self.vocab:
            raise ValueError(f"{self.size} x {self.rows} rows cannot hold V={self.vocab}")
        if (self.size - 1) * self.rows >= self.vocab:
            raise ValueError(
                f"rank {self.size - 1} holds no token of V={self.vocab} ({self.rows} rows/rank)"
            )

    @property
    def start(self) -> int:
        """This rank's first global id."""
        return self.rank * self.rows

    def owner(self, token_id: int) -> int:
        """The rank holding ``token_id``'s row."""
        return token_id // self.rows


def block_width(sets: Sequence[Sequence[int]], shard: VocabShard) -> int:
    """W: the most distinct ids any rank owns in any of ``sets`` (at least 1)."""
    width = 1
    for ids in sets:
        per_rank = [0] * shard.size
        for tid in dict.fromkeys(ids):
            per_rank[shard.owner(tid)] += 1
        width = max(width, *per_rank)
    return width


def shard_slots(ids: Sequence[int], shard: VocabShard, width: int) -> list[int]:
    """The ``size * width`` slot ids for the ranked ``ids``: block ``r`` is rank ``r``'s.

    Within a block ids keep their ranking order; a short block repeats its own ids, an
    empty one holds its rank's first row.
    """
    blocks: list[list[int]] = [[] for _ in range(shard.size)]
    for tid in dict.fromkeys(ids):
        if not 0 <= tid < shard.vocab:
            raise ValueError(f"token id {tid} is outside the vocabulary [0, {shard.vocab})")
        blocks[shard.owner(tid)].append(tid)
    out: list[int] = []
    for rank, block in enumerate(blocks):
        if len(block) > width:
            raise ValueError(f"rank {rank} owns {len(block)} ids, more than the width {width}")
        own = block or [rank * shard.rows]
        out += [own[i % len(own)] for i in range(width)]
    return out


def local_rows(slots: Sequence[int], shard: VocabShard, width: int) -> list[int]:
    """This rank's block of ``slots`` as rows of its own shard."""
    block = slots[shard.rank * width : (shard.rank + 1) * width]
    return [tid - shard.start for tid in block]
