"""The draft vocabulary bank: one fixed-size head holding a batch's languages, switched in place.

SGLang's draft slices the target ``lm_head`` once with one map (``hot_token_id`` [K],
head [K, H]) and CUDA graphs capture those pointers and that width. The bank instead
keeps one *active* buffer of ``rows`` (K_u) slots, by default 2K, holding the union of
the maps of the languages in the current batch (its most frequent languages whose maps'
union fits in K_u: two by default, more when maps overlap). Every request whose language
is in the set then drafts over a superset of its own map, so a mixed batch no longer
drafts its minority with the majority's map.

- Switching copies into the same buffers (``hot_token_id`` [K_u], head [K_u, H], and the
  inverse [V]), so addresses never change and captured graphs stay valid; graphs always
  see width K_u.
- The head rows are gathered from the target's own ``lm_head`` on each switch, so no
  per-language copy is resident: the bank costs one [K_u, H] head plus small index
  tensors, whatever the number of languages.
- Every language set's slot contents are computed once at start-up (``table``), so a
  switch is device-to-device only: no host-to-device copy, no synchronisation.
- A one-language set holds exactly that language's map, padded with repeats of its own
  ids: a repeated row yields the same logit and the same full id, so a single-language
  batch drafts exactly as with its own K-row map.
- At TP > 1 (``shard``) the target head is a vocabulary shard: the slots are laid out
  in one block per rank (:mod:`.shard`), each rank's head buffer holds only its block's
  rows, gathered from its own shard, and SGLang's all-gather of the draft logits puts
  the blocks back in slot order. Every rank computes the same table, so the same batch
  makes every rank switch to the same set.

Pure torch: no SGLang import, unit-tested on CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import torch

from .shard import VocabShard, block_width, local_rows, shard_slots

LangSet = frozenset[str]
#: the start-up table of every language set's slots is capped at this many bytes; sets
#: of more languages than fit are not offered (their batches draft with fewer languages)
MAX_TABLE_BYTES = 64 * 2**20


def default_rows(size: int, n_langs: int, vocab: int) -> int:
    """K_u when the operator sets none: room for two languages' maps (K for one), capped at V."""
    return min(size * min(n_langs, 2), vocab)


def union_ids(maps: Mapping[str, Sequence[int]], langs: Sequence[str], rows: int) -> list[int]:
    """The ``rows`` full ids of the slots for the language set ``langs``.

    The languages' rankings are interleaved rank by rank (deduplicated), so when the
    union does not fit every language loses only its tail. A single language is padded
    with repeats of its own ids (exactly its own map's quality); a set of several is
    padded from the other languages' rankings (interleaved the same way), then with
    repeats.
    """
    chosen = sorted(langs)
    out: list[int] = []
    seen: set[int] = set()

    def take(order: Sequence[str]) -> None:
        for rank in range(max((len(maps[lang]) for lang in order), default=0)):
            for lang in order:
                ids = maps[lang]
                if rank < len(ids) and ids[rank] not in seen and len(out) < rows:
                    seen.add(ids[rank])
                    out.append(ids[rank])

    take(chosen)
    if len(chosen) > 1:
        take(sorted(set(maps) - set(chosen)))
    base = len(out)
    while len(out) < rows:
        out.append(out[(len(out) - base) % base])
    return out


