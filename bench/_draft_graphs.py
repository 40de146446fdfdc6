"""gpu_check part 1: the plugin's buffers under captured draft graphs, switched between replays.

A chain draft loop shaped like SGLang 0.5.23's (topk 1 with a hot map,
``EagleDraftWorker.draft_forward``): map the carried slot to a full id through
``hot_token_id``, then ``steps - 1`` times a layer, the draft head matmul over the
active buffer [K_u, H], the argmax and the slot -> full id gather; and the draft-extend
whose K_u-wide logits SGLang's extend graph writes to a buffer sized from
``len(hot_token_id)``, the argmax outside the graph. Both are captured per batch size
with ``torch.cuda.CUDAGraph`` (on CPU, "capture" binds the tensors the worker holds, as a
graph bakes their pointers). Between replays the plugin's own hooks run on stand-in
batches: hook 4 switches the set and turns carried full ids into slots, hooks 5 and 6
turn the extend's slots into full ids. Every replay is compared with an eager run built
from the target head and ``slot_ids`` alone, not from the bank's buffers.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from _gpu_common import Batch, BatchResult, Shapes, Worker, draft_hooks, mixed_reqs

from fastmtp_export.maps.draft_sets import slot_ids
from sglang_patch.bank import DraftVocabBank, LangSet

#: corruptions that must make the check fail (tests/bench/test_gpu_check.py)
CORRUPTIONS = ("rebind", "carry")


def layer(
    hidden: torch.Tensor, embed: torch.Tensor, ids: torch.Tensor, mix: torch.Tensor
) -> torch.Tensor:
    """The MTP layer's stand-in: [B, H] state and [B] token ids -> [B, H] (fixed shapes)."""
    x = hidden @ mix + embed[ids]  # [B, H]
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)


def head_logits(h: torch.Tensor, weight: torch.Tensor, width: int) -> torch.Tensor:
    """[B, H] x [width, H] -> [B, width] logits, into a buffer sized from ``width`` as
    SGLang's extend graph sizes its logits buffer from ``len(hot_token_id)``."""
    logits = torch.empty(h.shape[0], width, dtype=h.dtype, device=h.device)  # [B, width]
    return torch.matmul(h, weight.T, out=logits)


class DraftLoop:
    """One captured batch size: SGLang's static buffers and its two draft graphs.

    ``topk_index`` [bs, 1] (slots) and ``hidden`` [bs, H] are the draft-decode graph's
    inputs (``EagleDraftInputBuffers``); ``ext_ids`` [bs] and ``ext_hidden`` [bs, H] the
    extend graph's. The hot ids and head are read from the worker while capturing, as
    ``draft_forward`` reads ``self.hot_token_id`` and the model's ``lm_head.weight``.
    """

    def __init__(self, worker: Worker, bs: int, fixed: dict[str, Any], steps: int) -> None:
        head = worker.lm_head
        self.bs, self.steps, self.fixed, self.worker = bs, steps, fixed, worker
        device, hidden = head.device, head.shape[1]
        self.topk_index = torch.zeros(bs, 1, dtype=torch.int64, device=device)  # [bs, 1]
        self.hidden = torch.zeros(bs, hidden, dtype=head.dtype, device=device)  # [bs, H]
        self.ext_ids = torch.zeros(bs, dtype=torch.int64, device=device)  # [bs]
        self.ext_hidden = torch.zeros(bs, hidden, dtype=head.dtype, device=device)  # [bs, H]
        self.graphs: list[Any] = []
        self.decode = self._capture(self._decode)
        self.extend = self._capture(self._extend)

    def _decode(self, hot: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``draft_forward``: [bs, steps] full ids and the last [bs, H] state."""
        f = self.fixed
        index = hot[self.topk_index]  # (a) [bs, 1] slot -> full id
        tokens, h = [index], self.hidden
        for _ in range(self.steps - 1):
            h = layer(h, f["embed"], index.flatten(), f["mix"])  # [bs, H]
            slots = torch.argmax(h @ weight.T, dim=-1, keepdim=True)  # [bs, 1] over K_u
            index = hot[slots]  # (b) [bs, 1]
            tokens.append(index)
        return torch.cat(tokens, dim=1), h  # [bs, steps], [bs, H]

    def _extend(self, hot: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The draft-extend graph: [bs, len(hot)] logits (argmax outside) and [bs, H]."""
        h = layer(self.ext_hidden, self.fixed["embed"], self.ext_ids, self.fixed["mix"])
        return head_logits(h, weight, hot.numel()), h

    def _capture(self, fn: Callable[..., tuple[torch.Tensor, ...]]) -> Callable[[], tuple]:
        hot, weight = self.worker.hot_token_id, self.worker.lm_head
        if weight.device.type != "cuda":  # bind what a graph would bake: these tensors
            return lambda: fn(hot, weight)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the graph, as SGLang does
            for _ in range(2):
                fn(hot, weight)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.fixed["pool"]):
            out = fn(hot, weight)
        self.graphs.append(graph)

        def replay() -> tuple[torch.Tensor, ...]:
            graph.replay()
            return out  # the graph's own output tensors, rewritten by every replay

        return replay

    def load(self, index: torch.Tensor, hidden: torch.Tensor, ext: bool) -> None:
        """Copy raw rows in and zero the padding, as ``execute`` does when bs != raw_bs."""
        ids, state = (self.ext_ids, self.ext_hidden) if ext else (self.topk_index, self.hidden)
        rows = hidden.shape[0]
        ids.zero_()
        state.zero_()
        ids[:rows].copy_(index.view(ids[:rows].shape))
        state[:rows].copy_(hidden)


