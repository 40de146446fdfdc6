"""``fastmtp-export train``: fine-tune a checkpoint's MTP head with the FastMTP recipe.

The trunk, embedding and ``lm_head`` are frozen; only the MTP layer trains. Each
optimizer step takes ``batch`` sequences, runs them through the frozen trunk (no
gradient) in micro-batches, or takes their states from the cache of earlier epochs
(:mod:`.step`), applies the head recursively K times (:mod:`.loss`) and weights the
steps beta^(k-1); ``kd_weight`` adds MTP-D's KL term to the main head (:mod:`.kd`).
Step k's loss is the mean over the batch's step-k targets, so a long sequence weighs
by its tokens, as in upstream's token-level mean.

Data parallelism: under ``torchrun`` (``WORLD_SIZE`` > 1) every rank takes every
``world``-th sequence of each batch; target counts and gradients are summed across
ranks with ``torch.distributed`` (gloo on CPU, NCCL on GPU), so N processes compute
the same update as one, up to float summation order. The head is small (under 3 % of
the model), so one all-reduce per step is cheap and no DDP wrapper is needed; the
frozen trunk is replicated on every rank.

Outputs in ``--out``: ``model.safetensors`` (the trained layer, named
``model.mtp_layers.0.*``, in the source's dtype), the source's ``config.json`` and
tokenizer files byte for byte, and ``training.json``; ``export`` reads the directory
as a checkpoint, and ``eval --base SOURCE`` accepts the artifact made from it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._util.atomic import atomic_write
from .._version import __version__
from ..checkpoints.checkpoint import language_config
from ..errors import TrainError
from .data import DataStats, Sample, load_chat_tokenizer, read_samples
from .dist import Dist
from .filters import DataFilter
from .head import Head, trainable_head
from .kd import DIRECTIONS, REVERSE, KDConfig
from .loss import step_weights
from .progress import Reporter
from .shard import MODES, full_state, shard, should_shard
from .source import Source, check_out, clear_out
from .state import RECORD_NAME, STATE_NAME, WEIGHTS_NAME, load_state, restore, save_state
from .step import Trunk, cache_fits, train_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """The recipe (FastMTP's defaults) and the run's mechanics."""

    steps: int = 3  #: K, recursive applications of the head
    beta: float = 0.6  #: step k weighs beta^(k-1), normalised
    epochs: int = 1
    lr: float = 5e-5
    batch: int = 8  #: sequences per optimizer step, across all ranks
    warmup: float = 0.05  #: share of the steps with a linear warm-up, then cosine to 0
    max_length: int = 2048
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int = 50  #: optimizer steps between resumable states
    device: str = "auto"
    dtype: str = "auto"  #: the frozen trunk's dtype; the head trains in float32
    mtp_layer: int | None = None
    kd_weight: float = 0.0  #: MTP-D self-distillation: weight of the KL term, 0 = off
    kd_top_n: int = 10_000  #: the KL runs over the main head's top N tokens of each row
    kd_direction: str = REVERSE  #: reverse = KL(step || main head), forward = KL(main || step)
    micro_batch_tokens: int = 4096  #: padded tokens per forward; 0 = one sequence at a time
    cache_gb: float = 4.0  #: host memory for the trunk's states across epochs; 0 = recompute
    drop_cut: bool = False  #: leave out answers cut at the length limit
    max_repeat: float = 1.0  #: leave out answers with a larger repeated-4-gram share; 1 = off
    shard_head: str = "auto"  #: FSDP2 over the torchrun ranks: auto (when it cannot fit), on, off

    def data_filter(self) -> DataFilter:
        """The filters applied while reading --data."""
        return DataFilter(drop_cut=self.drop_cut, max_repeat=self.max_repeat)

    def kd(self) -> KDConfig | None:
        """The self-distillation term, or None when its weight is 0 (the plain loss)."""
        if self.kd_weight == 0:
            return None
        return KDConfig(self.kd_weight, self.kd_top_n, self.kd_direction)

    def check(self) -> None:
        """One line per impossible option, before anything is loaded."""
        problems = [
            (self.steps < 1, "--steps must be at least 1"),
            (not (math.isfinite(self.beta) and self.beta > 0), "--beta must be positive"),
            (self.epochs < 1, "--epochs must be at least 1"),
            (not (math.isfinite(self.lr) and self.lr > 0), "--lr must be positive"),
            (self.batch < 1, "--batch must be at least 1"),
            (not 0 <= self.warmup < 1, "--warmup must be in [0, 1)"),
            (self.max_length < 3, "--max-length must be at least 3"),
            (self.save_every < 1, "--save-every must be at least 1"),
            (
                not (math.isfinite(self.kd_weight) and self.kd_weight >= 0),
                "--kd-weight must be 0 (off) or a positive number",
            ),
            (self.kd_top_n < 1, "--kd-top-n must be at least 1"),
            (
                self.kd_direction not in DIRECTIONS,
                f"--kd-direction must be one of {', '.join(DIRECTIONS)}",
            ),
            (self.micro_batch_tokens < 0, "--micro-batch-tokens must be 0 or more"),
            (
                not (math.isfinite(self.cache_gb) and self.cache_gb >= 0),
                "--cache-gb must be 0 (off) or a positive number",
            ),
            (
                not (math.isfinite(self.max_repeat) and 0 <= self.max_repeat <= 1),
                "--max-repeat must be in [0, 1] (1: off)",
            ),
            (self.shard_head not in MODES, f"--shard-head must be one of {', '.join(MODES)}"),
        ]
        for bad, message in problems:
            if bad:
                raise TrainError(message)


@dataclass
class TrainResult:
    """What ``train`` did; ``record`` is ``training.json``."""

    out: Path
    optimizer_steps: int
    resumed_from: int
    seconds: float
    record: dict[str, Any] = field(default_factory=dict)


def _device(opts: TrainOptions) -> torch.device:
    from ..evaluate.target import pick_device

    device = pick_device(opts.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _schedule(opt: torch.optim.Optimizer, total: int, warmup: float) -> Any:
    """Linear warm-up over ``warmup`` of the steps, then cosine decay to zero."""
    warm = int(total * warmup)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(total - warm, 1)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _batch(step: int, n: int, opts: TrainOptions) -> list[int]:
    """Global sample indices of optimizer step ``step``: a seeded order per epoch."""
    per_epoch = math.ceil(n / opts.batch)
    epoch, b = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(opts.seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=gen).tolist()
    return order[b * opts.batch : (b + 1) * opts.batch]


def train(
    source: Path,
    data: list[Path],
    out: Path,
    opts: TrainOptions,
    *,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool | None = None,
) -> TrainResult:
    """Fine-tune the MTP head of ``source`` on ``data``; write a head checkpoint to ``out``.

    Raises:
        TrainError: bad options or data, an ``--out`` that overlaps the inputs or holds
            another run, a resume state from other options.
        SourceError, ContractError: the source is not a readable MTP checkpoint.
        TokenizerError: the source holds no usable tokenizer.
    """
    opts.check()
    check_out(out, source, data, resume=resume, overwrite=overwrite)
    src = Source.open(source, opts.mtp_layer)
    vocab = int(src.ckpt.config.get("vocab_size", 0))
    if opts.kd_weight > 0 and vocab and opts.kd_top_n > vocab:
        raise TrainError(
            f"--kd-top-n {opts.kd_top_n} exceeds the vocabulary ({vocab} tokens); pass at "
            f"most {vocab}"
        )
    samples, stats = read_samples(
        data, load_chat_tokenizer(source), max_length=opts.max_length, keep=opts.data_filter()
    )
    identity = {
        "options": json.dumps(
            {
                k: v
                for k, v in dataclasses.asdict(opts).items()
                if k not in ("save_every", "device", "shard_head")  # states resume across
            },
            sort_keys=True,
        ),
        "data": stats.sha256,
        "source": src.ckpt.config_sha256,
    }
    device = _device(opts)
    dist = Dist(device)
    try:
        return _run(
            src, samples, stats, out, opts, identity, dist, device, resume, overwrite, show_progress
        )
    finally:
        dist.close()


def _run(
    src: Source,
    samples: list[Sample],
    stats: DataStats,
    out: Path,
    opts: TrainOptions,
    identity: dict[str, Any],
    dist: Dist,
    device: torch.device,
    resume: bool,
    overwrite: bool,
    show_progress: bool | None,
) -> TrainResult:
    from ..evaluate.target import pick_dtype

    writer = dist.rank == 0
    source_weights = src.head_weights()
    params = sum(t.numel() for t in source_weights.values())
    dist.sharded = should_shard(opts.shard_head, params, device, dist.world)
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite and not resume:
            clear_out(out)
    state = load_state(out, identity) if resume else None
    torch.manual_seed(opts.seed)
    started = time.perf_counter()
    dtype = pick_dtype(opts.dtype, device)
    cache = opts.epochs > 1 and cache_fits(
        samples, int(language_config(src.ckpt.config)["hidden_size"]), dtype, opts.cache_gb
    )
    model = src.load_target(device, dtype)
    trunk = Trunk(model, device, cache=cache)
    head = trainable_head(
        src.plan.family,
        source_weights,
        src.ckpt.config,
        model.get_input_embeddings().weight,
        model.get_output_embeddings().weight,
    )
    if dist.sharded:  # built in host memory: fully_shard moves each rank's shard to device
        shard(head, device, dist.world)
    else:
        head.to(device)
    opt = torch.optim.AdamW(
        list(head.parameters()), lr=opts.lr, betas=(0.9, 0.95), weight_decay=0.0
    )
    total = opts.epochs * math.ceil(len(samples) / opts.batch)
    sched = _schedule(opt, total, opts.warmup)
    start = 0
    if state is not None:
        start = restore(out, state, head, opt, sched, total, sharded=dist.sharded)
        log.info("resuming at optimizer step %d of %d", start, total)
    weights = torch.tensor(step_weights(opts.beta, opts.steps), device=device)  # [K]
    log.info(
        "training %s's MTP layer: %d sequences, %d target tokens, K=%d, weights %s, "
        "%d steps of %d, %d process(es)%s, KL weight %g, trunk states %s",
        src.ckpt.path, len(samples), stats.target_tokens, opts.steps,
        "/".join(f"{w:.2f}" for w in weights.tolist()), total, opts.batch, dist.world,
        " (head sharded)" if dist.sharded else "", opts.kd_weight,
        "cached" if cache else "recomputed each epoch",
    )  # fmt: skip
    history: list[dict[str, Any]] = list(state["history"]) if state is not None else []
    reporter = Reporter(total, start, opts.steps, enabled=show_progress if writer else False)
    with reporter:
        for step in range(start, total):
            losses, kl = _step(
                step, samples, opts, trunk, head, opt, weights, opts.kd(), dist, device
            )
            sched.step()
            entry: dict[str, Any] = {"step": step + 1, "loss": [round(x, 5) for x in losses]}
            if kl is not None:
                entry["kl"] = [round(x, 5) for x in kl]
            history.append(entry)
            reporter.update(losses, sched.get_last_lr()[0])
            if (step + 1) % opts.save_every == 0 and step + 1 < total:
                saved = _state(step + 1, head, opt, sched, identity, history, dist)
                if writer:
                    save_state(out, saved)
    record = _record(src, stats, opts, dist, history, start, total, time.perf_counter() - started)
    trained = full_state(head, opt)[0] if dist.sharded else head.state_dict()  # collective
    if writer:
        _write_outputs(out, src, head.weights(trained), source_weights, record)
    return TrainResult(out, total, start, time.perf_counter() - started, record)


def _step(
    step: int,
    samples: list[Sample],
    opts: TrainOptions,
    trunk: Trunk,
    head: Head,
    opt: torch.optim.Optimizer,
    weights: torch.Tensor,
    kd: KDConfig | None,
    dist: Dist,
    device: torch.device,
) -> tuple[list[float], list[float] | None]:
    """One optimizer step; returns the batch's mean loss (and KL) per step position."""
    mine = _batch(step, len(samples), opts)[dist.rank :: dist.world]
    opt.zero_grad(set_to_none=False)
    ce, kl = train_step(
        mine, samples, opts.steps, opts.micro_batch_tokens, trunk, head, weights, kd, dist, device
    )  # [K], [K] or None
    torch.nn.utils.clip_grad_norm_(list(head.parameters()), opts.max_grad_norm)
    opt.step()
    return ce.tolist(), None if kl is None else kl.tolist()


def _state(
    step: int,
    head: Head,
    opt: Any,
    sched: Any,
    identity: dict[str, Any],
    history: list[Any],
    dist: Dist,
) -> dict[str, Any]:
    """What ``--resume`` restores; full tensors (gathered from every rank when sharded)."""
    model, optim = full_state(head, opt) if dist.sharded else (head.state_dict(), opt.state_dict())
    return {
        "step": step,
        "head": model,
        "optimizer": optim,
        "schedule": sched.state_dict(),
        "identity": identity,
        "history": history,
    }


def _record(
    src: Source,
    stats: DataStats,
    opts: TrainOptions,
    dist: Dist,
    history: list[dict[str, Any]],
    start: int,
    total: int,
    seconds: float,
) -> dict[str, Any]:
    return {
        "tool": {"name": "fastmtp-export", "version": __version__},
        "source": {"path": str(src.ckpt.path), "config_sha256": src.ckpt.config_sha256,
                   "family": src.plan.family, "mtp_layer": src.plan.layer},
        "data": dataclasses.asdict(stats),
        "options": dataclasses.asdict(opts),
        "step_weights": step_weights(opts.beta, opts.steps),
        "processes": dist.world,
        "optimizer_steps": total,
        "resumed_from": start,
        "seconds": round(seconds, 2),
        "history": history,
    }  # fmt: skip


def _write_outputs(
    out: Path,
    src: Source,
    weights: dict[str, torch.Tensor],
    source_weights: dict[str, torch.Tensor],
    record: dict[str, Any],
) -> None:
    """The head checkpoint, each file atomically; ``training.json`` last marks it done.

    Tensors keep their *source* names (a DeepSeek NextN layer stays ``model.layers.L.*``),
    so the checkpoint, with the source's config carried over, is an export source.
    """
    from safetensors.torch import save

    trained = {
        src.plan.tensors[k].name: v.to(source_weights[k].dtype).cpu().contiguous()
        for k, v in weights.items()
    }
    atomic_write(out / WEIGHTS_NAME, save(trained, metadata={"format": "pt"}))
    src.carry(out)
    atomic_write(out / RECORD_NAME, (json.dumps(record, indent=2) + "\n").encode())
    (out / STATE_NAME).unlink(missing_ok=True)
