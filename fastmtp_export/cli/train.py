"""``fastmtp-export train SOURCE --data FILE --out DIR``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from ._errors import handle_errors
from ._options import DropCutOpt, JsonOpt, MaxLengthOpt, MaxRepeatOpt, OverwriteOpt, QuietOpt
from ._output import emit_json, setup_logging

log = logging.getLogger("fastmtp_export.cli")

EXAMPLES = """Examples:

\b
  fastmtp-export train ./MiMo-7B-RL --data distilled.jsonl --out ./mimo-head
  fastmtp-export train ./MiMo-7B-RL --data en.jsonl --data zh.jsonl --out ./head --epochs 3
  torchrun --nproc-per-node 8 -m fastmtp_export train ./MiMo-7B-RL --data d.jsonl --out ./head
  torchrun --nproc-per-node 8 -m fastmtp_export train ./V3 --data d.jsonl --out ./h --shard-head on
  fastmtp-export train ./MiMo-7B-RL --data d.jsonl --out ./head --resume
  fastmtp-export train ./MiMo-7B-RL --data d.jsonl --out ./head --kd-weight 1 --kd-top-n 10000
  fastmtp-export export ./mimo-head --out ./draft --token-maps ./maps
  fastmtp-export train ./MiMo-7B-RL --data d.jsonl --out ./head --export ./draft --token-maps ./maps
