"""evaluate/score.py: one greedy pass scores every vocabulary exactly as the decoder would.

The speculative decoder (:func:`speculate`) is the reference: for each prompt and
vocabulary, the walk over the trace must give the same output, verify steps and
accepted drafts per step.
"""

from __future__ import annotations

import random

import pytest
import torch

from fastmtp_export.checkpoints.oracle import EN, EOS, ZH
from fastmtp_export.evaluate.score import accepted, trace, walk
from fastmtp_export.evaluate.speculate import Draft, speculate

from .test_eval import Pair, _chain_prompts, _decoder, noisy, oracle

__all__ = ["noisy", "oracle"]  # the fixtures, shared with test_eval


def _vocabularies() -> dict[str, torch.Tensor | None]:
    rng = random.Random(0)
    mixed = rng.sample(range(1, 256), 60)
    return {
        "full": None,
        "en": torch.tensor(EN),
        "zh": torch.tensor([*ZH, EOS]),
        "both": torch.tensor([*EN, *ZH]),
        "random": torch.tensor([EOS, *mixed]),  # odd order: slots are not sorted ids
    }


@pytest.mark.parametrize("k", [1, 3, 5])
def test_walk_equals_the_decoder_for_every_vocabulary(noisy: Pair, k: int) -> None:
    target, mtp = _decoder(noisy)
    eos = {EOS}
    max_new = 14
    hist_total = [0] * (k + 1)
    for _lang, prompt in _chain_prompts(14)[:5]:
        t = trace(target, mtp, prompt, max_new, k)
        for name, hot in _vocabularies().items():
            want = speculate(target, Draft(mtp, hot), prompt, max_new, eos, k)
            got = walk(t, accepted(t, mtp.lm_head, hot), max_new, eos)
            assert got.output == want.output, name
            assert got.accepted == want.accepted, (name, got.accepted, want.accepted)
            assert got.verifies == want.verifies
            assert got.finish == want.finish
            for j in got.accepted:
                hist_total[j] += 1
    # the noisy pair both accepts and rejects: the comparison can fail
    assert hist_total[0] > 0
    assert sum(hist_total[1:]) > 0


def test_walk_stops_at_eos_like_the_decoder(oracle: Pair) -> None:
    """A prompt whose greedy answer ends early: the trace decodes past EOS, the walk stops."""
    target, mtp = _decoder(oracle)
    prompt = [EN[3], EN[4]]
    ref = speculate(target, Draft(mtp), prompt, 40, {EOS}, 3)
    t = trace(target, mtp, prompt, 40, 3)
    got = walk(t, accepted(t, mtp.lm_head, None), 40, {EOS})
    assert (got.output, got.accepted, got.finish) == (ref.output, ref.accepted, ref.finish)


def test_a_vocabulary_per_step(noisy: Pair) -> None:
    """Changing vocabulary every step equals a decoder whose draft switches the same way."""
    target, mtp = _decoder(noisy)
    prompt = _chain_prompts(12)[0][1]
    vocabs = [None, torch.tensor([*EN, *ZH])]
    t = trace(target, mtp, prompt, 12, 3)
    acc = [accepted(t, mtp.lm_head, v) for v in vocabs]
    got = walk(t, lambda step: acc[step % 2], 12, {EOS})

    class Alternating(Draft):
        """The decoder's draft, switching vocabulary on each verify step's first draft."""

        def __init__(self) -> None:
            super().__init__(mtp)
            self.picks = 0
            self.k = 3

        def pick(self, out: torch.Tensor) -> int:
            hot = vocabs[(self.picks // self.k) % 2]
            self.picks += 1
            scores = out @ (mtp.lm_head if hot is None else mtp.lm_head[hot]).T
            slot = int(torch.argmax(scores))
            return slot if hot is None else int(hot[slot])

    want = speculate(target, Alternating(), prompt, 12, {EOS}, 3)
    assert got.accepted == want.accepted
    assert got.output == want.output