class Reference:
    """The same steps in eager mode, from the target head and ``slot_ids`` only."""

    def __init__(self, maps: dict[str, list[int]], head: torch.Tensor, rows: int):
        self.maps, self.head, self.rows = maps, head, rows
        self._ids: dict[LangSet, torch.Tensor] = {}

    def ids(self, langs: LangSet) -> torch.Tensor:
        if langs not in self._ids:
            ids = slot_ids(self.maps, sorted(langs), self.rows)
            self._ids[langs] = torch.tensor(ids, dtype=torch.int64, device=self.head.device)
        return self._ids[langs]  # [K_u]

    def decode(self, loop: DraftLoop, carried: torch.Tensor, langs: LangSet) -> torch.Tensor:
        """[bs, steps] full ids; a carried id absent from the set drafts as the set's slot 0."""
        f, ids = loop.fixed, self.ids(langs)
        weight = self.head[ids]  # [K_u, H]: a fresh gather, not the bank's buffer
        first = ids[:1].expand(loop.bs, 1).clone()  # [bs, 1]: padding rows hold slot 0
        raw = carried.shape[0]
        first[:raw] = torch.where(torch.isin(carried, ids), carried, ids[0])
        tokens, h, index = [first], loop.hidden.clone(), first
        for _ in range(loop.steps - 1):
            h = layer(h, f["embed"], index.flatten(), f["mix"])
            index = ids[torch.argmax(h @ weight.T, dim=-1, keepdim=True)]  # [bs, 1]
            tokens.append(index)
        return torch.cat(tokens, dim=1)

    def extend(self, loop: DraftLoop, langs: LangSet) -> torch.Tensor:
        ids = self.ids(langs)
        h = layer(loop.ext_hidden, loop.fixed["embed"], loop.ext_ids, loop.fixed["mix"])
        logits = head_logits(h, self.head[ids], ids.numel())  # [bs, K_u]
        return ids[torch.argmax(logits, dim=-1, keepdim=True)]  # [bs, 1]


def _corrupt_rebind(bank: DraftVocabBank, worker: Worker) -> None:
    """A switch into new buffers, rebinding the worker: what captured graphs cannot follow."""
    switch = bank.switch

    def fresh(langs: LangSet) -> bool:
        if langs != bank.active:
            bank.active_ids, bank.active_head = bank.active_ids.clone(), bank.active_head.clone()
            bank.inverse = bank.inverse.clone()
            worker.hot_token_id = bank.active_ids
            worker.lm_head = torch.nn.Parameter(bank.active_head, requires_grad=False)
        return switch(langs)

    bank.switch = fresh  # type: ignore[method-assign]


def _compositions(langs: tuple[str, ...], bs: int) -> list[tuple[str | None, ...]]:
    """Per round, the request languages cycled over the batch: every set gets drafted."""
    pairs = [(a, b) for i, a in enumerate(langs) for b in langs[i + 1 :]]
    mixes: list[tuple[str | None, ...]] = [(lang,) for lang in langs]
    if bs > 1:  # pairs, all languages (the two most frequent draft), a request without one
        mixes += [*pairs, langs, (None, langs[-1])]
    return [*mixes, mixes[0]]