"""


@handle_errors
def train(
    source: Annotated[
        Path,
        typer.Argument(
            help="Local checkpoint directory with its MTP head and tokenizer.",
            metavar="SOURCE",
            show_default=False,
        ),
    ],
    data: Annotated[
        list[Path],
        typer.Option(
            help='Self-distilled JSONL ({"messages": [...]} or {"text": ...}); repeatable.',
            metavar="FILE",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Head checkpoint directory to write.",
            metavar="DIR",
            show_default=False,
        ),
    ],  # fmt: skip
    steps: Annotated[int, typer.Option(help="K: recursive applications of the head.")] = 3,
    beta: Annotated[float, typer.Option(help="Step k's loss weighs beta^(k-1), normalised.")] = 0.6,
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 1,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, betas 0.9/0.95).")] = 5e-5,
    batch: Annotated[
        int, typer.Option(help="Sequences per optimizer step, across all processes.")
    ] = 8,
    warmup: Annotated[
        float, typer.Option(help="Share of steps with linear warm-up, then cosine to 0.")
    ] = 0.05,
    max_length: MaxLengthOpt = 2048,
    seed: Annotated[int, typer.Option(help="Seed of the data order.")] = 0,
    save_every: Annotated[
        int, typer.Option(help="Optimizer steps between resumable states (train_state.pt).")
    ] = 50,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="Frozen trunk dtype: auto (bf16 on CUDA, fp32 on CPU), fp32, bf16.")
    ] = "auto",
    mtp_layer: Annotated[
        int | None, typer.Option(help="MTP layer to train [default: the first].")
    ] = None,
    kd_weight: Annotated[
        float,
        typer.Option(
            help="MTP-D self-distillation: weight of the KL term to the main head (0: off)."
        ),
    ] = 0.0,
    kd_top_n: Annotated[
        int, typer.Option(help="The KL term runs over the main head's top N tokens per row.")
    ] = 10_000,
    kd_direction: Annotated[
        str,
        typer.Option(
            help="reverse: KL(step || main head), MTP-D's; forward: KL(main head || step)."
        ),
    ] = "reverse",
    micro_batch_tokens: Annotated[
        int,
        typer.Option(help="Padded tokens per forward (sequences run together); 0: one at a time."),
    ] = 4096,
    cache_gb: Annotated[
        float,
        typer.Option(
            help="Host memory (GiB, per process) for the trunk's states across epochs; 0: off."
        ),
    ] = 4.0,
    drop_cut: DropCutOpt = False,
    max_repeat: MaxRepeatOpt = 1.0,
    hidden: Annotated[
        Path | None,
        typer.Option(
            help="Trunk states recorded by `record-hidden` from the serving engine: the trunk is "
            "not loaded (only the embedding, lm_head and the head)."
        ),
    ] = None,
    shard_head: Annotated[
        str,
        typer.Option(
            help="Shard the head's parameters, gradients and AdamW state over the torchrun "
            "ranks with PyTorch FSDP2: auto (when they do not fit half a device), on, off."
        ),
    ] = "auto",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the stopped run in --out.")
    ] = False,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Also write the draft artifact here once training ends (as `export`).",
            metavar="DRAFT",
        ),
    ] = None,
    token_maps: Annotated[
        Path | None,
        typer.Option(
            help="With --export: ship the maps of this token-map build directory.",
            metavar="MAPDIR",
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune the MTP head of SOURCE on self-distilled data (the FastMTP recipe).

    The trunk, embeddings and lm_head stay frozen; the one MTP layer is applied K times
    recursively and step k's loss weighs beta^(k-1). Writes the trained layer, the
    source's config and tokenizer, and training.json to DIR; `export DIR` makes the
    draft, or --export does it at the end. Under torchrun every process takes a share
    of each batch (and the first process exports).
    """
    from ..train.progress import loss_text
    from ..train.trainer import TrainOptions
    from ..train.trainer import train as run

    if dtype not in ("auto", "fp32", "bf16", "fp16"):
        raise typer.BadParameter("use auto, fp32, bf16 or fp16", param_hint="--dtype")
    _check_export(export, token_maps, overwrite)  # before the run, not after it
    setup_logging(quiet)
    opts = TrainOptions(
        steps=steps, beta=beta, epochs=epochs, lr=lr, batch=batch, warmup=warmup,
        max_length=max_length, seed=seed, save_every=save_every, device=device, dtype=dtype,
        mtp_layer=mtp_layer, kd_weight=kd_weight, kd_top_n=kd_top_n, kd_direction=kd_direction,
        micro_batch_tokens=micro_batch_tokens, cache_gb=cache_gb, drop_cut=drop_cut,
        max_repeat=max_repeat, shard_head=shard_head, hidden=hidden,
    )  # fmt: skip
    result = run(
        source, data, out, opts, resume=resume, overwrite=overwrite,
        show_progress=False if quiet else None,
    )  # fmt: skip
    last = result.record["history"][-1]["loss"] if result.record["history"] else []
    artifact = None
    if export is not None and int(os.environ.get("RANK", "0")) == 0:
        from ..artifact.export import export_draft

        artifact = export_draft(
            result.out, export, overwrite=overwrite, token_maps=token_maps,
            progress=False if quiet else None,
        ).out  # fmt: skip
    if json_out:
        emit_json(
            {
                "out": str(result.out),
                "optimizer_steps": result.optimizer_steps,
                "resumed_from": result.resumed_from,
                "seconds": round(result.seconds, 3),
                "final_loss": last,
                "data": result.record["data"],
                "artifact": None if artifact is None else str(artifact),
            }
        )
        return
    log.info(
        "trained %d steps in %.1f s; final loss per step %s",
        result.optimizer_steps,
        result.seconds,
        loss_text(last),
    )
    if artifact is not None:
        log.info("draft artifact written to %s", artifact)
        typer.echo(str(artifact))
        return
    log.info("export with:\n  fastmtp-export export %s --out DRAFT_DIR", result.out)
    typer.echo(str(result.out))


def _check_export(export: Path | None, token_maps: Path | None, overwrite: bool) -> None:
    """What --export will need, checked before hours of training rather than after."""
    from ..errors import TrainError
    from ..maps.summary import SUMMARY_NAME

    if export is None:
        if token_maps is not None:
            raise TrainError("--token-maps goes with --export DRAFT; add --export or drop it")
        return
    if export.exists() and not overwrite:
        raise TrainError(f"--export {export} exists; choose a new directory or pass --overwrite")
    if token_maps is not None and not (token_maps / SUMMARY_NAME).is_file():
        raise TrainError(
            f"--token-maps {token_maps} has no {SUMMARY_NAME}; pass a `token-map build` directory"
        )
