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
- A one-language set holds that language's map, then its ranking past the map when the
  artifact ships one (its own top K_u ids), else repeats of its own ids (a repeated
  row yields the same logit and full id: exactly its own K-row map). Slot contents and
  the batch's choice are :mod:`fastmtp_export.maps.draft_sets`, shared with ``eval``.
- At TP > 1 (``shard``) the target head is a vocabulary shard: the slots are laid out
  in one block per rank (:mod:`.shard`), each rank's head buffer holds only its block's
  rows, gathered from its own shard, and SGLang's all-gather of the draft logits puts
  the blocks back in slot order. Every rank computes the same table, so the same batch
  makes every rank switch to the same set.

Pure torch: no SGLang import, unit-tested on CPU.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import torch

from fastmtp_export.maps.draft_sets import LangSet, SetTable, default_rows, set_label

from .shard import VocabShard, block_width, local_rows, shard_slots

__all__ = ["DraftVocabBank", "LangSet", "default_rows", "set_label"]


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
        rankings: ``lang -> ids`` past the map (:mod:`fastmtp_export.maps.ranking`): the
            slots a set's maps leave free are filled from them instead of repeats.
        shares: ``lang -> {id: share of the language's tokens}``: with them a batch
            drafts with the set of most expected accepted drafts (every language at once
            among the candidates), else with its most frequent languages.
    """

    @torch.no_grad()
    def __init__(
        self,
        maps: Mapping[str, Sequence[int]],
        head: torch.Tensor,
        default: str,
        rows: int | None = None,
        shard: VocabShard | None = None,
        rankings: Mapping[str, Sequence[int]] | None = None,
        shares: Mapping[str, Mapping[int, float]] | None = None,
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
        table = SetTable(maps, rows, rankings, shares)
        sets = table.sets
        self._choice = table
        #: every language set the active buffer can hold: each union fits in K_u whole
        #: (with shares also every language at once, each keeping its top rows)
        self.sets: dict[LangSet, int] = {s: i for i, s in enumerate(sets)}
        self.max_langs = max(len(s) for s in sets)
        #: coverage[set][lang]: the share of lang's tokens the set's slots hold (shares only)
        self.coverage = table.coverage
        slot_lists = table.slots
        #: [S, L] rows of ``head`` each set's head buffer gathers (TP > 1 only; at TP 1
        #: they are the slot ids themselves)
        self.local: torch.Tensor | None = None
        if shard is not None:
            width = block_width(slot_lists, shard)
            slot_lists = [shard_slots(ids, shard, width) for ids in slot_lists]
            self.local = torch.tensor(
                [local_rows(ids, shard, width) for ids in slot_lists],
                dtype=torch.int64,
                device=device,
            )
        # [S, N] the slots' full ids of every language set (int32: V < 2^31), built once;
        # N = K_u at TP 1, size * W at TP > 1
        self.table = torch.tensor(slot_lists, dtype=torch.int32, device=device)
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

    def choose(self, counts: Counter[str]) -> LangSet:
        """The set a batch with these requests per language drafts with."""
        return self._choice.choose(counts, self.active)

    def choose_prefill(self, counts: Counter[str]) -> LangSet:
        """The set a prefill's draft-extend uses (:meth:`SetTable.choose_prefill`)."""
        return self._choice.choose_prefill(counts, self.active)

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
