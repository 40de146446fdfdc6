"""Every draft vocabulary's exact acceptance from one greedy pass per prompt.

Why it exists: choosing a vocabulary (one map per language, a union, the plugin's sets
at K_u, under a traffic mix) means comparing dozens of vocabularies, and running the
speculative decoder (:mod:`.speculate`) once per vocabulary costs a target forward per
verify step each time. Under greedy chain speculation none of that is needed:

- a draft at depth j is accepted only if every earlier draft of its step was, and then
  the drafts so far equal the target's own tokens, so the draft's input at depth j is
  the same whatever the vocabulary: the MTP chain run on the *greedy tokens*;
- so one greedy pass (target hidden states), one draft-extend over it and, per start
  position, the K-step chain on the greedy tokens give every depth's final-normed
  output; a vocabulary only changes the argmax taken over its rows;
- tau then follows from walking the steps: a step starting at output position p
  accepts the leading depths whose argmax over the vocabulary equals the greedy token,
  and the next step starts after them and the bonus token.

This reproduces :func:`.speculate.speculate` step for step (the same verify counts and
histogram, up to float ties between a batched and an incremental forward), and a
vocabulary may change per step (:func:`walk` takes one per step), which is how the
plugin's batch-dependent choice is modelled.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch

from .reference import DraftHead
from .speculate import Generation, Target, _commit


@dataclass
class Trace:
    """One prompt's greedy continuation and the draft's outputs along it.

    ``tokens``: the greedy output, ``max_new + k`` tokens decoded past any EOS (a step
    near the end verifies drafts against them, as the decoder does); ``outs`` [P, k, H]:
    for the step that starts after output position p (p < P = max_new), the draft's
    final-normed output at each depth on the greedy tokens.
    """

    tokens: list[int]
    outs: torch.Tensor


@torch.no_grad()
def trace(target: Target, mtp: DraftHead, prompt: Sequence[int], max_new: int, k: int) -> Trace:
    """Greedy-decode ``prompt`` (EOS ignored) and run the draft chain at every start."""
    if not prompt:
        raise ValueError("empty prompt")
    cache = target.new_cache()
    hidden, pred = target.run(prompt, 0, cache)  # [n, H], [n]
    hiddens = [hidden]
    out = [int(pred[-1])]
    n = len(prompt)
    while len(out) < max_new + k:  # the last token need not be run
        h, pred = target.run([out[-1]], n + len(out) - 1, cache)  # [1, H]
        hiddens.append(h)
        out.append(int(pred[-1]))
    seq = [*prompt, *out]
    # the draft-extend over the sequence: MTP position t takes (hidden_t, token_{t+1});
    # only starts p < max_new are walked, whose extend ends at n + p - 1
    ext_len = n + max_new - 1
    h_all = torch.cat(hiddens)[:ext_len]  # [T, H]
    device = h_all.device
    dcache = mtp.new_cache()
    ext = mtp.trunk(
        h_all,
        torch.tensor(seq[1 : ext_len + 1], device=device),
        torch.arange(ext_len, device=device),
        dcache,
    )  # [T, H]
    saved = dcache.save()
    outs = ext.new_empty(max_new, k, ext.shape[-1])  # [P, k, H]
    for p in range(max_new):
        s = n + p  # sequence index of the newest committed token
        last = ext[s - 1 : s]  # [1, H]
        outs[p, 0] = last[0]
        dcache.crop(s)
        for i in range(1, k):  # depth i + 1 on its own output and the greedy token
            last = mtp.trunk(
                last,
                torch.tensor([seq[s + i]], device=device),
                torch.tensor([s + i - 1], device=device),
                dcache,
            )
            outs[p, i] = last[0]
        dcache.restore(saved, slice(s, s + k - 1))  # the extend's keys the chain overwrote
    return Trace(out, outs)


@torch.no_grad()
def accepted(t: Trace, head: torch.Tensor, hot: torch.Tensor | None) -> torch.Tensor:
    """[P, k] bool: whether the draft at (start p, depth j) over ``hot`` is the greedy token.

    ``head`` [V, H] the draft's ``lm_head``; ``hot`` [N] full ids (``None``: every row),
    scored in this order, as SGLang slices its head and :class:`.speculate.Draft` does.
    """
    p, k, h = t.outs.shape
    rows = head if hot is None else head[hot]  # [N, H]
    slot = (t.outs.reshape(p * k, h) @ rows.T).argmax(-1)  # [P*k]
    ids = slot if hot is None else hot[slot]
    want = torch.tensor(t.tokens[1 : p + k], device=ids.device)  # [P + k - 1]
    # depth j of start p drafts output token p + 1 + j
    index = torch.arange(p, device=ids.device)[:, None] + torch.arange(k, device=ids.device)
    return ids.view(p, k) == want[index]


def walk(
    t: Trace,
    acceptance: Callable[[int], torch.Tensor] | torch.Tensor,
    max_new: int,
    eos: Collection[int],
) -> Generation:
    """The decoder's steps over ``t``: each step's leading accepted drafts and the bonus.

    ``acceptance``: a [P, k] matrix from :func:`accepted`, or a function of the step
    number giving the matrix that step drafts with (a vocabulary chosen per step).
    """
    k = int(t.outs.shape[1])
    gen = Generation([], "length")
    finish = _commit(gen.output, [t.tokens[0]], eos, max_new)
    p = 0
    while finish is None:
        acc = acceptance(gen.verifies) if callable(acceptance) else acceptance
        row = acc[p].tolist()
        j = 0
        while j < k and row[j]:
            j += 1
        gen.verifies += 1
        gen.accepted.append(j)
        gen.drafted += k
        finish = _commit(gen.output, t.tokens[p + 1 : p + j + 2], eos, max_new)
        p += j + 1
    gen.finish = finish
    return gen
