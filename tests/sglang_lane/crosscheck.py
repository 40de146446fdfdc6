"""Run the lane's op fallbacks against SGLang's own Triton kernels, in Triton's interpreter.

``TRITON_INTERPRET=1`` executes ``@triton.jit`` kernels on CPU tensors, so the GPU
semantics of ``sgl_build_tree_kernel_efficient_triton``, ``verify_tree_greedy_kernel_triton``
and ``fill_bonus_tokens`` are the reference for our Python ports, on random chains of
random batch sizes and prefix lengths, in both tree-mask modes. Run as a subprocess
(the interpreter flag must be set before triton is imported); prints one JSON line:
``{"cases": N, "mismatches": [...]}``.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import json
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fastmtp_cpu_lane import ops
from sglang.kernels.ops.speculative import eagle as eagle_ops
from sglang.kernels.ops.speculative import spec_tree as st


def chain_inputs(bs: int, steps: int, rng: random.Random) -> dict[str, torch.Tensor]:
    """What EAGLE's draft produces for topk=1: parent i-1 of step i, selected 0..d-2."""
    d = steps + 1
    parent = torch.tensor([[-1, *range(steps - 1)] for _ in range(bs)], dtype=torch.int64)
    selected = torch.tensor([list(range(d - 1)) for _ in range(bs)], dtype=torch.int64)
    seq = torch.tensor([rng.randrange(1, 40) for _ in range(bs)], dtype=torch.int64)
    return {"parent": parent, "selected": selected, "seq": seq}


def build(impl: str, inp: dict[str, torch.Tensor], steps: int, mode: int) -> list[torch.Tensor]:
    bs, d = inp["seq"].shape[0], steps + 1
    size = d * d * bs if mode == 1 else int(inp["seq"].sum()) * d + d * d * bs
    mask = torch.zeros(size, dtype=torch.bool)
    pos = torch.zeros(bs * d, dtype=torch.int64)
    ri = torch.zeros(bs, d, dtype=torch.int64)
    rn = torch.full((bs, d), -1, dtype=torch.int64)
    rs = torch.full((bs, d), -1, dtype=torch.int64)
    args = (inp["parent"], inp["selected"], inp["seq"], mask, pos, ri, rn, rs, 1, steps, d)
    if impl == "ours":
        ops.build_tree_kernel_efficient(*args, mode)
    else:
        st.sgl_build_tree_kernel_triton(*args, st.TreeMaskMode(mode))
    return [mask, pos, ri, rn, rs]


def verify(
    impl: str, tree: list[torch.Tensor], bs: int, d: int, rng: random.Random
) -> list[torch.Tensor]:
    vocab = 3  # small, so drafts match the target often
    g = torch.Generator().manual_seed(rng.randrange(10**6))
    candidates = torch.randint(0, vocab, (bs, d), generator=g)
    target = torch.randint(0, vocab, (bs, d), generator=g)
    predicts = torch.full((bs * d,), -1, dtype=torch.int64)
    accept_index = torch.full((bs, d), -1, dtype=torch.int64)
    accept_num = torch.zeros(bs, dtype=torch.int64)
    _mask, _pos, ri, rn, rs = tree
    args = (predicts, accept_index, accept_num, candidates, ri, rn, rs, target)
    (ops.verify_tree_greedy if impl == "ours" else st.verify_tree_greedy_triton)(*args)
    return [predicts, accept_index, accept_num]


def bonus(impl: str, bs: int, d: int, rng: random.Random) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(rng.randrange(10**6))
    tokens = torch.randint(0, 1000, (bs, d), generator=g)
    lens = torch.randint(1, d + 1, (bs,), generator=g)
    out = torch.zeros(bs, dtype=torch.int64)
    if impl == "ours":
        ops.fill_bonus_tokens(tokens, lens, out, d)
    else:
        eagle_ops.fill_bonus_tokens[(bs,)](tokens, lens, out, d)
    return [out]


def main() -> None:
    mismatches = []
    cases = 0
    for seed in range(int(sys.argv[1]) if len(sys.argv) > 1 else 12):
        rng = random.Random(seed)
        bs, steps = rng.randrange(1, 5), rng.choice([2, 3, 4])
        inp = chain_inputs(bs, steps, rng)
        for mode in (0, 1):
            a, b = build("ours", inp, steps, mode), build("triton", inp, steps, mode)
            if not all(torch.equal(x, y) for x, y in zip(a, b, strict=True)):
                mismatches.append({"op": "build_tree", "seed": seed, "mode": mode})
            cases += 1
        tree = build("ours", inp, steps, 1)
        state = rng.getstate()
        a = verify("ours", tree, bs, steps + 1, rng)
        rng.setstate(state)
        b = verify("triton", tree, bs, steps + 1, rng)
        if not all(torch.equal(x, y) for x, y in zip(a, b, strict=True)):
            mismatches.append({"op": "verify", "seed": seed, "ours": [t.tolist() for t in a],
                               "triton": [t.tolist() for t in b]})  # fmt: skip
        state = rng.getstate()
        a = bonus("ours", bs, steps + 1, rng)
        rng.setstate(state)
        b = bonus("triton", bs, steps + 1, rng)
        if not torch.equal(a[0], b[0]):
            mismatches.append({"op": "fill_bonus", "seed": seed})
        cases += 2
    sys.stdout.write(json.dumps({"cases": cases, "mismatches": mismatches}) + "\n")


if __name__ == "__main__":
    main()
