"""One optimizer step's gradients: this rank's sequences in micro-batches, the frozen
trunk's states, the recursive loss and the backward (the trainer clips and steps).

Throughput comes from two things. Sequences run several at a time: this rank's share
of the batch is sorted by length and cut into micro-batches of at most
``micro_batch_tokens`` padded tokens, right-padded ([B, T]); attention is causal in
the trunk and the head, so a real token never sees a later pad and no mask is needed.
And the frozen trunk's hidden states are computed once per sequence and kept (host
memory) when the whole data set's states fit ``cache_gb`` and the run has more than
one epoch: later epochs then run only the head.

Every choice is a function of the options, the data and the step, never of what a
previous step left behind, so a resumed run computes what an uninterrupted one does,
bit for bit: with the cache on, every trunk state is computed one sequence at a time
(the cached value is exactly what a recomputation gives); with it off, the trunk runs
on the micro-batch, whose make-up depends only on the step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .data import Sample
from .dist import Dist
from .head import Head
from .kd import KDConfig
from .loss import losses, target_counts


def micro_batches(
    indices: Sequence[int], lengths: Mapping[int, int], budget: int
) -> list[list[int]]:
    """Cut ``indices`` into groups of at most ``budget`` padded tokens (count x longest).

    Longest first, ties in the given order; a sequence longer than the budget runs
    alone. ``budget`` 0 keeps the given order, one sequence per group.
    """
    if budget <= 0:
        return [[i] for i in indices]
    ordered = sorted(indices, key=lambda i: -lengths[i])  # stable: ties keep their order
    groups: list[list[int]] = []
    for i in ordered:
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def cache_fits(samples: Sequence[Sample], hidden_size: int, dtype: torch.dtype, gb: float) -> bool:
    """Whether every sequence's trunk states ([T, H] in ``dtype``) fit ``gb`` GiB."""
    per_token = hidden_size * torch.empty((), dtype=dtype).element_size()
    return sum(len(s.ids) for s in samples) * per_token <= gb * 2**30


class Trunk:
    """The frozen trunk's final-normed hidden states, per sequence (cached) or batched."""

    def __init__(self, model: Any, device: torch.device, *, cache: bool) -> None:
        self.model, self.device = model, device
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None

    def one(self, index: int, ids: torch.Tensor) -> torch.Tensor:
        """States of one sequence, ids [T] -> [T, H] in the trunk's dtype."""
        if self.cache is not None and index in self.cache:
            return self.cache[index].to(self.device)
        with torch.no_grad():
            hidden = self.model.model(input_ids=ids[None]).last_hidden_state[0]  # [T, H]
        if self.cache is not None:
            self.cache[index] = hidden.to("cpu")
        return hidden

    def batch(self, indices: list[int], ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """States of right-padded sequences, ids [B, T] -> [B, T, H]; pad rows are zeros
        (cached) or the trunk's output at pads (batched), never read as a target's."""
        if self.cache is None:
            with torch.no_grad():
                out: torch.Tensor = self.model.model(input_ids=ids).last_hidden_state  # [B, T, H]
            return out
        first = self.one(indices[0], ids[0, : lengths[0]])  # [T0, H]
        out = first.new_zeros((*ids.shape, first.shape[-1]))  # [B, T, H]
        out[0, : lengths[0]] = first
        for b in range(1, len(indices)):
            out[b, : lengths[b]] = self.one(indices[b], ids[b, : lengths[b]])
        return out


def train_step(
    mine: list[int],
    samples: Sequence[Sample],
    steps: int,
    micro_batch_tokens: int,
    trunk: Trunk,
    head: Head,
    weights: torch.Tensor,
    kd: KDConfig | None,
    dist: Dist,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accumulate the gradients of this rank's sequences ``mine`` into ``head``, summed
    over ranks; step k's loss is weights[k] * (CE_k + kd.weight * KL_k) / targets_k.

    A sharded head (``dist.sharded``) has its gradients averaged by FSDP: the loss is
    scaled by the world size, and every rank runs as many micro-batches as the busiest
    (empty ones: no targets, zero gradient), since FSDP's collectives pair up call for call.

    Returns the batch's mean cross-entropy per step [K] and mean KL per step [K] (None
    without ``kd``), over all ranks' targets.
    """
    lengths = {i: len(samples[i].ids) for i in mine}
    counts = torch.zeros(steps, dtype=torch.float64, device=device)  # [K]
    for i in mine:
        counts += target_counts(torch.tensor(samples[i].mask, device=device), steps)
    dist.sum_(counts)
    denom = counts.clamp(min=1).float()  # [K]
    sums = torch.zeros(steps, device=device)  # [K]
    kls = torch.zeros(steps, device=device)  # [K]
    groups: list[list[int] | None] = list(micro_batches(mine, lengths, micro_batch_tokens))
    scale = 1.0
    if dist.sharded:
        scale = float(dist.world)
        groups += [None] * (dist.max_(len(groups)) - len(groups))
    for group in groups:
        if group is None:  # an empty micro-batch: K+2 pad tokens, none a target
            ids = torch.zeros(steps + 2, dtype=torch.int64, device=device)  # [T]
            mask = torch.zeros(steps + 2, dtype=torch.bool, device=device)  # [T]
            hidden = head.lm_head.new_zeros(steps + 2, head.lm_head.shape[1])  # [T, H]
        elif len(group) == 1:
            ids = torch.tensor(samples[group[0]].ids, device=device)  # [T]
            mask = torch.tensor(samples[group[0]].mask, device=device)  # [T] bool
            hidden = trunk.one(group[0], ids)  # [T, H], final-normed
        else:
            width = lengths[group[0]]  # the longest: groups are sorted
            ids = torch.zeros(len(group), width, dtype=torch.int64, device=device)  # [B, T]
            mask = torch.zeros(len(group), width, dtype=torch.bool, device=device)  # [B, T]
            for b, i in enumerate(group):
                ids[b, : lengths[i]] = torch.tensor(samples[i].ids, device=device)
                mask[b, : lengths[i]] = torch.tensor(samples[i].mask, device=device)
            hidden = trunk.batch(group, ids, [lengths[i] for i in group])  # [B, T, H]
        per_step, kl = losses(head, hidden, ids, mask, steps, kd)  # [K], [K] or None
        if kl is None:
            ((weights * per_step) / denom).sum().mul(scale).backward()
        else:
            assert kd is not None
            ((weights * (per_step + kd.weight * kl)) / denom).sum().mul(scale).backward()
            kls += kl.detach()
        sums += per_step.detach()
    for p in head.parameters():
        assert p.grad is not None
        if not dist.sharded:
            dist.sum_(p.grad)
    dist.sum_(sums)
    if kd is not None:
        dist.sum_(kls)
    return sums / denom, (kls / denom if kd is not None else None)
