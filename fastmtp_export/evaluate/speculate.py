"""A reference K-step chain speculative decoder: SGLang's EAGLE (topk 1), in plain PyTorch.

Why it exists: to measure a draft's acceptance before deploying it, with numbers that
mean what SGLang's ``spec_accept_length`` means. One request, greedy, batch 1:

- prefill: the target runs the prompt (KV cache) and picks the first token; the draft
  extends over the prompt with the target's final-normed hidden states and proposes
  draft 1 from its last position;
- draft steps 2..K: the MTP runs one position at a time on its own final-normed
  output and the previous draft token (draft KV cache; these positions are dropped
  afterwards);
- verify: the target runs [last token, d1..dK] in one forward; drafts are accepted
  while they equal the target's argmax, and the target's next argmax is the bonus;
- draft extend: the MTP reruns the accepted positions with the target's hidden states,
  which both fills its KV cache and proposes the next round's draft 1.

The hot vocabulary restricts only the draft's argmax; verification uses the full one,
so the output equals plain greedy decoding whatever the map.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .reference import DraftCache, DraftHead


class Target:
    """A causal LM with KV cache: final-normed hidden states and greedy predictions.

    Wraps a transformers ``*ForCausalLM`` whose ``.model`` returns post-norm
    ``last_hidden_state`` (Qwen2 and friends); ``lm_head`` scores it.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        text = model.config.get_text_config()
        #: linear-attention layers (Qwen3-Next, Qwen3.5): their state cannot be cropped
        self.recurrent = "linear_attention" in (getattr(text, "layer_types", None) or ())

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def keep(self, cache: Any, keep: int, snapshot: Any, rerun: Sequence[int], start: int) -> Any:
        """The cache holding the first ``keep`` positions after a verify.

        Attention caches are cropped. A recurrent state cannot be: the ``snapshot``
        taken before the verify is run again over the kept tokens ``rerun`` from
        position ``start`` instead (twice the target work on a rejection).
        """
        if not self.recurrent:
            _crop(cache, keep)
            return cache
        if cache.get_seq_length() == keep:
            return cache
        self.run(rerun, start, snapshot)
        return snapshot

    @torch.no_grad()
    def run(self, ids: Sequence[int], start: int, cache: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``ids`` at positions ``start..``; returns (hidden [T, H], argmax ids [T])."""
        input_ids = torch.tensor([list(ids)], device=self.device)  # [1, T]
        positions = torch.arange(start, start + len(ids), device=self.device)[None]  # [1, T]
        out = self.model.model(
            input_ids=input_ids, position_ids=positions, past_key_values=cache, use_cache=True
        )
        hidden = out.last_hidden_state[0]  # [T, H], final-normed
        logits = self.model.lm_head(hidden)  # [T, V]
        return hidden, logits.argmax(-1)


class Draft:
    """The MTP head with its own KV cache; scores the full or a hot vocabulary.

    ``hot`` [K] full-vocabulary ids: the draft's argmax is taken over these rows only,
    in this order (as SGLang slices ``lm_head`` with ``hot_token_id``).
    """

    def __init__(self, mtp: DraftHead, hot: torch.Tensor | None = None) -> None:
        self.mtp = mtp
        self.hot = hot
        # [K, H] or [V, H]: the rows the draft scores
        self.head = mtp.lm_head if hot is None else mtp.lm_head[hot]

    def pick(self, out: torch.Tensor) -> int:
        """The draft token for the final-normed output ``out`` [H]."""
        slot = int(torch.argmax(out @ self.head.T))  # [K] or [V] scores
        return slot if self.hot is None else int(self.hot[slot])

    def run(
        self, hidden: torch.Tensor, next_ids: Sequence[int], start: int, cache: DraftCache
    ) -> torch.Tensor:
        """MTP positions ``start..``; returns the final-normed outputs [T, H]."""
        device = self.head.device
        ids = torch.tensor(list(next_ids), device=device)  # [T]
        positions = torch.arange(start, start + len(next_ids), device=device)  # [T]
        return self.mtp.trunk(hidden, ids, positions, cache)


@dataclass
class Generation:
    """One request's output and speculation counters."""

    output: list[int]
    finish: str  # "stop" (EOS) or "length"
    verifies: int = 0
    accepted: list[int] = field(default_factory=list)  # drafts accepted per verify, 0..K
    drafted: int = 0  # draft tokens proposed
    draft_seconds: float = 0.0  # draft work after the prefill
    prefill_seconds: float = 0.0  # the prompt: target prefill (+ the draft's extend over it)
    seconds: float = 0.0  # everything


def _crop(cache: Any, keep: int) -> None:
    """Keep the first ``keep`` positions of a transformers cache (negative crop: the
    spelling every transformers version since 4.45 accepts)."""
    extra = cache.get_seq_length() - keep
    if extra > 0:
        cache.crop(-extra)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _commit(out: list[int], new: Sequence[int], eos: Collection[int], max_new: int) -> str | None:
    """Append ``new`` to ``out`` up to EOS or ``max_new``; the finish reason, if finished."""
    for t in new:
        out.append(t)
        if t in eos:
            return "stop"
        if len(out) >= max_new:
            return "length"
    return None


def greedy(target: Target, prompt: Sequence[int], max_new: int, eos: Collection[int]) -> Generation:
    """Plain greedy decoding with KV cache: the output speculation must reproduce."""
    start = time.perf_counter()
    cache = target.new_cache()
    _, pred = target.run(prompt, 0, cache)
    out: list[int] = []
    pos = len(prompt)
    finish = _commit(out, [int(pred[-1])], eos, max_new)
    _sync(target.device)
    prefill = time.perf_counter() - start
    while finish is None:
        _, pred = target.run([out[-1]], pos, cache)
        pos += 1
        finish = _commit(out, [int(pred[-1])], eos, max_new)
    _sync(target.device)
    return Generation(out, finish, prefill_seconds=prefill, seconds=time.perf_counter() - start)


def speculate(
    target: Target,
    draft: Draft,
    prompt: Sequence[int],
    max_new: int,
    eos: Collection[int],
    k: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> Generation:
    """Greedy K-step chain speculative decoding of one prompt (see the module docstring)."""
    if not prompt:
        raise ValueError("empty prompt")
    if max_new < 1 or k < 1:
        raise ValueError("max_new and k must be at least 1")
    begin = clock()
    device = target.device
    tcache, dcache = target.new_cache(), draft.mtp.new_cache()
    n = len(prompt)
    hidden, pred = target.run(prompt, 0, tcache)  # hidden [n, H]
    gen = Generation([], "length")
    finish = _commit(gen.output, [int(pred[-1])], eos, max_new)
    pos = n  # position of the newest committed token, the one the target has not run
    if finish is None:
        outs = draft.run(hidden, [*prompt[1:], gen.output[-1]], 0, dcache)  # [n, H]
    _sync(device)
    gen.prefill_seconds = clock() - begin
    while finish is None:
        t0 = clock()
        last_out = outs[-1:]  # [1, H]
        drafts = [draft.pick(last_out[0])]
        for i in range(1, k):  # steps 2..K on the MTP's own output
            last_out = draft.run(last_out, [drafts[-1]], pos + i - 1, dcache)
            drafts.append(draft.pick(last_out[0]))
        dcache.crop(pos)  # drop the speculative positions; the extend rewrites them
        _sync(device)
        gen.draft_seconds += clock() - t0
        gen.drafted += k

        snapshot = copy.deepcopy(tcache) if target.recurrent else None
        last = gen.output[-1]
        hidden, pred = target.run([last, *drafts], pos, tcache)  # [K+1, H], [K+1]
        preds = pred.tolist()
        j = 0
        while j < k and preds[j] == drafts[j]:
            j += 1
        gen.verifies += 1
        gen.accepted.append(j)
        new = [*drafts[:j], preds[j]]
        finish = _commit(gen.output, new, eos, max_new)
        if finish is not None:
            break
        # keep the last token and the accepted drafts
        tcache = target.keep(tcache, pos + j + 1, snapshot, [last, *drafts[:j]], pos)

        t0 = clock()
        outs = draft.run(hidden[: j + 1], new, pos, dcache)  # [j+1, H]
        _sync(device)
        gen.draft_seconds += clock() - t0
        pos += j + 1
    gen.finish = finish
    gen.seconds = clock() - begin
    return gen
