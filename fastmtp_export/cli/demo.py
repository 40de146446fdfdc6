"""``fastmtp-export demo``: the whole job in seconds, on a tiny two-language model.

The model is :mod:`..oracle`'s: a 2-layer MiMo-architecture target whose greedy output
is a known token chain, with "English" (Latin letters) and "Chinese" (Han characters)
halves of a 256-token vocabulary and an MTP head that predicts the chain. The demo
writes self-distilled-looking text in both languages, builds a hot-token map per
language from it, exports the head with the maps, and evaluates it. The acceptance
table shows what the tool is for: one static map loses the other language's drafts,
and the union map and per-language maps keep both.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ._errors import handle_errors
from ._options import JsonOpt
from ._output import emit_json, setup_logging

#: records per language in the demo corpora, and tokens per record
RECORDS, RECORD_TOKENS = 64, 48


def default_cache() -> Path:
    """``$FASTMTP_CACHE``, else ``$XDG_CACHE_HOME/fastmtp-export``, else ``~/.cache/...``."""
    if env := os.environ.get("FASTMTP_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fastmtp-export"


@handle_errors
def demo(
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Where to build the demo files [default: ~/.cache/fastmtp-export]."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """The whole job on a tiny two-language model: maps, export, evaluation.

    Builds a deterministic tiny MiMo-architecture model (with a tokenizer) whose text
    is in two "languages", writes a corpus in each, builds per-language hot-token maps,
    exports the MTP head with them, and evaluates acceptance with the full vocabulary,
    one static map, the union map and per-language maps. Ends with the SGLang command
    that serves it.
    """
    from .._util.atomic import atomic_directory
    from ..artifact.export import export_draft
    from ..artifact.launch import sglang_command_text
    from ..checkpoints import oracle
    from ..evaluate.run import EvalOptions, evaluate
    from ..maps.builder import build_token_maps
    from ..maps.corpus import CorpusFile
    from ..maps.tokenizer import load_tokenizer

    setup_logging(quiet=json_out)
    _need_eval_extra()
    root = (cache_dir or default_cache()).absolute() / "demo"
    times: dict[str, float] = {}
    start = time.perf_counter()
    with atomic_directory(root / "model", overwrite=True) as tmp:
        oracle.write_target(tmp, oracle=True)
    with atomic_directory(root / "tokenizer", overwrite=True) as tmp:
        oracle.write_char_tokenizer(tmp)
    perm = oracle.chain_permutation(0)
    rng = random.Random(0)
    prompts: list[str] = []
    with atomic_directory(root / "data", overwrite=True) as tmp:
        for lang, ids in (("en", oracle.EN[1:]), ("zh", oracle.ZH)):
            lines = [
                json.dumps({"lang": lang, "text": oracle.text_of(chain)}, ensure_ascii=False)
                for chain in _chains(ids, perm, rng)
            ]
            (tmp / f"{lang}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
            for _ in range(3):
                prompt = rng.sample(ids, 4)
                prompts.append(json.dumps({"lang": lang, "input_ids": prompt}))
        (tmp / "prompts.jsonl").write_text("\n".join(prompts) + "\n")
    corpora = [CorpusFile(root / "data" / f"{lang}.jsonl") for lang in ("en", "zh")]
    times["model and data"] = time.perf_counter() - start

    start = time.perf_counter()
    tok = load_tokenizer(root / "tokenizer")
    maps = build_token_maps(
        corpora, tok, root / "maps", size=len(oracle.EN), holdout=0.1, workers=1,
        overwrite=True, progress=False, union=2 * len(oracle.EN),
    )  # fmt: skip
    times["token maps"] = time.perf_counter() - start
    start = time.perf_counter()
    draft = export_draft(
        root / "model", root / "draft", overwrite=True, progress=False, token_maps=root / "maps"
    )
    times["export"] = time.perf_counter() - start
    start = time.perf_counter()
    info = evaluate(
        draft.out, root / "model", root / "data" / "prompts.jsonl",
        EvalOptions(tokenizer=root / "tokenizer", vocab=("full", "en", "union", "auto"),
                    max_new_tokens=32, device="cpu", show_progress=False),
    )  # fmt: skip
    times["evaluation"] = time.perf_counter() - start
    if json_out:
        emit_json(
            {
                "root": str(root),
                "seconds": {k: round(v, 3) for k, v in times.items()},
                "coverage": maps.summary.coverage,
                "evaluation": info.model_dump(mode="json"),
            }
        )
        return
    _print(root, times, maps.summary, info, draft, sglang_command_text)


def _need_eval_extra() -> None:
    """Fail before any work when the evaluation step cannot run (it loads the tiny target
    through transformers), instead of after building the maps and the export."""
    from ..errors import EvalError

    try:
        import transformers  # noqa: F401
    except ImportError:
        raise EvalError(
            "the demo evaluates its draft through transformers, which is not installed: "
            "pip install 'fastmtp-export[eval]' (make demo installs it)"
        ) from None


def _chains(ids: list[int], perm: list[int], rng: random.Random) -> list[list[int]]:
    """:data:`RECORDS` greedy continuations in one language (EOS and after cut off)."""
    from ..checkpoints import oracle

    out: list[list[int]] = []
    while len(out) < RECORDS:
        chain = oracle.greedy_chain(rng.choice(ids), RECORD_TOKENS, perm)
        chain = chain[: chain.index(oracle.EOS)] if oracle.EOS in chain else chain
        if len(chain) >= 8:
            out.append(chain)
    return out


def _print(root: Path, times: dict[str, float], summary: Any, info: Any, draft: Any,
           command: Any) -> None:  # fmt: skip
    from .eval import render
    from .token_map import render_coverage

    say = typer.echo
    built = times["model and data"]
    say(f"1. a tiny two-language model, its tokenizer and corpora ({built:.2f} s):")
    say(f"   {root}/model, {root}/tokenizer, {root}/data/{{en,zh}}.jsonl\n")
    say(f"2. one hot-token map per language, and their union ({times['token maps']:.2f} s):\n")
    say(render_coverage(summary) + "\n")
    say(f"3. the MTP head exported with its maps ({times['export']:.2f} s): {draft.out}\n")
    say(f"4. acceptance per vocabulary ({times['evaluation']:.2f} s). full: the whole vocabulary;")
    say("   en: one static map for every prompt (stock SGLang); union: one map of both;")
    say("   auto: each prompt's own language (the sglang_patch plugin):\n")
    say(render(info) + "\n")
    say("The static en map loses every Chinese draft; the union and per-language maps keep")
    say("both languages at the full vocabulary's acceptance while scoring fewer rows.\n")
    say("Serve it (with the plugin installed, requests draft in their own language):")
    say("  " + command(draft.out, draft.manifest, str(root / "model")))
