"""The per-language draft vocabulary bank: every map's head rows, and the active buffers.

SGLang's draft slices the target ``lm_head`` once with one map (``hot_token_id`` [K],
head [K, H]) and CUDA graphs capture those pointers. The bank keeps every language's
rows resident and switches language by copying into the *same* two buffers in place,
so addresses never change and captured graphs stay valid. All maps have one K (the
exporter guarantees it). Pure torch: no SGLang import, unit-tested on CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


class DraftVocabBank:
    """Hot ids and head rows per language, plus pointer-stable active buffers.

    Args:
        maps: ``lang -> hot ids`` (full-vocabulary ids, all the same length K).
        head: the target ``lm_head`` weight [V, H]; rows are copied, never aliased.
        default: the language the active buffers start with.
    """

    @torch.no_grad()
    def __init__(self, maps: Mapping[str, Sequence[int]], head: torch.Tensor, default: str) -> None:
        if default not in maps:
            raise ValueError(f"default language {default!r} has no map")
        sizes = {len(ids) for ids in maps.values()}
        if len(sizes) != 1:
            raise ValueError(f"all maps must have one size, got {sorted(sizes)}")
        self.langs: tuple[str, ...] = tuple(sorted(maps))
        self.index = {lang: i for i, lang in enumerate(self.langs)}
        vocab = head.shape[0]
        device = head.device
        # [L, K] full-vocabulary ids of each language's hot slots
        self.hot_ids = torch.tensor(
            [list(maps[lang]) for lang in self.langs], dtype=torch.int64, device=device
        )
        if int(self.hot_ids.min()) < 0 or int(self.hot_ids.max()) >= vocab:
            raise ValueError(f"map ids must lie in [0, {vocab})")
        # [L, K, H] head rows per language (a gather copies: never shares the target's storage)
        self.heads = head[self.hot_ids]
        # [L, V] full id -> hot slot in each language, -1 where absent
        self.inverse = torch.full((len(self.langs), vocab), -1, dtype=torch.int64, device=device)
        slots = torch.arange(self.hot_ids.shape[1], device=device).expand_as(self.hot_ids)
        self.inverse.scatter_(1, self.hot_ids, slots)
        self.active = default
        i = self.index[default]
        self.active_ids = self.hot_ids[i].clone()  # [K], the buffer SGLang indexes
        self.active_head = self.heads[i].clone()  # [K, H], the draft lm_head weight

    @property
    def size(self) -> int:
        """K: ids per map."""
        return int(self.hot_ids.shape[1])

    @property
    def nbytes(self) -> int:
        """Device memory the bank holds (all languages plus the active buffers)."""
        tensors = (self.hot_ids, self.heads, self.inverse, self.active_ids, self.active_head)
        return sum(t.numel() * t.element_size() for t in tensors)

    @torch.no_grad()
    def switch(self, lang: str) -> bool:
        """Make ``lang`` active by copying in place; ``False`` when it already is."""
        if lang == self.active:
            return False
        i = self.index[lang]
        self.active_ids.copy_(self.hot_ids[i])
        self.active_head.copy_(self.heads[i])
        self.active = lang
        return True

    def to_hot(self, full_ids: torch.Tensor, lang: str) -> torch.Tensor:
        """Hot slots of ``full_ids`` in ``lang``'s map; absent ids go to slot 0.

        A draft token missing from the new map becomes some other draft token, which
        the target rejects: it costs that one draft, never correctness.
        """
        slots = self.inverse[self.index[lang]][full_ids]
        return torch.where(slots < 0, torch.zeros_like(slots), slots)

    def remap(self, hot_index: torch.Tensor, old: str, new: str) -> torch.Tensor:
        """Carry a draft index from ``old``'s hot space to ``new``'s, through full ids."""
        if old == new:
            return hot_index
        full = self.hot_ids[self.index[old]][hot_index]
        return self.to_hot(full, new)

    def remap_rows(self, hot_index: torch.Tensor, spaces: Sequence[str], new: str) -> torch.Tensor:
        """Carry each row of ``hot_index`` [B, ...] from its own space ``spaces[b]`` to ``new``.

        Rows of one batch can sit in different spaces: a prefill drafts its new requests
        in their language while running requests keep the space of their last draft.
        """
        if all(s == new for s in spaces):
            return hot_index
        if len(set(spaces)) == 1:
            return self.remap(hot_index, spaces[0], new)
        # [B] index of each row's language, then [B, ...] full ids through its own map
        rows = torch.tensor([self.index[s] for s in spaces], device=hot_index.device)
        rows = rows.view(-1, *([1] * (hot_index.dim() - 1))).expand_as(hot_index)
        full = self.hot_ids[rows, hot_index]
        return self.to_hot(full, new)
