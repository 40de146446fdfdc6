"""Language detection: latency per prompt and accuracy on the labelled test prompts.

Latency is the median over many calls of ``LanguageDetector`` (Unicode-script pass;
target: median under 50 us for prompts up to 2 KB) and, separately, with the optional
py3langid refinement. Prompt sizes: each labelled prompt, and each repeated to ~500 B
and ~2 KB. Accuracy uses tests/data/lang_prompts.jsonl (9 languages, short prompts).

Usage: python bench/bench_lang.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from fastmtp_export.maps.lang import LanguageDetector

PROMPTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "lang_prompts.jsonl"


def median_us(fn: Callable[[str], object], texts: list[str], rounds: int = 200) -> float:
    """Median per-call time over ``rounds`` passes through ``texts``."""
    times = []
    for _ in range(rounds):
        for t in texts:
            start = time.perf_counter_ns()
            fn(t)
            times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def grow(text: str, nbytes: int) -> str:
    out = text
    while len(out.encode()) < nbytes:
        out += " " + text
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = [json.loads(line) for line in PROMPTS.read_text().splitlines()]
    langs = sorted({r["lang"] for r in rows})
    texts = [r["text"] for r in rows]
    script = LanguageDetector(langs)
    stat = LanguageDetector(langs, statistical=True)
    result: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "prompts": len(rows),
        "languages": langs,
    }
    for name, det in (("script", script), ("script+py3langid", stat)):
        right = sum(det(r["text"]) == r["lang"] for r in rows)
        result[f"{name}_accuracy"] = f"{right}/{len(rows)}"
        for label, size in (("short", 0), ("500B", 500), ("2KB", 2048)):
            sample = [grow(t, size) for t in texts]
            result[f"{name}_median_us_{label}"] = round(median_us(det, sample, 50), 2)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
