"""sglang_patch's draft head at MiMo-7B shapes: per-step cost at K, K_u and V, and a switch.

Two questions, each answered as a ratio to a baseline measured in the same run:

1. **Per draft step**, what does the wider union head cost? The draft ``lm_head`` matmul
   ``[B, H] x [H, rows]`` plus the argmax, at rows = K (one map, stock SGLang with a
   token map), K_u (the union buffer, default 2K) and V (no map). Baseline: rows = K.
2. **Per switch** (only when a batch's language set changes): the bank gathers the new
   set's K_u head rows from the target's head, writes the ids and rebuilds the [V]
   inverse, all in place. Baseline: ``copy_`` of the same [K_u, H] bytes, the cost of
   the previous design's switch from resident per-language copies, which needed
   (L+1)·K·H more memory.

Runs on CUDA when available (the figures that matter), else CPU.

Usage: python bench/bench_bank_switch.py [--k 32768] [--hidden 4096] [--vocab 151680]
       [--langs 2] [--batch 8] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sglang_patch.bank import DraftVocabBank


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds per call (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=32768)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=151680)
    ap.add_argument("--langs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="draft rows per step (requests)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    gen = torch.Generator().manual_seed(0)
    head = torch.randn(args.vocab, args.hidden, generator=gen).to(device, dtype)  # [V, H]
    maps = {
        f"l{i}": torch.randperm(args.vocab, generator=gen)[: args.k].tolist()
        for i in range(args.langs)
    }
    start = time.perf_counter()
    bank = DraftVocabBank(maps, head, default="l0")
    build_s = time.perf_counter() - start

    states = torch.randn(args.batch, args.hidden, generator=gen).to(device, dtype)  # [B, H]
    step: dict[str, float] = {}
    for name, rows in (("k", args.k), ("k_u", bank.rows), ("vocab", args.vocab)):
        w = head[:rows].contiguous()  # [rows, H]

        def draft_step(w: torch.Tensor = w) -> torch.Tensor:
            return (states @ w.T).argmax(-1)  # [B]

        step[name] = timed(draft_step, device, args.repeats)

    sets = list(bank.sets)
    state = {"i": 0}

    def switch() -> None:
        state["i"] = (state["i"] + 1) % len(sets)
        bank.switch(sets[state["i"]])

    src = torch.empty_like(bank.active_head).normal_()  # [K_u, H], the bytes one switch writes
    dst = torch.empty_like(src)
    copy_s = timed(lambda: dst.copy_(src), device, args.repeats)
    switch_s = timed(switch, device, args.repeats)
    itemsize = head.element_size()
    result = {
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "k": args.k,
        "k_u": bank.rows,
        "vocab": args.vocab,
        "hidden": args.hidden,
        "languages": args.langs,
        "batch": args.batch,
        "head_mib_per_step": {
            "k": round(args.k * args.hidden * itemsize / 2**20, 1),
            "k_u": round(bank.rows * args.hidden * itemsize / 2**20, 1),
            "vocab": round(args.vocab * args.hidden * itemsize / 2**20, 1),
        },
        "step_ms": {k: round(v * 1e3, 3) for k, v in step.items()},
        "ratio_step_k_u_vs_k": round(step["k_u"] / step["k"], 2),
        "ratio_step_vocab_vs_k": round(step["vocab"] / step["k"], 2),
        "bank_mib": round(bank.nbytes / 2**20, 1),
        "bank_build_s": round(build_s, 3),
        "baseline_copy_ms": round(copy_s * 1e3, 3),
        "switch_ms": round(switch_s * 1e3, 3),
        "ratio_switch_vs_copy": round(switch_s / copy_s, 2),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
