"""One GPU check of sglang_patch and the trainer at MiMo-7B shapes; needs only PyTorch.

The GPU machines this project is lent have PyTorch but no SGLang and cannot install
anything, so this script needs nothing but torch and the project's own SGLang-free code
(the plugin's bank and draft hooks, the trainer's head and loss). Four parts, one JSON:

1. ``graphs``: the bank (V 151,680, H 4,096, bf16, 3 languages, K 32,768, K_u 2K) under
   captured CUDA graphs of an SGLang-shaped chain draft (and draft-extend), switched
   between replays by the plugin's own hooks; every replay compared with an eager run
   built from the target head alone. A difference fails the check (exit 1).
2. ``costs``: draft head step at K, K_u and V per batch size; switch vs a copy of the
   same bytes; the bank's memory vs the documented figure.
3. ``hooks``: the draft hooks' host time per round, batch 1 to 256, as a share of a
   MiMo-7B-shaped bf16 decode step measured in the same run (goal: under 1 %).
4. ``train``: the head's K=3 training step (bf16 autocast and float32; with MTP-D's KL
   term when the trainer has it) vs a forward-only pass, in tokens per second.

Without a GPU (or with ``--cpu``) the same parts run at tiny shapes, without graphs
(a "capture" binds the tensors a graph would bake): the test suite runs that.

Usage: python bench/gpu_check.py [--out bench/out/gpu_check.json] [--cpu | --require-gpu]
       [--parts graphs,costs,hooks,train] [--k 32768] [--corrupt rebind|carry]
Device tool: python3 bench/gpu_check.py --require-gpu --out $OUT/gpu_check.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _gpu_common import CPU, GPU, ROOT, Shapes, language_maps

PARTS = ("graphs", "costs", "hooks", "train")
#: a check that must fail, for the test that proves the check can fail (see --corrupt)
CORRUPT_ENV = "FASTMTP_GPU_CHECK_CORRUPT"


def _args() -> argparse.Namespace:
    from _draft_graphs import CORRUPTIONS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpu_check.json")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--cpu", action="store_true", help="tiny shapes on the CPU, no graphs")
    mode.add_argument("--require-gpu", action="store_true", help="fail if CUDA is unavailable")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of parts")
    ap.add_argument("--k", type=int, default=GPU.k, help="one map's size on the GPU (K_u = 2K)")
    ap.add_argument(
        "--corrupt",
        choices=CORRUPTIONS,
        default=os.environ.get(CORRUPT_ENV) or None,
        help="break the plugin on purpose (rebind: a switch into new buffers, as graphs "
        "cannot follow; carry: no full-id carry after the extend); the check must fail",
    )
    args = ap.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    if bad := [p for p in parts if p not in PARTS]:
        sys.exit(f"error: unknown part {bad[0]!r}; choose from {', '.join(PARTS)}")
    if args.corrupt and args.corrupt not in CORRUPTIONS:
        sys.exit(f"error: {CORRUPT_ENV}={args.corrupt!r}; use one of {', '.join(CORRUPTIONS)}")
    if not 1 <= args.k <= GPU.vocab // 2:
        sys.exit(f"error: --k {args.k} must lie in [1, {GPU.vocab // 2}] (K_u = 2K <= V)")
    if args.require_gpu and not torch.cuda.is_available():
        sys.exit("error: --require-gpu but torch sees no CUDA device; run on a GPU machine")
    args.parts = parts
    return args


def _environment(device: torch.device, shapes: Shapes) -> dict[str, Any]:
    env: dict[str, Any] = {
        "mode": "gpu" if device.type == "cuda" else "cpu",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "host": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "shapes": {
            "name": shapes.name,
            "vocab": shapes.vocab,
            "hidden": shapes.hidden,
            "k": shapes.k,
            "k_u": shapes.rows,
            "languages": shapes.langs,
            "steps": shapes.steps,
            "dtype": "bfloat16",
        },  # fmt: skip
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30)
    return env


def _run(name: str, fn: Callable[[], dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """One part; an exception is recorded (and fails the check) instead of losing the rest."""
    start = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:  # one part's failure must not lose the other parts' figures
        traceback.print_exc()
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    out["seconds"] = round(time.perf_counter() - start, 2)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print(f"gpu_check: {name} done in {out['seconds']} s", file=sys.stderr, flush=True)
    return out


def main() -> int:
    args = _args()
    from _draft_graphs import check_graphs
    from _gpu_costs import costs
    from _train_step import train_part
    from bench_hooks import hooks_part

    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    shapes = dataclasses.replace(GPU, k=args.k) if cuda else CPU
    start = time.perf_counter()
    result: dict[str, Any] = _environment(device, shapes)
    if not cuda and not args.cpu:
        result["note"] = "no CUDA device: tiny shapes on the CPU, no graphs"
    maps = language_maps(shapes)
    gen = torch.Generator(device=device).manual_seed(0)
    # [V, H] the target's lm_head (random: ids and costs do not depend on its values)
    head = torch.randn(shapes.vocab, shapes.hidden, generator=gen, device=device)
    head = head.to(torch.bfloat16)
    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "graphs": lambda: check_graphs(shapes, maps, head, args.corrupt),
        "costs": lambda: costs(shapes, maps, head),
        "hooks": lambda: hooks_part(shapes, device, measure_step=cuda),
        "train": lambda: train_part(shapes, device),
    }
    for name in (p for p in PARTS if p in args.parts):
        if name == "train":
            head = torch.empty(0)  # free the target head before the largest part
        result[name] = _run(name, parts[name], device)
    failures = [n for n in args.parts if result[n].get("ok") is False or "error" in result[n]]
    result["failures"] = failures
    result["ok"] = not failures
    result["wall_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    if failures:
        print(f"gpu_check: FAILED: {', '.join(failures)} (see {args.out})", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
