"""gpu_check part 2: what the union buffer, a switch and the bank cost, as same-run ratios.

- Per draft step: the head matmul and argmax at K rows (one map, stock SGLang with a
  token map), K_u (the plugin's union buffer) and V (no map), per batch size; ratios to K.
- Per switch: ``DraftVocabBank.switch`` cycling through every set, against ``copy_`` of
  the same [K_u, H] bytes.
- Memory: what building the bank allocates (``torch.cuda.max_memory_allocated``; resident
  and peak) against the figure docs/sglang_patch.md ("Memory") gives: K_u·H·2 bytes of
  head, V·8 of inverse, S·K_u·4 of table, 2·K_u·8 of ids.
"""

from __future__ import annotations

from typing import Any

import torch
from _gpu_common import Shapes, timed

from sglang_patch.bank import DraftVocabBank

MIB = 2**20


def documented_bytes(shapes: Shapes, sets: int, itemsize: int) -> int:
    """The bank's size by the formula docs/sglang_patch.md states (TP 1)."""
    rows = shapes.rows
    return rows * shapes.hidden * itemsize + shapes.vocab * 8 + sets * rows * 4 + 2 * rows * 8


def _bank_memory(maps: dict[str, list[int]], head: torch.Tensor, shapes: Shapes) -> dict[str, Any]:
    device = head.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    bank = DraftVocabBank(maps, head, default=sorted(maps)[0])
    documented = documented_bytes(shapes, len(bank.sets), head.element_size())
    out: dict[str, Any] = {
        "sets": len(bank.sets),
        "documented_mib": round(documented / MIB, 2),
        "nbytes_mib": round(bank.nbytes / MIB, 2),
        "resident_mib": None,
        "peak_mib": None,
    }
    if cuda:
        resident = torch.cuda.memory_allocated(device) - before
        peak = torch.cuda.max_memory_allocated(device) - before
        out |= {
            "resident_mib": round(resident / MIB, 2),
            "peak_mib": round(peak / MIB, 2),
            "ratio_resident_vs_documented": round(resident / documented, 3),
            "ratio_peak_vs_documented": round(peak / documented, 3),
        }
    del bank
    return out


def costs(shapes: Shapes, maps: dict[str, list[int]], head: torch.Tensor) -> dict[str, Any]:
    """Every figure of part 2 (one run, one device)."""
    device = head.device
    memory = _bank_memory(maps, head, shapes)
    bank = DraftVocabBank(maps, head, default=sorted(maps)[0])
    first = torch.tensor(maps[sorted(maps)[0]], device=device)
    weights = {
        "k": head[first],  # [K, H]: one map's rows, as stock SGLang slices them
        "k_u": bank.active_head,  # [K_u, H]
        "vocab": head,  # [V, H]
    }
    gen = torch.Generator(device=device).manual_seed(2)
    step: dict[str, dict[str, float]] = {}
    for bs in shapes.cost_bs:
        states = torch.randn(bs, shapes.hidden, generator=gen, device=device).to(head.dtype)
        row = {}
        for name, w in weights.items():

            def draft_step(w: torch.Tensor = w, s: torch.Tensor = states) -> torch.Tensor:
                return torch.argmax(s @ w.T, dim=-1)  # [B]

            row[name] = timed(draft_step, device, shapes.repeats, inner=10) * 1e3
        step[str(bs)] = {
            "k_ms": round(row["k"], 4),
            "k_u_ms": round(row["k_u"], 4),
            "vocab_ms": round(row["vocab"], 4),
            "ratio_k_u_vs_k": round(row["k_u"] / row["k"], 3),
            "ratio_vocab_vs_k": round(row["vocab"] / row["k"], 3),
        }
    sets = list(bank.sets)
    turn = {"i": 0}

    def switch() -> None:
        turn["i"] = (turn["i"] + 1) % len(sets)
        bank.switch(sets[turn["i"]])

    src = torch.empty_like(bank.active_head).normal_()  # [K_u, H]: the bytes a switch writes
    dst = torch.empty_like(src)
    copy_s = timed(lambda: dst.copy_(src), device, shapes.repeats, inner=5)
    switch_s = timed(switch, device, shapes.repeats, inner=len(sets))
    return {
        "head_step": step,
        "switch_ms": round(switch_s * 1e3, 4),
        "copy_same_bytes_ms": round(copy_s * 1e3, 4),
        "ratio_switch_vs_copy": round(switch_s / copy_s, 3),
        "bank_memory": memory,
    }
