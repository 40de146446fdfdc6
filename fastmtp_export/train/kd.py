"""MTP-D self-distillation: a KL term between a draft step and the main head.

MTP-D (arXiv 2603.23911) adds, for each draft step k, beta_k * KL between the step's
distribution and the main head's distribution for the same target token, the main
head's logits detached, restricted to the main head's top N tokens. For a FastMTP head
the teacher of step k at position t (predicting x_{t+k+1}) is ``lm_head`` applied to
the trunk's final-normed state at position t+k: the frozen trunk computed it already.

Both distributions are renormalised over the teacher's top N tokens of each row. The
teacher's full-vocabulary logits exist one chunk of rows at a time and are dropped
after ``topk``; the student's are gathered at the N ids before any softmax, so what
autograd keeps is rows x N, never rows x V. The teacher at position j serves every
step (step k's row j-k), so it is computed once per position, not once per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

#: KL(student || teacher): the direction MTP-D's loss is reported with, KL(P_k, sg(Q))
REVERSE = "reverse"
#: KL(teacher || student): standard knowledge distillation (Hinton et al.)
FORWARD = "forward"
DIRECTIONS = (REVERSE, FORWARD)
#: rows whose full-vocabulary teacher logits exist at once (256 x 152k x 4 B = 156 MB)
CHUNK_ROWS = 256


@dataclass(frozen=True)
class KDConfig:
    """The self-distillation term: its weight, top-N restriction and direction."""

    weight: float
    top_n: int
    direction: str = REVERSE
    chunk_rows: int = CHUNK_ROWS


def teacher_top(
    hidden: torch.Tensor, lm_head: torch.Tensor, kd: KDConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The main head's top-N ids [P, n] and log-probabilities renormalised over them
    [P, n] float32, for trunk states hidden [P, H]; no gradient, ``kd.chunk_rows`` rows
    of full-vocabulary logits at a time."""
    ids_out, logp_out = [], []
    with torch.no_grad():
        for start in range(0, hidden.shape[0], kd.chunk_rows):
            full = F.linear(hidden[start : start + kd.chunk_rows].float(), lm_head.float())
            top, ids = full.topk(kd.top_n, dim=-1)  # [c, n] each; full [c, V] is dropped
            del full
            ids_out.append(ids)
            logp_out.append(F.log_softmax(top, dim=-1))  # [c, n]
    if not ids_out:
        empty = hidden.new_zeros((0, kd.top_n))
        return empty.long(), empty.float()
    return torch.cat(ids_out), torch.cat(logp_out)


def kl_from_top(
    student: torch.Tensor, ids: torch.Tensor, t_logp: torch.Tensor, direction: str
) -> torch.Tensor:
    """Summed KL over rows: student [R, V] logits, the teacher's ids [R, n] and
    log-probabilities [R, n] (:func:`teacher_top`). A float32 scalar."""
    s_logp = F.log_softmax(student.float().gather(-1, ids), dim=-1)  # [R, n]
    if direction == FORWARD:
        return (t_logp.exp() * (t_logp - s_logp)).sum()
    return (s_logp.exp() * (s_logp - t_logp)).sum()


def kl_sum(
    student: torch.Tensor,
    teacher_hidden: torch.Tensor,
    lm_head: torch.Tensor,
    kd: KDConfig,
) -> torch.Tensor:
    """Summed KL over rows between the student and the teacher's top-N distribution.

    student [N, V]: the draft step's logits (differentiable); teacher_hidden [N, H]:
    the trunk's final-normed states at the target's main-head position; lm_head [V, H].
    Returns a float32 scalar; the teacher gets no gradient.
    """
    ids, t_logp = teacher_top(teacher_hidden, lm_head, kd)  # [N, n] each
    return kl_from_top(student, ids, t_logp, kd.direction)
