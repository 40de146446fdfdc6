"""Cost of one language switch in sglang_patch's bank, against a plain copy of the same bytes.

A switch copies one language's hot ids [K] and head rows [K, H] into the fixed active
buffers (so captured CUDA graphs stay valid). The baseline, measured in the same run,
is ``torch.Tensor.copy_`` of a same-sized [K, H] tensor: the switch should cost about
one such copy. Runs on CUDA when available (the figure that matters), else CPU.

Usage: python bench/bench_bank_switch.py [--k 32768] [--hidden 4096] [--langs 2] [--json FILE]
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
    """Median seconds per call."""
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
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator().manual_seed(0)
    head = torch.randn(args.vocab, args.hidden, generator=gen).to(device, torch.bfloat16)  # [V, H]
    maps = {
        f"l{i}": torch.randperm(args.vocab, generator=gen)[: args.k].tolist()
        for i in range(args.langs)
    }
    start = time.perf_counter()
    bank = DraftVocabBank(maps, head, default="l0")
    build_s = time.perf_counter() - start
    names = list(maps)
    state = {"i": 0}

    def switch() -> None:
        state["i"] = (state["i"] + 1) % len(names)
        bank.switch(names[state["i"]])

    src = torch.empty_like(bank.active_head).normal_()  # [K, H], same bytes as one switch
    dst = torch.empty_like(src)
    copy_s = timed(lambda: dst.copy_(src), device, args.repeats)
    switch_s = timed(switch, device, args.repeats)
    result = {
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "k": args.k,
        "hidden": args.hidden,
        "languages": args.langs,
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
