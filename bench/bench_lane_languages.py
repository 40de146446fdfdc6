"""The serving benchmark on the CPU lane's oracle with 2 to 6 languages.

Writes an oracle target whose vocabulary splits into ``--languages`` closed "languages"
(each a token cycle, fastmtp_export/checkpoints/oracle.py), one map per language (K ids), the
exported artifact, and a round-robin prompt file. Then it runs bench/bench_serving.py on
it in the lane's environment (real SGLang 0.5.23 on this CPU). On the oracle a draft is
right exactly when its token is in the draft vocabulary, so acceptance measures how
each set-up's vocabulary covers each request's language. Anything after ``--`` goes to
bench_serving.py.

Usage (from the repository root, after ``make lane``):
  python bench/bench_lane_languages.py --languages 4 --out bench/out/lane4 \\
      -- --modes none,full,static-union,plugin,plugin-k --concurrency 1,8,32
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastmtp_export.artifact.export import export_draft  # noqa: E402
from fastmtp_export.checkpoints.oracle import (  # noqa: E402
    EOS,
    VOCAB,
    chain_permutation,
    greedy_chain,
    write_target,
)
from fastmtp_export.maps.token_map import save_token_map  # noqa: E402
from tests.sglang_lane.server import lane_env, serving_flags  # noqa: E402

CODES = ("en", "zh", "ru", "ja", "ko", "ar")


def groups_of(n: int) -> list[list[int]]:
    """``n`` equal id ranges of the oracle vocabulary, EOS (0) in the first; the rest of
    the ids (at most n - 1 plus 255) are fixed points no prompt reaches."""
    size = (VOCAB - 1) // n
    return [list(range(i * size, (i + 1) * size)) for i in range(n)]


def write_fixture(out: Path, n: int, per_lang: int, new_tokens: int) -> tuple[Path, Path, Path]:
    """(target, artifact, prompts) for ``n`` languages."""
    groups = groups_of(n)
    target = write_target(out / "target", oracle=True, groups=groups)
    perm = chain_permutation(0, groups)
    maps: list[str] = []
    for code, ids in zip(CODES, groups, strict=False):
        # equal K for every language: EOS added to the others, an unreachable id to the first
        hot = [*ids, 255] if EOS in ids else [*ids, EOS]
        save_token_map(out / f"{code}.pt", hot)
        maps.append(f"{code}={out / f'{code}.pt'}")
    draft = out / "draft"
    export_draft(target, draft, token_map=maps, default_lang="en", overwrite=True, progress=False)
    rng = random.Random(17)
    lines: list[list[str]] = [[] for _ in groups]
    for code, ids, bucket in zip(CODES, groups, lines, strict=False):
        pool = [i for i in ids if i != EOS]
        while len(bucket) < per_lang:
            prompt = rng.sample(pool, rng.randint(2, 8))
            chain = greedy_chain(prompt[-1], new_tokens, perm)
            if len(chain) == new_tokens and EOS not in chain:
                bucket.append(json.dumps({"lang": code, "input_ids": prompt}))
    prompts = out / "prompts.jsonl"
    prompts.write_text("".join(x + "\n" for row in zip(*lines, strict=True) for x in row))
    return target, draft, prompts


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--languages", type=int, default=2, choices=range(2, len(CODES) + 1))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompts-per-language", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    args = ap.parse_args(own)
    args.out.mkdir(parents=True, exist_ok=True)
    target, draft, prompts = write_fixture(
        args.out, args.languages, args.prompts_per_language, args.max_new_tokens
    )
    flags = serving_flags(tokenizer=False)
    cmd = [
        sys.executable, str(ROOT / "bench" / "bench_serving.py"), "--model", str(target),
        "--draft", str(draft), "--prompts", str(prompts), "--send-lang",
        "--max-new-tokens", str(args.max_new_tokens), "--server-args", shlex.join(flags),
        "--logs", str(args.out / "logs"), "--json", str(args.out / "serving.json"), *rest,
    ]  # fmt: skip
    print("+ " + shlex.join(cmd), file=sys.stderr)
    return subprocess.run(cmd, env=lane_env(), check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
