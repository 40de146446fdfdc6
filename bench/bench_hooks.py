"""sglang_patch's draft hooks: their own host time per draft round, against a decode step.

Per round SGLang calls two hooked methods, so the plugin runs
``hooks.draft.draft_before`` (the batch's language counts over its requests, the set
choice, bookkeeping, the carried ids -> slots gather) and ``decode_extend_after`` (slots
-> full ids). Both are timed here as they run in SGLang, on stand-in batches shaped like
SGLang's (``Req.sampling_params.custom_params``), two languages interleaved, at batch
sizes 1 to 256, with a breakdown and a same-run baseline: a bare loop reading every
request's ``draft_lang`` (the least any per-batch design must do).

The goal is under 1 % of a MiMo-7B decode step. ``bench/gpu_check.py`` measures that step
in the same run on a GPU (a bf16 layer stack of MiMo-7B's shape under a CUDA graph);
alone, on a CPU, this script compares with the step's memory-traffic floor on an H100
(bytes moved / 3.35 TB/s: arithmetic, not a measurement, and below any real step, so
the share it gives is an upper bound).

Usage: python bench/bench_hooks.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import types
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from _gpu_common import (
    CPU,
    GPU,
    Batch,
    BatchResult,
    Shapes,
    Worker,
    draft_hooks,
    language_maps,
    mixed_reqs,
    timed,
)

from sglang_patch.bank import DraftVocabBank

H100_BYTES_PER_S = 3.35e12  # HBM3 peak of an H100 SXM


def _inner(bs: int) -> int:
    return max(5, 1000 // bs)


def _time_batch(
    bs: int, shapes: Shapes, worker: Worker, hooks: types.ModuleType, maps: dict[str, list[int]]
) -> dict[str, float]:
    """Microseconds per call: the hooks' round and its parts, and the bare-read baseline."""
    bank: DraftVocabBank = getattr(worker, hooks.BANK_ATTR)
    device = bank.active_ids.device
    langs = sorted(maps)[:2]  # two languages interleaved: the steady mixed set
    reqs = mixed_reqs(bs, langs)
    ids = (maps[langs[0]] * (bs // shapes.k + 1))[:bs]
    carried = torch.tensor(ids, device=device)[:, None]  # [bs, 1] full ids
    batch = Batch(reqs, topk_index=carried)
    result = BatchResult(torch.zeros(bs, 1, dtype=torch.int64, device=device))  # slots
    slots = result.next_draft_input.topk_index

    def round_trip() -> None:  # hook 4 then hook 6, as SGLang calls them per round
        batch.spec_info.topk_index = carried
        hooks.draft_before(worker, batch)
        result.next_draft_input.topk_index = slots
        hooks.decode_extend_after(None, worker, batch, result)

    def counts() -> Counter[str]:
        return hooks._languages(worker, bank, reqs)

    counted = counts()

    def choice() -> frozenset[str]:
        return bank.choose(counted)

    def gathers() -> None:
        bank.to_full(bank.to_slots(carried))

    def bare() -> None:  # the baseline: read every request's draft_lang, nothing else
        for r in reqs:
            params = r.sampling_params.custom_params
            assert params is not None
            params.get("draft_lang")

    n = max(5, 1000 // bs)
    fns = {"round": round_trip, "counts": counts, "choice": choice, "gathers": gathers,
           "bare_read": bare}  # fmt: skip
    return {name: timed(fn, device, shapes.repeats, inner=n) * 1e6 for name, fn in fns.items()}


def hook_times(shapes: Shapes, device: torch.device, hooks: types.ModuleType) -> dict[str, Any]:
    """Microseconds per draft round of the hooks, per batch size, with their parts."""
    maps = language_maps(shapes)
    gen = torch.Generator(device=device).manual_seed(3)
    head = torch.randn(shapes.vocab, shapes.hidden, generator=gen, device=device)  # [V, H]
    langs = sorted(maps)[:2]
    bank = DraftVocabBank(maps, head.to(torch.bfloat16), default=langs[0])
    worker = Worker(bank, langs[0], hooks)
    out: dict[str, Any] = {}
    for bs in shapes.hook_bs:
        row = _time_batch(bs, shapes, worker, hooks, maps)
        out[str(bs)] = {f"{k}_us": round(v, 2) for k, v in row.items()} | {
            "ratio_round_vs_bare_read": round(row["round"] / row["bare_read"], 2),
            "round_us_per_request": round(row["round"] / bs, 3),
        }
    return out


def floor_ms(shapes: Shapes, bs: int) -> float:
    """A decode step's memory traffic at MiMo-7B shape over an H100's bandwidth (ms)."""
    m = shapes.model
    h, i, layers = m["hidden_size"], m["intermediate_size"], m["num_hidden_layers"]
    kv = m["num_key_value_heads"] * (h // m["num_attention_heads"])
    per_layer = h * (h + 2 * kv) + h * h + 3 * h * i  # qkv, o, gate/up/down
    weights = 2 * (layers * per_layer + m["vocab_size"] * h)
    cache = 2 * bs * shapes.ctx * layers * 2 * kv
    return (weights + cache) / H100_BYTES_PER_S * 1e3


class DecodeStack:
    """A bf16 decode step of MiMo's shape: ``layers`` x (attention over a ``ctx`` cache + SwiGLU
    MLP), the final norm, the full ``lm_head`` and the argmax (rotary embedding left out).

    One layer's weights and one KV cache serve every layer: each is far larger than the
    GPU's L2, so re-reading them costs what reading distinct copies would.
    """

    def __init__(self, shapes: Shapes, device: torch.device, max_bs: int) -> None:
        m, dt = shapes.model, torch.bfloat16
        self.h, self.layers = m["hidden_size"], m["num_hidden_layers"]
        self.heads, self.kv_heads = m["num_attention_heads"], m["num_key_value_heads"]
        self.dim = self.h // self.heads
        kv, i = self.kv_heads * self.dim, m["intermediate_size"]
        g = torch.Generator(device=device).manual_seed(4)

        def w(*shape: int) -> torch.Tensor:
            return (torch.randn(*shape, generator=g, device=device) * 0.02).to(dt)

        self.qkv, self.qkv_bias = w(self.h + 2 * kv, self.h), w(self.h + 2 * kv)  # [Q+2KV, H]
        self.o, self.gate_up, self.down = w(self.h, self.h), w(2 * i, self.h), w(self.h, i)
        self.lm_head = w(m["vocab_size"], self.h)  # [V, H]
        # [max_bs, kv_heads, ctx, dim] keys and values
        self.k = w(max_bs, self.kv_heads, shapes.ctx, self.dim)
        self.v = w(max_bs, self.kv_heads, shapes.ctx, self.dim)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, H] -> next ids [B]."""
        b = x.shape[0]
        for _ in range(self.layers):
            qkv = F.linear(F.rms_norm(x, (self.h,)), self.qkv, self.qkv_bias)  # [B, Q+2KV]
            q = qkv[:, : self.h].view(b, self.heads, 1, self.dim)
            att = F.scaled_dot_product_attention(q, self.k[:b], self.v[:b], enable_gqa=True)
            x = x + F.linear(att.reshape(b, self.h), self.o)
            gate, up = F.linear(F.rms_norm(x, (self.h,)), self.gate_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, self.down)
        return torch.argmax(F.linear(F.rms_norm(x, (self.h,)), self.lm_head), dim=-1)


def decode_steps(shapes: Shapes, device: torch.device) -> dict[str, float]:
    """Milliseconds per decode step per batch size (replays of a CUDA graph on a GPU)."""
    stack = DecodeStack(shapes, device, max(shapes.hook_bs))
    out = {}
    for bs in shapes.hook_bs:
        x = torch.randn(bs, stack.h, device=device).to(torch.bfloat16)  # [B, H]

        def run(x: torch.Tensor = x) -> object:
            return stack.step(x)

        if device.type == "cuda":
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                stack.step(x)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                stack.step(x)
            run = graph.replay  # type: ignore[assignment]
        out[str(bs)] = timed(run, device, shapes.repeats, inner=3) * 1e3
    return out


def compare(hooks_us: dict[str, Any], step_ms: dict[str, float], source: str) -> dict[str, Any]:
    """The hooks' round as a share of the step, per batch size; goal under 1 %."""
    share = {bs: hooks_us[bs]["round_us"] / (step_ms[bs] * 1e3) for bs in hooks_us}
    return {
        "step_source": source,
        "step_ms": {bs: round(v, 4) for bs, v in step_ms.items()},
        "hooks_share_of_step_pct": {bs: round(100 * v, 3) for bs, v in share.items()},
        "goal_pct": 1.0,
        "meets_goal": all(v < 0.01 for v in share.values()),
    }


def hooks_part(shapes: Shapes, device: torch.device, measure_step: bool) -> dict[str, Any]:
    """Part 3 of gpu_check (``measure_step``) or this script alone (the H100 floor)."""
    hooks = draft_hooks()
    times = hook_times(shapes, device, hooks)
    if measure_step:
        steps, source = decode_steps(shapes, device), f"measured: {shapes.name} shape, {device}"
    else:
        steps = {str(bs): floor_ms(GPU, bs) for bs in shapes.hook_bs}
        source = "arithmetic: MiMo-7B decode step's bytes / 3.35 TB/s (H100), a lower bound"
    return {"hooks_module": hooks.__name__, "per_round": times} | compare(times, steps, source)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    result = {"device": platform.processor() or "cpu", "python": platform.python_version(),
              "torch": torch.__version__}  # fmt: skip
    result |= hooks_part(CPU, torch.device("cpu"), measure_step=False)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