class DraftVocabBank:
    """The active draft vocabulary (K_u slots) and every language set's slot contents.

    Args:
        maps: ``lang -> hot ids`` (full-vocabulary ids, all the same length K).
        head: the target ``lm_head`` weight [V, H] (at TP > 1 this rank's shard [P, H]);
            read on every switch, never written.
        default: the language the active buffers start with.
        rows: K_u, the distinct ids a set may hold (``K <= rows <= V``); default
            :func:`default_rows`.
        shard: this rank's part of a vocabulary-parallel head; ``None`` for a full head.
    """

    @torch.no_grad()
    def __init__(
        self,
        maps: Mapping[str, Sequence[int]],
        head: torch.Tensor,
        default: str,
        rows: int | None = None,
        shard: VocabShard | None = None,
    ) -> None:
        if default not in maps:
            raise ValueError(f"default language {default!r} has no map")
        sizes = {len(ids) for ids in maps.values()}
        if len(sizes) != 1:
            raise ValueError(f"all maps must have one size, got {sorted(sizes)}")
        vocab = int(head.shape[0]) if shard is None else shard.vocab
        size = sizes.pop()
        for ids in maps.values():
            if min(ids) < 0 or max(ids) >= vocab:
                raise ValueError(f"map ids must lie in [0, {vocab})")
        rows = default_rows(size, len(maps), vocab) if rows is None else rows
        if not size <= rows <= vocab:
            raise ValueError(f"draft rows must lie in [K={size}, V={vocab}], got {rows}")
        self.langs: tuple[str, ...] = tuple(sorted(maps))
        self.size = size
        self.rows = rows
        self.head = head
        self.shard = shard
        device = head.device
        sets = _fitting_sets(maps, self.langs, rows)
        #: every language set the active buffer can hold: each union fits in K_u whole
        self.sets: dict[LangSet, int] = {s: i for i, s in enumerate(sets)}
        self.max_langs = max(len(s) for s in sets)
        slot_ids = [union_ids(maps, sorted(s), rows) for s in sets]
        #: [S, L] rows of ``head`` each set's head buffer gathers (TP > 1 only; at TP 1
        #: they are the slot ids themselves)
        self.local: torch.Tensor | None = None
        if shard is not None:
            width = block_width(slot_ids, shard)
            slot_ids = [shard_slots(ids, shard, width) for ids in slot_ids]
            self.local = torch.tensor(
                [local_rows(ids, shard, width) for ids in slot_ids],
                dtype=torch.int64,
                device=device,
            )
        # [S, N] the slots' full ids of every language set (int32: V < 2^31), built once;
        # N = K_u at TP 1, size * W at TP > 1
        self.table = torch.tensor(slot_ids, dtype=torch.int32, device=device)
        #: N: the draft logits' width, what SGLang's graphs and buffers see
        self.slots = int(self.table.shape[1])
        self._slots = torch.arange(self.slots, dtype=torch.int64, device=device)  # [N]
        self.active: LangSet = frozenset({default})
        index = self.sets[self.active]
        self.active_ids = self.table[index].to(torch.int64)  # [N] hot_token_id
        # [N, H] (TP > 1: [W, H], this rank's block) the draft lm_head weight: a private
        # gather, never the target's storage
        self.active_head = head.index_select(0, self._rows(index))
        # [V] full id -> its slot in the active set (0 where absent: one lost draft)
        self.inverse = torch.zeros(vocab, dtype=torch.int64, device=device)
        self.inverse.scatter_(0, self.active_ids, self._slots)

    def _rows(self, index: int) -> torch.Tensor:
        """The rows of ``head`` set ``index``'s head buffer holds (int64)."""
        return self.active_ids if self.local is None else self.local[index]

    @property
    def nbytes(self) -> int:
        """Device memory the bank holds besides the target's head it reads from."""
        tensors = [self.table, self._slots, self.active_ids, self.active_head, self.inverse]
        if self.local is not None:
            tensors.append(self.local)
        return sum(t.numel() * t.element_size() for t in tensors)

    @torch.no_grad()
    def switch(self, langs: LangSet) -> bool:
        """Make the set ``langs`` active, in place; ``False`` when it already is.

        Device-to-device work only: the slot ids from the start-up table, the head rows
        gathered from the target head, and the inverse rebuilt by one scatter.
        """
        if langs == self.active:
            return False
        index = self.sets[langs]
        self.active_ids.copy_(self.table[index])
        torch.index_select(self.head, 0, self._rows(index), out=self.active_head)
        self.inverse.zero_()
        self.inverse.scatter_(0, self.active_ids, self._slots)
        self.active = langs
        return True

    def to_full(self, slots: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary ids of draft slots of the active set (same shape)."""
        return self.active_ids[slots]

    def to_slots(self, full_ids: torch.Tensor) -> torch.Tensor:
        """Active-set slots of ``full_ids``; an id absent from the set goes to slot 0.

        An absent id becomes some other draft token, which the target rejects: it costs
        that one draft, never correctness.
        """
        return self.inverse[full_ids]


def _fitting_sets(
    maps: Mapping[str, Sequence[int]], langs: Sequence[str], rows: int
) -> list[LangSet]:
    """Every language, then every set of 2, 3, ... languages whose maps' union fits in ``rows``.

    A superset's union is never smaller, so the search stops at the first size where no
    set fits, or where the table would pass :data:`MAX_TABLE_BYTES`.
    """
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


def set_label(langs: LangSet) -> str:
    """``frozenset({"zh", "en"})`` -> ``"en+zh"`` (logs and metric labels)."""
    return "+".join(sorted(langs))
