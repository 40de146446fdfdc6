"""``eval``'s measurement for many heads and K at once, sharing one greedy reference.

``fastmtp-export eval`` decodes every prompt greedily once per call; a learning curve of
a dozen heads, each at K=3 and K=5, would pay for that reference two dozen times. This
runs the same library code (``evaluate.speculate``: ``greedy``, ``speculate``;
``evaluate.evaluation.summarise``) with the base model loaded once and each prompt's
greedy output computed once, and checks every speculative output against it, as
``eval`` does. bench/bench_learning_curve.py checks one head through the real ``eval``
command too, so the two stay the same measurement.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def evaluate_heads(
    base: Path,
    prompts: Path,
    jobs: Sequence[tuple[Path, int]],
    max_new: int,
    limit: int,
    tokenizer_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Acceptance of each ``(artifact, k)`` over the first ``limit`` prompts of ``prompts``:
    eval's ``all`` statistics for the full draft vocabulary, plus ``lossless``."""
    import torch

    from fastmtp_export.artifact.inspect import inspect_artifact
    from fastmtp_export.evaluate.evaluation import read_prompts, summarise
    from fastmtp_export.evaluate.reference import artifact_head
    from fastmtp_export.evaluate.speculate import Draft, Target, greedy, speculate
    from fastmtp_export.evaluate.target import check_pair, load_target_model
    from fastmtp_export.maps.eos import model_eos_ids
    from fastmtp_export.maps.lang import LanguageDetector
    from fastmtp_export.maps.tokenizer import load_auto_tokenizer

    device, dtype = torch.device("cpu"), torch.float32
    first = inspect_artifact(jobs[0][0])
    first.raise_for_problems()
    info = check_pair(base, jobs[0][0], first.manifest)
    tokenizer = load_auto_tokenizer(tokenizer_dir or base, fix="pass the tokenizer directory")
    items = read_prompts(prompts, tokenizer, LanguageDetector(["en", "zh"]), limit)
    eos = set(model_eos_ids(base, info.config))
    if getattr(tokenizer, "eos_token_id", None) is not None:  # as eval does
        eos.add(int(tokenizer.eos_token_id))
    model = load_target_model(info.path, info.config, first.manifest.family, device, dtype)
    target = Target(model)
    refs = [greedy(target, p.ids, max_new, eos) for p in items]
    results = []
    for art, k in jobs:
        mtp = artifact_head(model, art, dtype)
        draft = Draft(mtp)
        gens = [speculate(target, draft, p.ids, max_new, eos, k) for p in items]
        stats = summarise(gens, k, sum(r.seconds for r in refs))
        results.append(
            {
                "position_acceptance": stats.position_acceptance,
                "accept_length": stats.accept_length,
                "histogram": stats.histogram,
                "lossless": all(g.output == r.output for g, r in zip(gens, refs, strict=True)),
            }
        )
    return results


def evaluate_parallel(
    base: Path,
    prompts: Path,
    jobs: Sequence[tuple[Path, int]],
    max_new: int,
    limit: int,
    processes: int = 2,
    tokenizer_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """:func:`evaluate_heads` over ``processes`` single-threaded processes, the jobs dealt
    round-robin. Batch-1 decoding of a small model is bound by per-op overhead, not by
    matrix size, so one thread per process on each core does about twice the work of
    one process with two threads (and without two OpenMP pools spinning against each
    other)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i in range(processes):
            mine = [(str(a), k) for a, k in jobs[i::processes]]
            if not mine:
                continue
            out = Path(tmp) / f"{i}.json"
            tok = None if tokenizer_dir is None else str(tokenizer_dir)
            spec = json.dumps([str(base), str(prompts), mine, max_new, limit, tok])
            cmd = [sys.executable, str(Path(__file__)), spec, str(out)]
            procs.append((i, out, subprocess.Popen(cmd, env=env)))
        results: list[dict[str, Any] | None] = [None] * len(jobs)
        for i, out, proc in procs:
            if proc.wait() != 0:
                raise RuntimeError(f"evaluation process {i} failed ({proc.returncode})")
            for j, doc in enumerate(json.loads(out.read_text())):
                results[i + j * processes] = doc
    return [r for r in results if r is not None]


if __name__ == "__main__":
    import torch

    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(1)
    b, p, js, n, lim, tok = json.loads(sys.argv[1])
    docs = evaluate_heads(
        Path(b), Path(p), [(Path(a), k) for a, k in js], n, lim, tok and Path(tok)
    )
    Path(sys.argv[2]).write_text(json.dumps(docs))