class GraphCheck:
    """Capture every batch size, then run rounds of prefill / draft / extend per raw size."""

    def __init__(self, shapes: Shapes, maps: dict[str, list[int]], head: torch.Tensor,
                 corrupt: str | None, seed: int) -> None:  # fmt: skip
        self.hooks: types.ModuleType = draft_hooks()
        self.shapes, self.corrupt, self.device = shapes, corrupt, head.device
        self.gen = torch.Generator(device=head.device).manual_seed(seed)
        self.langs = tuple(sorted(maps))
        self.bank = DraftVocabBank(maps, head, default=self.langs[0])
        self.worker = Worker(self.bank, self.langs[0], self.hooks)
        if corrupt == "rebind":
            _corrupt_rebind(self.bank, self.worker)
        self.pointers = self._pointers()
        h, dev = shapes.hidden, head.device
        self.fixed: dict[str, Any] = {
            "embed": torch.randn(shapes.vocab, h, generator=self.gen, device=dev).to(head.dtype),
            "mix": (torch.randn(h, h, generator=self.gen, device=dev) / h**0.5).to(head.dtype),
            "pool": torch.cuda.graph_pool_handle() if dev.type == "cuda" else None,
        }  # embed [V, H], mix [H, H]
        self.loops = {bs: DraftLoop(self.worker, bs, self.fixed, shapes.steps)
                      for bs in shapes.graph_bs}  # fmt: skip
        self.ref = Reference(maps, head, self.bank.rows)
        self.replays = self.mismatches = 0
        self.sets: set[str] = set()
        self.first: dict[str, Any] | None = None

    def _pointers(self) -> list[int]:
        b = self.bank
        return [t.data_ptr() for t in (b.active_ids, b.active_head, b.inverse)]

    def compare(self, part: str, rnd: int, want: torch.Tensor, got: torch.Tensor) -> None:
        """Count rows whose ids differ; keep the first, with whether its ids lie in the set
        (a stale buffer drafts another set's ids; a numerical near-tie would not)."""
        self.replays += 1
        bad = (want != got).any(dim=1).nonzero().flatten().tolist()
        self.mismatches += len(bad)
        if bad and self.first is None:
            ids = self.ref.ids(self.bank.active)
            self.first = {"part": part, "batch": int(got.shape[0]), "round": rnd, "row": bad[0],
                          "expected": want[bad[0]].tolist(), "got": got[bad[0]].tolist(),
                          "got_in_set": bool(torch.isin(got[bad[0]], ids).all()),
                          "set": "+".join(sorted(self.bank.active))}  # fmt: skip

    def _extend(self, loop: DraftLoop, ids: torch.Tensor) -> BatchResult:
        """The draft-extend replay; its argmax (slots) is what SGLang stores before hook 6."""
        raw = ids.shape[0]
        hidden = torch.randn(raw, self.shapes.hidden, generator=self.gen, device=self.device)
        loop.load(ids, hidden.to(loop.hidden.dtype), ext=True)  # the target's hidden states
        logits, h = loop.extend()  # [bs, K_u], [bs, H]
        loop.hidden.zero_()
        loop.hidden[:raw].copy_(h[:raw])  # the next draft's input state
        return BatchResult(torch.argmax(logits[:raw], dim=-1, keepdim=True))  # [raw, 1] slots

    def run(self, raw: int) -> None:
        loop = self.loops[min(bs for bs in self.shapes.graph_bs if bs >= raw)]
        hooks, worker = self.hooks, self.worker
        mixes = _compositions(self.langs, raw)
        ids = torch.randint(self.shapes.vocab, (raw,), generator=self.gen, device=self.device)
        batch = Batch(mixed_reqs(raw, mixes[0]))
        # hook 5 (prefill): switch to the new requests' set, extend, first tokens as full ids
        nxt = hooks.prefill_around(lambda w, b: self._extend(loop, ids).next_draft_input,
                                   worker, batch)  # fmt: skip
        carried = nxt.topk_index  # [raw, 1]
        assert carried is not None
        self.compare("extend", 0, self.ref.extend(loop, self.bank.active)[:raw], carried)
        for rnd, mix in enumerate(mixes[1:], start=1):
            batch = Batch(mixed_reqs(raw, mix), topk_index=carried)
            hooks.draft_before(worker, batch)  # hook 4: switch, carried full ids -> slots
            self.sets.add("+".join(sorted(self.bank.active)))
            assert batch.spec_info.topk_index is not None
            loop.load(batch.spec_info.topk_index, loop.hidden[:raw].clone(), ext=False)
            tokens = loop.decode()[0][:raw]  # [raw, steps] full ids
            want = self.ref.decode(loop, carried, self.bank.active)[:raw]
            self.compare("draft", rnd, want, tokens)
            result = self._extend(loop, tokens[:, -1].clone())  # every draft "accepted"
            if self.corrupt != "carry":  # hook 6: the extend's slots -> full ids
                hooks.decode_extend_after(None, worker, batch, result)
            carried = result.next_draft_input.topk_index
            assert carried is not None
            self.compare("extend", rnd, self.ref.extend(loop, self.bank.active)[:raw], carried)

    def result(self) -> dict[str, Any]:
        stable = self.pointers == self._pointers()
        return {
            "cuda_graphs": self.device.type == "cuda",
            "hooks_module": self.hooks.__name__,
            "captured_batch_sizes": list(self.shapes.graph_bs),
            "raw_batch_sizes": list(self.shapes.raw_bs),
            "languages": list(self.langs),
            "k": self.shapes.k,
            "k_u": self.bank.rows,
            "sets_drafted": sorted(self.sets),
            "switches": self.worker._fastmtp_counts.switches,
            "replays_compared": self.replays,
            "mismatched_rows": self.mismatches,
            "first_mismatch": self.first,
            "pointers_stable": stable,
            "corrupted": self.corrupt,
            "ok": self.mismatches == 0 and stable and self.replays > 0 and len(self.sets) > 1,
        }


def check_graphs(shapes: Shapes, maps: dict[str, list[int]], head: torch.Tensor,
                 corrupt: str | None = None, seed: int = 1) -> dict[str, Any]:  # fmt: skip
    """Capture, switch, replay, compare; the result's ``ok`` is the verdict."""
    with torch.no_grad():  # SGLang drafts without autograd
        check = GraphCheck(shapes, maps, head, corrupt, seed)
        for raw in shapes.raw_bs:
            check.run(raw)
    return check.result()
