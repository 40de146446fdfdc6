"""Serving benchmark: one mixed-language workload against several SGLang set-ups.

Each mode is its own ``python -m sglang.launch_server`` (started here, on loopback), fed
the same prompts at batch 1 and at concurrency 8 and 32:

- ``none``: no speculation. The baseline: speedups are ratios to it, at the same
  concurrency, measured in the same run.
- ``full``: the K=3 chain with the full draft vocabulary (stock SGLang; sglang_patch off).
- ``static``: the K=3 chain with one static ``--speculative-token-map`` (stock SGLang's
  only option; the artifact's default language unless ``--static-lang``).
- ``static-union``: stock SGLang with one union map of every language (the strongest
  plugin-free option) with as many rows as the plugin's active buffer (K_u, the plugin's
  default, or ``--union-rows``): equal draft-head cost. The artifact's union map when its
  size matches, else one built here from the artifact's maps with equal weights.
- ``plugin``: the K=3 chain with sglang_patch: each batch drafts over the union of its
  languages' maps (K_u = 2K rows by default).
- ``plugin-k``: sglang_patch with ``FASTMTP_DRAFT_ROWS=K``: one language per batch (its
  majority), the design before the union buffer; the control for mixed batches.

It reports output tokens per second, ``spec_accept_length`` per language (sum of
completion tokens / sum of verify steps: SGLang's definition, bonus token included),
per-position acceptance from SGLang's ``spec_correct_drafts_histogram``, and how many
outputs differ from ``none`` (greedy speculation is lossless, so this should be 0).

Prompts are JSONL records with ``lang`` and one of ``messages`` (sent to
/v1/chat/completions, so the chat template applies), ``text`` or ``input_ids`` (sent to
/generate); ``max_new_tokens`` per record is optional.

Usage:
  python bench/bench_serving.py --model BASE --draft ARTIFACT
      [--prompts bench/prompts/mixed_en_zh.jsonl]
      [--modes none,full,static,static-union,plugin,plugin-k] [--union-rows N]
      [--concurrency 1,8,32] [--max-new-tokens 256] [--ignore-eos] [--static-lang LANG]
      [--send-lang] [--server-args "--tp 1 ..."] [--json FILE] [--logs DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _server import Server, launched

from fastmtp_export.artifact.launch import sglang_command
from fastmtp_export.artifact.manifest import Manifest, load
from fastmtp_export.evaluate.evaluation import position_rates
from fastmtp_export.maps.token_map import load_token_map, save_token_map
from fastmtp_export.maps.union import union_hot_ids
from sglang_patch.bank import default_rows

HERE = Path(__file__).resolve().parent
MODES = ("none", "full", "static", "static-union", "plugin", "plugin-k")
PLUGIN_MODES = ("plugin", "plugin-k")
#: sglang_patch's start-up line (sglang_patch/hooks.py): proves the plugin served the run
PLUGIN_ACTIVE = "per-language draft vocabulary active"


@dataclass(frozen=True)
class Prompt:
    lang: str
    body: dict[str, Any]  # one of messages / text / input_ids
    max_new_tokens: int | None


@dataclass
class Reply:
    lang: str
    output_ids: list[int]
    completion_tokens: int
    verify_ct: int
    histogram: list[int]  # [j] = verify steps that accepted j drafts


@dataclass
class Run:
    mode: str
    concurrency: int
    seconds: float
    replies: list[Reply]
    plugin_active: bool
    languages: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_prompts(path: Path) -> list[Prompt]:
    prompts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        doc = json.loads(line)
        keys = [k for k in ("messages", "text", "input_ids") if k in doc]
        if len(keys) != 1 or not isinstance(doc.get("lang"), str):
            raise SystemExit(
                f"{path}:{n}: a record needs a string 'lang' and exactly one of "
                "'messages', 'text', 'input_ids'"
            )
        prompts.append(Prompt(doc["lang"], {keys[0]: doc[keys[0]]}, doc.get("max_new_tokens")))
    if not prompts:
        raise SystemExit(f"{path} has no prompts")
    return prompts


def chain_steps(manifest: Manifest) -> int:
    """K: the draft steps per verify, from the artifact's recommended SGLang flags."""
    flags = manifest.sglang.recommended_flags
    return int(flags[flags.index("--speculative-num-steps") + 1])


