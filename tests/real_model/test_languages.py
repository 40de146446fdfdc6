"""Several languages through the plugin on a real model: SmolLM2 answering English, Chinese
and French, served by real SGLang with mixed requests in flight.

distill per language -> train -> token-map build (maps, union, rankings) -> export ->
``eval`` per own map -> serve with sglang_patch, every request at once with its
``draft_lang``. Output must equal SGLang without speculation, and each language must
keep at least 0.95 of the tau its own map gets in ``eval`` (issue 27). The full-size
measurement is bench/bench_real_languages.py (docs/sglang_patch.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fastmtp_export.cli import app

from ..sglang_lane.server import CHAIN_FLAGS, REAL_MODEL_FLAGS, Server, sglang_server
from .prompts import prompts

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "fastmtp_export"]

ZH = (
    "请用简单的话解释{t}。", "请给出关于{t}的三个建议。", "写一段关于{t}的短文。",
)  # fmt: skip
FR = (
    "Explique {t} simplement.", "Donne trois conseils sur {t}.", "Écris un paragraphe sur {t}.",
)  # fmt: skip
ZH_TOPICS = ("存钱", "睡觉", "做饭", "读书", "跑步")
FR_TOPICS = ("l'épargne", "le sommeil", "la cuisine", "la lecture", "la course à pied")
TRAIN, HELD = 12, 3  # prompts per language


def _texts() -> dict[str, list[str]]:
    return {
        "en": prompts(TRAIN + HELD, seed=5),
        "zh": [tpl.format(t=t) for t in ZH_TOPICS for tpl in ZH][: TRAIN + HELD],
        "fr": [tpl.format(t=t) for t in FR_TOPICS for tpl in FR][: TRAIN + HELD],
    }


def _chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _served(server: Server, tok: Any, held: list[tuple[str, str]], n: int) -> list[dict]:
    """Every held-out prompt at once (mixed languages in flight), each with its draft_lang."""

    def one(item: tuple[str, str]) -> dict:
        lang, text = item
        ids = tok(tok.apply_chat_template(_chat(text), add_generation_prompt=True, tokenize=False),
                  add_special_tokens=False)["input_ids"]  # fmt: skip
        return server.generate(ids, n, custom_params={"draft_lang": lang})

    with ThreadPoolExecutor(len(held)) as pool:
        return list(pool.map(one, held))


def test_mixed_languages_keep_their_own_map_acceptance(
    smollm2: Path, plain: Server, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    texts = _texts()
    train = tmp_path / "train_prompts.jsonl"
    train.write_text("".join(
        json.dumps({"id": f"{lang}{i}", "lang": lang, "text": t}) + "\n"
        for lang, ts in texts.items() for i, t in enumerate(ts[:TRAIN])
    ))  # fmt: skip
    data = tmp_path / "distilled.jsonl"
    done = subprocess.run(
        [*CLI, "distill", str(train), "--server", plain.url, "--out", str(data), "--json", "-q",
         "--temperature", "0", "--max-tokens", "48", "--concurrency", "8"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runner = CliRunner()
    head, maps, art = tmp_path / "head", tmp_path / "maps", tmp_path / "draft"
    corpus = tmp_path / "corpus.jsonl"
    recs = [json.loads(x) for x in data.read_text().splitlines()]
    corpus.write_text("".join(
        json.dumps({"lang": r["lang"], "text": r["messages"][-1]["content"]}) + "\n" for r in recs
    ))  # fmt: skip
    for args in (
        ["train", str(smollm2), "--data", str(data), "--out", str(head), "--epochs", "3",
         "--batch", "8", "--lr", "3e-4", "-q"],
        ["token-map", "build", str(corpus), "--tokenizer", str(smollm2), "--out", str(maps),
         "--size", "512", "--union", "1024", "-q"],
        ["export", str(head), "--out", str(art), "--token-maps", str(maps), "--default-lang",
         "en", "-q"],
    ):  # fmt: skip
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
    manifest = json.loads((art / "fastmtp.json").read_text())
    assert all(e["ranking"]["size"] == 1024 for e in manifest["token_maps"]["languages"].values())

    held = [(lang, t) for lang, ts in texts.items() for t in ts[TRAIN:]]
    prompts_file = tmp_path / "held.jsonl"
    prompts_file.write_text("".join(
        json.dumps({"messages": _chat(t), "lang": lang}) + "\n" for lang, t in held
    ))  # fmt: skip
    r = runner.invoke(
        app,
        ["eval", str(art), "--base", str(smollm2), "--prompts", str(prompts_file),
         "--vocab", "en", "--vocab", "zh", "--vocab", "fr", "--max-new-tokens", "32",
         "--json", "-q"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    modes = json.loads(r.stdout)["modes"]
    own = {lang: modes[lang]["languages"][lang]["accept_length"] for lang in texts}

    tok = AutoTokenizer.from_pretrained(str(smollm2))
    want = [d["output_ids"] for d in _served(plain, tok, held, 32)]
    with sglang_server(
        smollm2, tmp_path / "serve", *REAL_MODEL_FLAGS, *CHAIN_FLAGS,
        "--speculative-draft-model-path", str(art), "--log-level", "info",
    ) as server:  # fmt: skip
        got = _served(server, tok, held, 32)
        log = server.log.read_text(errors="replace")
    assert "per-language draft vocabulary active" in log
    assert "rows filled from rankings, sets chosen by coverage" in log
    assert [d["output_ids"] for d in got] == want  # speculation never changes greedy output
    served = {}
    for lang in texts:
        mine = [d["meta_info"] for (lg, _), d in zip(held, got, strict=True) if lg == lang]
        served[lang] = sum(m["completion_tokens"] for m in mine) / sum(
            m["spec_verify_ct"] for m in mine
        )
    for lang in texts:
        assert served[lang] >= 0.95 * own[lang], (lang, served, own)
    # the head drafts something: the comparison could fail
    assert max(own.values()) > 1.1, own
