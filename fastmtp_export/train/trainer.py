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
from .head import Head, trainable_head
from .kd import KDConfig
from .loss import step_weights
from .options import TrainOptions
from .progress import Reporter
from .shard import full_model, full_state, shard, should_shard
from .source import Source, check_out, clear_out
from .state import RECORD_NAME, STATE_NAME, WEIGHTS_NAME, load_state, restore, save_state
from .step import Trunk, cache_fits, train_step

log = logging.getLogger(__name__)


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
    device = _device(opts)
    recorded = None
    if opts.hidden is not None:  # checked whole before anything trains
        from .hidden_store import open_recorded

        recorded = open_recorded(
            opts.hidden, source, samples, data, device=device,
            max_length=opts.max_length, keep=opts.data_filter(),
        )  # fmt: skip
    identity = {
        "options": json.dumps(
            {
                k: v
                for k, v in dataclasses.asdict(opts).items()
                if k not in ("save_every", "device", "shard_head", "hidden")  # resume across
            },
            sort_keys=True,
        ),
        "data": stats.sha256,
        "source": src.ckpt.config_sha256,
    }
    dist = Dist(device)
    try:
        return _run(
            src, samples, stats, out, opts, identity, dist, device, resume, overwrite,
            show_progress, recorded,
        )  # fmt: skip
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
    recorded: Any = None,
) -> TrainResult:
    """The run; ``recorded``: a :class:`~.hidden_store.RecordedTrunk` replacing the trunk."""
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
    if recorded is not None:  # no trunk: the embedding and head are read from the source
        trunk, (embed, lm_head) = recorded, src.embed_and_head(device)
    else:
        model = src.load_target(device, dtype)
        trunk = Trunk(model, device, cache=cache)
        embed, lm_head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    head = trainable_head(src.plan.family, source_weights, src.ckpt.config, embed, lm_head)
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
        f"recorded in {opts.hidden}" if recorded is not None
        else "cached" if cache else "recomputed each epoch",
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
    trained = full_model(head) if dist.sharded else head.state_dict()  # collective
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
        "options": {**dataclasses.asdict(opts), "hidden": opts.hidden and str(opts.hidden)},
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
