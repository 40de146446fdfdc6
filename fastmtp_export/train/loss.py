"""The FastMTP loss: one head applied recursively K times, steps weighted beta^(k-1).

Teacher-forced, as upstream trains it: step 1 sees the trunk's final-normed hidden
state h_t and the token x_{t+1} and predicts x_{t+2}; step k sees step k-1's output at
the same position and x_{t+k}, and predicts x_{t+k+1}. Every step runs over the whole
sequence (positions unchanged, causal), so step k's states attend to step k's states
at earlier positions. K=1 is vanilla MTP training (one step), the baseline the paper
compares against.

Several sequences can run at once, right-padded to one length ([B, T]): attention is
causal, so a real token never sees a later pad, and pads are never targets. One
sequence ([T]) runs exactly the arithmetic it always has.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812

from .head import Head
from .kd import KDConfig, kl_from_top, teacher_top


def step_weights(beta: float, steps: int) -> list[float]:
    """alpha_k = beta^(k-1) / sum_j beta^(j-1); beta 0.6, K 3 gives 0.51 / 0.31 / 0.18."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError("beta must be a positive number")
    raw = [beta**k for k in range(steps)]
    return [r / sum(raw) for r in raw]


def target_counts(mask: torch.Tensor, steps: int) -> torch.Tensor:
    """Trained targets per step: [K] int64 (step k's targets are mask[..., k+1:]).

    mask [T] or [B, T] bool.
    """
    return torch.stack([mask[..., k + 1 :].sum() for k in range(1, steps + 1)])


def step_losses(
    head: Head, hidden: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, steps: int
) -> torch.Tensor:
    """Summed cross-entropy per step: [K] float32, differentiable (see :func:`losses`)."""
    return losses(head, hidden, ids, mask, steps)[0]


def losses(
    head: Head,
    hidden: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    kd: KDConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed cross-entropy per step [K], and with ``kd`` the summed KL per step [K].

    hidden [T, H] or [B, T, H]: the trunk's final-normed states; ids [T] or [B, T]
    int64 (pads 0); mask like ids, bool. Only the rows whose target is trained reach
    ``lm_head``, the largest matmul. Step k's teacher for the row at t is ``lm_head``
    of hidden at t+k (the main head predicting the same x_{t+k+1}).
    """
    t = ids.shape[-1]
    positions = torch.arange(t, device=ids.device)  # [T]
    h = hidden.float()
    sums, kls = [], []
    if kd is not None:
        # the main head at position j predicts x_{j+1}: it is step k's teacher for row j-k
        need = mask[..., 1:]  # [..., T-1]: is x_{j+1} a trained target
        t_ids, t_logp = teacher_top(hidden[..., :-1, :][need], head.lm_head, kd)  # [P, n] each
        row_of = torch.full(need.shape, -1, dtype=torch.int64, device=ids.device)  # [..., T-1]
        row_of[need] = torch.arange(t_ids.shape[0], device=ids.device)
    for k in range(1, steps + 1):
        next_ids = torch.roll(ids, -k, dims=-1)  # [..., T]: x_{t+k}; the tail is never a target
        next_ids[..., t - k :] = 0
        h = head.step(h, next_ids, positions)  # [..., T, H]
        n = max(t - k - 1, 0)
        keep = mask[..., k + 1 :]  # [..., n]: is x_{t+k+1} a trained target
        if n == 0 or not bool(keep.any()):
            sums.append(h.sum() * 0.0)  # keeps every step in the graph
            if kd is not None:
                kls.append(h.sum() * 0.0)
            continue
        logits = head.logits(h[..., :n, :][keep])  # [N, V]
        sums.append(F.cross_entropy(logits, ids[..., k + 1 :][keep], reduction="sum"))
        if kd is not None:
            rows = row_of[..., k : k + n][keep]  # [N]: the teacher of x_{t+k+1}, at t+k
            kls.append(kl_from_top(logits, t_ids[rows], t_logp[rows], kd.direction))
    return torch.stack(sums), (torch.stack(kls) if kd is not None else None)