def union_map_file(draft: Path, manifest: Manifest, rows: int | None, workdir: Path) -> Path:
    """A union map of ``rows`` ids (default: the plugin's K_u): the artifact's own when its
    size matches, else built from the artifact's maps with equal weights into ``workdir``."""
    maps = manifest.token_maps
    if maps is None:
        raise SystemExit(f"{draft} ships no token maps: drop 'static-union' from --modes")
    vocab = int(json.loads((draft / "config.json").read_text())["vocab_size"])
    rows = rows or default_rows(maps.size, len(maps.languages), vocab)
    if maps.union is not None and maps.union.size == rows:
        return draft / maps.union.file
    ids = union_hot_ids(
        {
            lang: load_token_map(draft / e.file, vocab_size=vocab)
            for lang, e in maps.languages.items()
        },
        dict.fromkeys(maps.languages, 1 / len(maps.languages)),
        rows,
        required=maps.required_ids,
        vocab_size=vocab,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"freq_union_{rows}.pt"
    save_token_map(path, ids)
    print(f"[static-union] built a {rows}-id union of {sorted(maps.languages)}: {path}",
          file=sys.stderr)  # fmt: skip
    return path


def mode_launch(
    mode: str,
    base: str,
    draft: Path,
    manifest: Manifest,
    static_lang: str | None,
    union_map: Path | None = None,
) -> tuple[list[str], dict[str, str]]:
    """(launch_server args, environment) for ``mode`` (``union_map``: static-union's map)."""
    env = dict(os.environ)
    env["FASTMTP_SGLANG_PATCH"] = "0"  # stock SGLang unless the mode is the plugin's
    if mode == "none":
        args = ["--model-path", base]
        if manifest.sglang.base_needs_trust_remote_code:
            args.append("--trust-remote-code")
        return args, env
    argv = sglang_command(draft, manifest, base, static_map=mode.startswith("static"))
    args = argv[3:]  # drop "python -m sglang.launch_server"
    if mode == "static-union":
        if union_map is None:
            raise SystemExit("static-union needs a union map")
        args[-1] = str(union_map)
    if mode == "static":
        maps = manifest.token_maps
        if maps is None:
            raise SystemExit(f"{draft} ships no token maps: drop 'static' from --modes")
        lang = static_lang or maps.default_lang
        if lang not in maps.languages:
            raise SystemExit(f"--static-lang {lang}: the artifact has {sorted(maps.languages)}")
        args[-1] = str(draft / maps.languages[lang].file)
    if mode in PLUGIN_MODES:
        if manifest.token_maps is None:
            raise SystemExit(f"{draft} ships no token maps: drop '{mode}' from --modes")
        del env["FASTMTP_SGLANG_PATCH"]
        if mode == "plugin-k":
            env["FASTMTP_DRAFT_ROWS"] = str(manifest.token_maps.size)
        else:
            env.pop("FASTMTP_DRAFT_ROWS", None)
    return args, env


def send(server: Server, prompt: Prompt, max_new: int, ignore_eos: bool, send_lang: bool) -> Reply:
    """One greedy request; the reply's token ids and speculation counters."""
    n = prompt.max_new_tokens or max_new
    extra: dict[str, Any] = {"ignore_eos": True} if ignore_eos else {}
    if send_lang:
        extra["custom_params"] = {"draft_lang": prompt.lang}
    if "messages" in prompt.body:
        doc = server.post(
            "/v1/chat/completions",
            {**prompt.body, "max_tokens": n, "temperature": 0, "return_meta_info": True,
             "return_token_ids": True, **extra},
        )  # fmt: skip
        choice = doc["choices"][0]
        meta, ids = choice["meta_info"], choice["response_token_ids"]
    else:
        params = {"max_new_tokens": n, "temperature": 0, **extra}
        doc = server.post("/generate", {**prompt.body, "sampling_params": params})
        meta, ids = doc["meta_info"], doc["output_ids"]
    return Reply(
        prompt.lang,
        list(ids),
        int(meta["completion_tokens"]),
        int(meta.get("spec_verify_ct", 0)),
        list(meta.get("spec_correct_drafts_histogram", [])),
    )


def workload(server: Server, prompts: Sequence[Prompt], concurrency: int, **kw: Any) -> Run:
    """Every prompt once, ``concurrency`` requests in flight; replies in prompt order."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        replies = list(pool.map(lambda p: send(server, p, **kw), prompts))
    return Run("", concurrency, time.perf_counter() - start, replies, False)


def acceptance(replies: Sequence[Reply], k: int) -> dict[str, Any]:
    """Accept length and per-position acceptance over ``replies`` (eval's definitions)."""
    tokens = sum(r.completion_tokens for r in replies)
    verifies = sum(r.verify_ct for r in replies)
    hist = [0] * (k + 1)
    for r in replies:
        for j, c in enumerate(r.histogram):
            hist[min(j, k)] += c
    uncond, cond = position_rates(hist)
    return {
        "requests": len(replies),
        "output_tokens": tokens,
        "verify_steps": verifies,
        "accept_length": tokens / verifies if verifies else None,
        "histogram": hist,
        "position_acceptance": uncond,
        "conditional_acceptance": cond,
    }


def summarise(run: Run, k: int, baseline: Run | None) -> dict[str, Any]:
    tokens = sum(r.completion_tokens for r in run.replies)
    langs = sorted({r.lang for r in run.replies})
    out: dict[str, Any] = {
        "mode": run.mode,
        "concurrency": run.concurrency,
        "seconds": run.seconds,
        "output_tokens": tokens,
        "tok_per_s": tokens / run.seconds,
        "speedup": None,
        "differs_from_none": None,
        "plugin_active": run.plugin_active,
        "all": acceptance(run.replies, k),
        "languages": {
            lang: acceptance([r for r in run.replies if r.lang == lang], k) for lang in langs
        },
    }
    if baseline is not None:
        out["speedup"] = out["tok_per_s"] / (
            sum(r.completion_tokens for r in baseline.replies) / baseline.seconds
        )
        out["differs_from_none"] = sum(
            a.output_ids != b.output_ids for a, b in zip(run.replies, baseline.replies, strict=True)
        )
    return out


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(rows: Sequence[dict[str, Any]], k: int) -> str:
    head = ["mode", "conc", "tok/s", "x none", "differs", "lang", "tau"]
    head += [f"acc@{p}" for p in range(1, k + 1)]
    lines = [head]
    for row in rows:
        for i, (lang, acc) in enumerate([("all", row["all"]), *row["languages"].items()]):
            first = i == 0
            lines.append([
                row["mode"] if first else "",
                str(row["concurrency"]) if first else "",
                _fmt(row["tok_per_s"], ".1f") if first else "",
                _fmt(row["speedup"], ".2f") if first else "",
                _fmt(row["differs_from_none"], "d") if first else "",
                lang,
                _fmt(acc["accept_length"], ".2f"),
                *(_fmt(a, ".0%") for a in acc["position_acceptance"]),
            ])  # fmt: skip
    widths = [max(len(r[c]) for r in lines) for c in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines
    )


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="base model path (or Hub id)")
    ap.add_argument("--draft", type=Path, required=True, help="fastmtp-export artifact dir")
    ap.add_argument("--prompts", type=Path, default=HERE / "prompts" / "mixed_en_zh.jsonl")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--ignore-eos", action="store_true", help="every request runs to length")
    ap.add_argument("--static-lang", help="the static mode's map (default: the artifact's)")
    ap.add_argument(
        "--union-rows", type=int, help="static-union's map size (default: the plugin's K_u)"
    )
    ap.add_argument(
        "--send-lang",
        action="store_true",
        help="send each prompt's lang as custom_params.draft_lang (else the plugin detects)",
    )
    ap.add_argument("--server-args", default="", help="extra launch_server flags, every mode")
    ap.add_argument("--start-timeout", type=float, default=900)
    ap.add_argument("--logs", type=Path, default=HERE / "out" / "serving")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    modes = [m for m in args.modes.split(",") if m]
    if unknown := sorted(set(modes) - set(MODES)):
        ap.error(f"unknown mode(s) {unknown}; choose from {','.join(MODES)}")
    levels = [int(c) for c in args.concurrency.split(",") if c]
    prompts = load_prompts(args.prompts)
    manifest = load(args.draft)
    k = chain_steps(manifest)
    extra = shlex.split(args.server_args)

    union = None
    if "static-union" in modes:
        union = union_map_file(args.draft, manifest, args.union_rows, args.logs)
    runs: list[Run] = []
    for mode in modes:
        launch_args, env = mode_launch(
            mode, args.model, args.draft, manifest, args.static_lang, union
        )
        print(f"[{mode}] starting sglang ...", file=sys.stderr, flush=True)
        log = args.logs / f"{mode}.log"
        try:
            with launched([*launch_args, *extra], env, log, args.start_timeout) as server:
                kw = {
                    "max_new": args.max_new_tokens,
                    "ignore_eos": args.ignore_eos,
                    "send_lang": args.send_lang,
                }
                send(server, prompts[0], **kw)  # warm-up, not timed
                for c in levels:
                    run = workload(server, prompts, c, **kw)
                    run.mode = mode
                    run.plugin_active = PLUGIN_ACTIVE in log.read_text(errors="replace")
                    runs.append(run)
                    print(f"[{mode}] concurrency {c}: {run.seconds:.1f} s", file=sys.stderr)
        except RuntimeError as exc:
            print(f"error: mode {mode}: {exc}", file=sys.stderr)
            return 1
        if mode in PLUGIN_MODES and not runs[-1].plugin_active:
            print(
                f"warning: sglang_patch did not announce itself in {log} (is the package "
                "installed in SGLang's environment? --log-level below info hides it)",
                file=sys.stderr,
            )

    base = {r.concurrency: r for r in runs if r.mode == "none"}
    rows = [summarise(r, k, base.get(r.concurrency)) for r in runs]
    print(table(rows, k))
    if args.json:
        doc = {
            "machine": machine(),
            "model": args.model,
            "draft": str(args.draft),
            "prompts": str(args.prompts),
            "k": k,
            "max_new_tokens": args.max_new_tokens,
            "runs": rows,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
