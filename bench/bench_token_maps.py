"""Token-map build throughput and peak memory on a >= 200 MB multilingual corpus.

The baseline is the tokenizer's own batch encode (``encode_batch_fast``, batches of
2048 like the build, texts already in memory) on the same corpus in the same run; the build is the
full ``fastmtp-export token-map build`` CLI in a child process (JSONL reading and
parsing, encoding, per-language counting, maps, coverage) with its default worker
processes. Peak memory is reported for the main process (``wait4``) and summed over
the whole process tree (sampled from /proc every 50 ms). The ratio build/baseline in
tokens per second is the figure of merit (target >= 0.8).

Usage: python bench/bench_token_maps.py [--workdir DIR] [--mb 200] [--repeats 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from _child import run_child, run_tree

from fastmtp_export.maps.synthetic_corpus import records, train_tokenizer

CLI = [sys.executable, "-m", "fastmtp_export"]
LANGS = ("en", "zh", "ru")


def build_corpus(path: Path, megabytes: int) -> Path:
    """Interleaved en/zh/ru records with a ``lang`` field, cached across runs."""
    if path.exists() and path.stat().st_size >= megabytes * 10**6:
        return path
    tmp = path.with_suffix(".tmp")
    gens = [records(lang, 10**9, seed=7, sentences=6) for lang in LANGS]
    size = 0
    with tmp.open("w", encoding="utf-8") as fh:
        while size < megabytes * 10**6:
            for g in gens:
                line = json.dumps(next(g), ensure_ascii=False) + "\n"
                fh.write(line)
                size += len(line.encode())
    tmp.replace(path)
    return path


def baseline_tokens_per_s(tokenizer: Path, corpus: Path, batch: int = 2048) -> tuple[float, int]:
    """Tokenizer-only throughput: batch encode of texts already in memory."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    with corpus.open(encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh]
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(texts), batch):
        encs = tok.encode_batch_fast(texts[i : i + batch], add_special_tokens=False)
        tokens += sum(len(e) for e in encs)
    return tokens / (time.perf_counter() - start), tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path(__file__).parent / "out")
    ap.add_argument("--mb", type=int, default=200, help="corpus size in MB")
    ap.add_argument("--repeats", type=int, default=3, help="median over this many runs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    corpus = build_corpus(args.workdir / f"corpus-{args.mb}MB.jsonl", args.mb)
    tok = train_tokenizer(
        args.workdir / "bench-tokenizer", vocab_size=8000, model_vocab_size=151680
    )
    print(f"corpus {corpus.stat().st_size / 1e6:.0f} MB ready in {time.perf_counter() - t:.1f} s")

    out = args.workdir / "maps"
    argv = [*CLI, "token-map", "build", str(corpus), "--tokenizer", str(tok), "--out", str(out)]
    argv += ["--size", "4096", "--sizes", "1024,2048,8192", "--overwrite", "--quiet"]
    walls, bases, peak = [], [], 0
    for _ in range(args.repeats):  # alternate, so drifting machine speed hits both sides
        wall, rss = run_child(argv)
        walls.append(wall)
        peak = max(peak, rss)
        base_tps, base_tokens = baseline_tokens_per_s(tok, corpus)
        bases.append(base_tps)
    _, tree_peak = run_tree(argv)  # main process + workers, summed
    summary = json.loads((out / "token_maps.json").read_text())
    build_tokens = sum(e["tokens"] + e["heldout_tokens"] for e in summary["languages"].values())
    assert base_tokens == build_tokens, (base_tokens, build_tokens)
    wall = statistics.median(walls)
    base_tps = statistics.median(bases)
    build_tps = build_tokens / wall
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "corpus_mb": round(corpus.stat().st_size / 1e6, 1),
        "tokens": build_tokens,
        "baseline_encode_tokens_per_s": round(base_tps),
        "build_tokens_per_s": round(build_tps),
        "build_wall_s": round(wall, 2),
        "ratio": round(build_tps / base_tps, 3),
        "repeats": args.repeats,
        "build_walls_s": [round(w, 2) for w in walls],
        "baseline_tokens_per_s_runs": [round(b) for b in bases],
        "build_peak_rss_mb_main_process": round(peak / 1e6, 1),
        "build_peak_rss_mb_all_processes": round(tree_peak / 1e6, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
