"""Speed of eval's reference speculative decoder, against plain greedy in the same run.

Both decoders keep KV caches, so a generated token's cost must not grow with the
prefix beyond attention's own growth. For each prefix length this measures:

- greedy: ms per generated token (one target forward each): the baseline;
- speculative: ms per verify round (one K+1-token target forward, K-1 draft steps and
  one draft-extend), and its ratio to a greedy token; with the full vocabulary and
  with a hot map of a quarter of it (the draft's head cost shrinks with it).

A flat ratio across prefix lengths means no prefix re-encoding. Random weights: the
draft is almost always rejected, so these are costs per forward, not speedups.

Shapes: ``tiny`` (hidden 64, 2 layers, vocab 256) and ``mimo`` (MiMo-7B widths:
hidden 4096, 32/8 heads, intermediate 11008, vocab 151,680, but 2 of 36 trunk layers
so it fits a CI-sized CPU machine).

Usage: python bench/bench_eval.py [--shapes tiny,mimo] [--json FILE] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from fastmtp_export.artifact import manifest as mf
from fastmtp_export.artifact.export import export_draft
from fastmtp_export.checkpoints.synthetic import MIMO_7B, TINY, mimo_config, write_synthetic_mimo
from fastmtp_export.evaluate.reference import MiMoMTPReference, load_artifact_weights
from fastmtp_export.evaluate.speculate import Draft, Target, greedy, speculate
from fastmtp_export.evaluate.target import check_pair, load_target_model
from fastmtp_export.maps.eos import read_json

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"dims": TINY, "lengths": (32, 512, 2048), "new": 64, "repeats": 5},
    "mimo": {
        "dims": {**MIMO_7B, "num_hidden_layers": 2},
        "lengths": (32, 512),
        "new": 8,
        "repeats": 1,
    },
}


def build(root: Path, dims: dict[str, int]) -> tuple[Target, Draft]:
    src = write_synthetic_mimo(root / "src", mimo_config(dims), dtype="bfloat16", num_shards=2)
    export_draft(src, root / "draft")
    manifest = mf.load(root / "draft")
    info = check_pair(src, root / "draft", manifest)
    model = load_target_model(info.path, info.config, "mimo", torch.device("cpu"), torch.float32)
    mtp = MiMoMTPReference(
        load_artifact_weights(root / "draft"),
        read_json(root / "draft" / "config.json"),
        model.get_input_embeddings().weight.detach(),
        model.lm_head.weight.detach(),
        torch.float32,
    )
    return Target(model), Draft(mtp)


def measure(
    target: Target, drafts: dict[str, Draft], length: int, new: int, repeats: int
) -> dict[str, Any]:
    """Decode-phase costs (the prompt's prefill excluded) at one prefix length."""
    prompt = [(7 * i + 3) % 200 + 1 for i in range(length)]
    greedy_ms: list[float] = []
    round_ms: dict[str, list[float]] = {name: [] for name in drafts}
    draft_ms: dict[str, list[float]] = {name: [] for name in drafts}
    for _ in range(repeats):  # interleaved, so drift hits every variant alike
        g = greedy(target, prompt, new, set())
        greedy_ms.append(1000 * (g.seconds - g.prefill_seconds) / max(len(g.output) - 1, 1))
        for name, draft in drafts.items():
            s = speculate(target, draft, prompt, new, set(), k=3)
            round_ms[name].append(1000 * (s.seconds - s.prefill_seconds) / max(s.verifies, 1))
            draft_ms[name].append(1000 * s.draft_seconds / max(s.verifies, 1))
    g_ms = statistics.median(greedy_ms)
    row: dict[str, Any] = {"prefix": length, "new_tokens": new, "greedy_ms_per_token": g_ms}
    for name in drafts:
        r_ms = statistics.median(round_ms[name])
        row[name] = {
            "spec_ms_per_round": r_ms,
            "draft_ms_per_round": statistics.median(draft_ms[name]),
            "round_over_token": r_ms / g_ms,
        }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="tiny,mimo")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "shapes": {},
    }
    for name in args.shapes.split(","):
        spec = SHAPES[name]
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            target, full = build(Path(tmp), spec["dims"])
            vocab = spec["dims"]["vocab_size"]
            # a hot map of a quarter of the vocabulary (32k of MiMo's 151k is about that)
            hot = torch.randperm(vocab, generator=torch.Generator().manual_seed(0))[: vocab // 4]
            drafts = {"full": full, "hot": Draft(full.mtp, hot)}
            rows = [
                measure(target, drafts, n, spec["new"], spec["repeats"]) for n in spec["lengths"]
            ]
        results["shapes"][name] = rows
        print(f"{name}: prefix  greedy ms/token  vocab  spec ms/round  draft ms/round  round/token")
        for r in rows:
            for i, vocab_name in enumerate(drafts):
                v = r[vocab_name]
                lead = (
                    f"{r['prefix']:>6}  {r['greedy_ms_per_token']:>15.2f}" if i == 0 else " " * 23
                )
                print(
                    f"{'':{len(name)}}  {lead}  {vocab_name:<5}  {v['spec_ms_per_round']:>13.2f}  "
                    f"{v['draft_ms_per_round']:>14.2f}  {v['round_over_token']:>11.2f}"
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
