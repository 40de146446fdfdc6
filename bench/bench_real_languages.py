"""The draft vocabulary on a real model's own languages: one map, a union map and the plugin.

One command, every stage cached under ``--work`` (a stopped run continues):

1. **distill**: SmolLM2-135M-Instruct answers Chinese, French, Spanish and German prompts
   (bench/_language_prompts.py) on the lane's real SGLang, half greedy, half with
   FastMTP's sampling. English and Python answers come from the learning-curve run's
   data (``--english``, bench/bench_learning_curve.py), split by prompt kind: code
   prompts are ``py``, the rest ``en``. Held-out prompts are greedy-decoded the same way.
2. **languages**: per language, the share of answers in the prompt's language (the
   ``[langdetect]`` detector; code counts as in-language when it parses as Python or
   looks like it) and the share that degenerate (repeated-4-gram share over 0.4).
3. **maps**: ``token-map build`` per language at each K and a union at K_u = 2K, with
   each language's ranking up to K_u and the held-out coverage matrix.
4. **head**: one K=3 head on every language's answers (issue 26's best recipe), exported
   with each K's maps.
5. **score**: for every held-out prompt, the exact acceptance of every vocabulary option
   from one greedy pass (fastmtp_export/evaluate/score.py): full, each static map served
   to every language, the union at K_u, the plugin at K_u one language at a time, and
   the plugin under mixed traffic at 8 and 32 requests in flight.
6. **sglang**: the real server at one K (``--sglang-k``) for the deployable options,
   one language at a time and mixed: tau per language, output tokens/s as a ratio to no
   speculation, outputs against no speculation, and eval's tau against SGLang's.

Usage (from the repository root, after ``make lane``):
  python bench/bench_real_languages.py --work /tmp/rl --english /tmp/lc
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _language_prompts import LANGS, build  # noqa: E402
from _learning_prompts import write  # noqa: E402
from bench_train import CLI, _log, smollm2_target  # noqa: E402

from tests.sglang_lane.server import REAL_MODEL_FLAGS, sglang_server  # noqa: E402

#: distill modes: FastMTP's sampling and greedy, each on half the training prompts
MODES = {"sampled": [], "greedy": ["--temperature", "0"]}


def prompt_files(work: Path, per_lang: int) -> dict[str, Path]:
    """Write the distill prompt files (per mode, every language interleaved) and the
    held-out file; returns ``{name: path}``."""
    train: list[dict] = []
    held: list[dict] = []
    for lang in LANGS:
        tr, he = build(lang)
        train += tr[:per_lang]
        held += he
    files = {}
    for i, mode in enumerate(MODES):
        files[mode] = write(work / f"prompts-{mode}.jsonl", train[i :: len(MODES)])
    files["held"] = write(work / "prompts-held.jsonl", held)
    return files


def distill(model: Path, work: Path, per_lang: int, max_tokens: int, concurrency: int) -> None:
    """Training answers (both modes) and greedy held-out answers, on one lane server."""
    done = work / "distilled.done"
    if done.exists():
        return
    files = prompt_files(work, per_lang)
    jobs = {mode: (files[mode], flags) for mode, flags in MODES.items()}
    jobs["held"] = (files["held"], ["--temperature", "0"])
    with sglang_server(
        model, work / "serve-distill", *REAL_MODEL_FLAGS,
        "--max-running-requests", str(3 * concurrency), tokenizer=True,
    ) as s, contextlib.ExitStack() as logs:  # fmt: skip
        _log(f"distilling {per_lang} prompts per language x {len(LANGS)} at {s.url}")
        procs = []
        for name, (prompts, flags) in jobs.items():
            cmd = [*CLI, "distill", str(prompts), "--server", s.url,
                   "--out", str(work / f"distilled-{name}.jsonl"), "--max-tokens", str(max_tokens),
                   "--concurrency", str(concurrency), "--seed", "0", *flags]  # fmt: skip
            log = logs.enter_context(open(work / f"distill-{name}.log", "a"))
            procs.append(subprocess.Popen(cmd, stderr=log))
        codes = [p.wait() for p in procs]
    if any(codes):
        sys.exit(f"distill failed ({codes}); see {work}/distill-*.log")
    done.write_text("ok\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/fastmtp-real-languages"))
    ap.add_argument("--english", type=Path, default=Path("/tmp/fastmtp-learning-curve"))
    ap.add_argument("--per-lang", type=int, default=128, help="training prompts per language")
    ap.add_argument("--max-tokens", type=int, default=160, help="answer length limit")
    ap.add_argument("--concurrency", type=int, default=8, help="per distill job")
    ap.add_argument("--stop-after", choices=["distill"], default=None)
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    model = smollm2_target(work)
    distill(model, work, args.per_lang, args.max_tokens, args.concurrency)
    if args.stop_after == "distill":
        return
    results: dict[str, Any] = {}
    json.dump(results, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
