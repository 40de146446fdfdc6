"""gpu_check part 4: the head's training step at MiMo-7B shapes against a forward-only pass.

``fastmtp_export.train``'s own head and loss: the MTP layer applied K=3 times
recursively (teacher-forced), per-step cross-entropy over the full-vocabulary ``lm_head``,
weighted 0.51/0.31/0.18 and divided by each step's targets as ``train/step.py`` does,
then the backward. Timed in bf16 autocast (float32 master weights) and in float32 (what
``train`` runs today), with and without the MTP-D self-distillation term
(``train/kd.py``, top 10,000) when this checkout has it. Baseline, same run and
precision: one forward of the same layer plus ``lm_head`` over the same tokens, no
gradient, i.e. what drafting that sequence once costs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from _gpu_common import Shapes, timed

from fastmtp_export.checkpoints.synthetic import mimo_config, mimo_tensor_shapes
from fastmtp_export.train import loss as loss_module
from fastmtp_export.train.head import TrainableHead

STEPS = 3
KD_TOP_N = 10_000  # the trainer's default --kd-top-n


def _kd_config(top_n: int) -> Any | None:
    """MTP-D's KL term when this checkout's trainer has it (``train/kd.py``), else None."""
    try:
        from fastmtp_export.train.kd import KDConfig
    except ImportError:
        return None
    return KDConfig(weight=1.0, top_n=top_n) if hasattr(loss_module, "losses") else None


def _head(shapes: Shapes, device: torch.device) -> tuple[TrainableHead, dict[str, Any]]:
    cfg = mimo_config(shapes.model)
    gen = torch.Generator(device=device).manual_seed(5)
    weights = {}
    for name, shape in mimo_tensor_shapes(cfg, include_trunk=False).items():
        if name.startswith("model.mtp_layers.0."):
            t = torch.randn(*shape, generator=gen, device=device) * 0.02
            weights[name] = torch.ones(shape, device=device) if name.endswith("norm.weight") else t
    v, h = shapes.vocab, shapes.hidden
    embed = torch.randn(v, h, generator=gen, device=device) * 0.02  # [V, H] float32
    lm_head = torch.randn(v, h, generator=gen, device=device) * 0.02  # [V, H] float32
    return TrainableHead(weights, cfg, embed, lm_head), cfg


def train_part(shapes: Shapes, device: torch.device) -> dict[str, Any]:
    """Tokens per second of a training step, as ratios to the forward-only pass."""
    head, _cfg = _head(shapes, device)
    t = shapes.train_tokens
    gen = torch.Generator(device=device).manual_seed(6)
    ids = torch.randint(shapes.vocab, (t,), generator=gen, device=device)  # [T]
    mask = torch.ones(t, dtype=torch.bool, device=device)  # [T]: every token a target
    hidden = torch.randn(t, shapes.hidden, generator=gen, device=device)  # [T, H]
    positions = torch.arange(t, device=device)  # [T]
    kd = _kd_config(min(KD_TOP_N, shapes.vocab // 2))
    out: dict[str, Any] = {
        "tokens": t,
        "steps": STEPS,
        "kd": None if kd is None else {"top_n": kd.top_n, "direction": kd.direction},
        "kd_note": None if kd is not None else "train/kd.py absent: timed without KL",
    }

    def precision(bf16: bool) -> contextlib.AbstractContextManager[Any]:
        if not bf16:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def forward_only(bf16: bool) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad(), precision(bf16):
                h = head.step(hidden, torch.roll(ids, -1), positions)  # [T, H]
                return head.logits(h).argmax(-1)  # [T]

        return run

    def train_step(bf16: bool, steps: int, with_kd: bool) -> Callable[[], object]:
        weights = torch.tensor(loss_module.step_weights(0.6, steps), device=device)  # [K]
        denom = loss_module.target_counts(mask, steps).clamp(min=1)  # [K]

        def run() -> object:
            with precision(bf16):
                if with_kd:
                    ce, kl = loss_module.losses(head, hidden, ids, mask, steps, kd)
                    assert kl is not None
                    total = ((weights * (ce + kl)) / denom).sum()
                else:
                    total = ((weights * loss_module.step_losses(head, hidden, ids, mask, steps))
                             / denom).sum()  # fmt: skip
            total.backward()
            head.zero_grad(set_to_none=True)
            return None

        return run

    reps = max(3, shapes.repeats // 4)
    for label, bf16 in (("bf16", True), ("fp32", False)):
        base = timed(forward_only(bf16), device, reps)
        row: dict[str, Any] = {"forward_only_tok_s": round(t / base)}
        cases = [("k3", STEPS, False), ("k1", 1, False)] + ([("k3_kd", STEPS, True)] if kd else [])
        for name, steps, with_kd in cases:
            sec = timed(train_step(bf16, steps, with_kd), device, reps)
            row[f"{name}_tok_s"] = round(t / sec)
            row[f"ratio_{name}_vs_forward"] = round(base / sec, 4)
        out[label] = row
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out
