"""The draft vocabulary on a real model's own languages: one map, a union map and the plugin.

One command, every stage cached under ``--work`` (a stopped run continues):

1. **distill**: SmolLM2-135M-Instruct answers Chinese, French, Spanish and German prompts
   (bench/_language_prompts.py) on the lane's real SGLang, half greedy, half with
   FastMTP's sampling. English and Python answers come from the learning-curve run's
   data (``--english``, bench/bench_learning_curve.py), split by prompt kind: code
   prompts are ``py``, the rest ``en``. Held-out prompts (topics never trained on) are
   kept for the measurements.
2. **languages**: per language, the share of answers in the prompt's language (the
   ``[langdetect]`` detector; code counts as in-language when it looks like Python)
   and the share that degenerate (repeated-4-gram share over 0.4). English, Chinese
   and Python are measured; a Latin language only when the model answers in it at
   least 80 % of the time (issue 27's rule).
3. **maps**: ``token-map build`` per language at each K (256 to 4096) and a union at
   K_u = 2K, with each language's ranking up to K_u and the held-out coverage matrix.
4. **head**: one K=3 head on every language's answers (issue 26's best recipe), exported
   with each K's maps.
5. **score**: for every held-out prompt, the exact acceptance of every vocabulary option
   from one greedy pass (fastmtp_export/evaluate/score.py): full, each static map served
   to every language, the union at K_u, the plugin at K_u one language at a time, and
   the plugin under mixed traffic at 8 and 32 requests in flight.
6. **detection**: the plugin's detector on the held-out prompts, script only and with
   py3langid: accuracy per language and microseconds per prompt.
7. **sglang**: the real server at one K (``--sglang-k``) for the deployable options,
   one language at a time and mixed: tau per language, output tokens/s as a ratio to no
   speculation, outputs against no speculation, and eval's tau against SGLang's.

Usage (from the repository root, after ``make lane``):
  python bench/bench_real_languages.py --work /tmp/rl --english /tmp/lc
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _language_prompts import LANGS, build  # noqa: E402
from _learning_prompts import write  # noqa: E402
from bench_learning_curve import MODES, distill_jobs  # noqa: E402
from bench_train import _cli, _log, smollm2_target  # noqa: E402

from tests.sglang_lane.server import REAL_MODEL_FLAGS  # noqa: E402


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
    """Training answers in both modes, on one lane server."""
    done = work / "distilled.done"
    if done.exists():
        return
    files = prompt_files(work, per_lang)
    jobs = {mode: (files[mode], flags) for mode, flags in MODES.items()}
    what = f"distilling {per_lang} prompts per language x {len(LANGS)}"
    distill_jobs(model, work, jobs, max_tokens, concurrency, what)
    done.write_text("ok\n")


#: the languages measured: the four prompted here, and English and Python from --english
ALL_LANGS = ("de", "en", "es", "fr", "py", "zh")
#: measured whatever their share: English, the paper's Chinese, and code
ALWAYS = ("en", "py", "zh")
#: a Latin language joins when the model answers in it at least this often (issue 27)
MIN_IN_LANGUAGE = 0.8
#: map sizes measured; the plugin's and the union's rows are 2K
SIZES = (256, 512, 1024, 2048, 4096)
HELD_PER_LANG = 16


def _english(src: Path) -> tuple[list[dict], list[dict]]:
    """(training answers, held-out prompts) of the learning-curve run, code prompts as ``py``."""
    kinds = {}
    for mode in ("greedy", "sampled"):
        for line in (src / f"prompts-{mode}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            kinds[rec["id"]] = rec["kind"]
    answers = []
    for mode in ("greedy", "sampled"):
        for line in (src / f"distilled-{mode}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            rec["lang"] = "py" if kinds.get(rec["id"]) == "code" else "en"
            answers.append(rec)
    held = []
    for line in (src / "held.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec["lang"] = "py" if rec["kind"] == "code" else "en"
        held.append(rec)
    return answers, held


def answers(work: Path, english: Path) -> list[dict]:
    """Every training answer with its language."""
    out, _ = _english(english)
    for mode in MODES:
        out += [json.loads(x) for x in (work / f"distilled-{mode}.jsonl").read_text().splitlines()]
    return out


def held_prompts(work: Path, english: Path, langs: list[str]) -> Path:
    """``HELD_PER_LANG`` held-out chat prompts per language, with ``lang``."""
    path = work / "held.jsonl"
    _, en_held = _english(english)
    recs = []
    for lang in langs:
        if lang in LANGS:
            src = [json.loads(x) for x in (work / "prompts-held.jsonl").read_text().splitlines()]
            texts = [r["text"] for r in src if r["lang"] == lang]
        else:
            texts = [r["messages"][0]["content"] for r in en_held if r["lang"] == lang]
        recs += [
            {"messages": [{"role": "user", "content": t}], "lang": lang}
            for t in texts[:HELD_PER_LANG]
        ]
    write(path, recs)
    return path


def _looks_like_python(text: str) -> bool:
    """A code answer: a fenced block, or lines that start Python statements."""
    starts = ("def ", "import ", "from ", "class ", "print(", "for ", "return ")
    return "```" in text or sum(x.strip().startswith(starts) for x in text.splitlines()) >= 2


def language_shares(work: Path, model: Path, recs: list[dict]) -> dict[str, Any]:
    """Per language: answers, share in the prompt's language, share degenerate, tokens."""
    from fastmtp_export.maps.lang import LanguageDetector
    from fastmtp_export.train.data import load_chat_tokenizer
    from fastmtp_export.train.filters import repeat_share

    tok = load_chat_tokenizer(model)
    detect = LanguageDetector(["de", "en", "es", "fr", "zh"], statistical=True)
    out: dict[str, Any] = {}
    for lang in ALL_LANGS:
        mine = [r for r in recs if r["lang"] == lang]
        texts = [r["messages"][-1]["content"] for r in mine]
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        if lang == "py":
            same = sum(_looks_like_python(t) for t in texts)
        else:
            same = sum(detect(t) == lang for t in texts)
        out[lang] = {
            "answers": len(mine),
            "in_language": round(same / max(len(mine), 1), 3),
            "degenerate": round(sum(repeat_share(x) > 0.4 for x in ids) / max(len(mine), 1), 3),
            "cut": round(sum(r.get("finish_reason") == "length" for r in mine) / len(mine), 3),
            "tokens": sum(len(x) for x in ids),
            "distinct": len({t for x in ids for t in x}),
        }
    (work / "languages.json").write_text(json.dumps(out, indent=2))
    return out


def detection(work: Path, held: Path, langs: list[str]) -> dict[str, Any]:
    """The plugin's detector on the held-out prompts, per language: accuracy and median
    microseconds per prompt, script only and with py3langid (the ``[langdetect]`` extra)
    over the map languages. Code has no script: ``py`` prompts are right only if named."""
    from bench_lang import median_us

    from fastmtp_export.maps.lang import LanguageDetector

    recs = [json.loads(x) for x in held.read_text().splitlines()]
    out: dict[str, Any] = {}
    for name, stat in (("script", False), ("script+py3langid", True)):
        det = LanguageDetector(langs, statistical=stat, skip_unknown=True)
        row: dict[str, Any] = {}
        for lang in langs:
            texts = [r["messages"][0]["content"] for r in recs if r["lang"] == lang]
            got = [det(t) for t in texts]
            row[lang] = {
                "accuracy": round(sum(g == lang for g in got) / len(texts), 3),
                "detected_as": dict(sorted(Counter(str(g) for g in got).items())),
                "median_us": round(median_us(det, texts, 20), 1),
            }
        out[name] = row
    return out


def build_maps(work: Path, model: Path, recs: list[dict]) -> dict[int, Path]:
    """``token-map build`` at every K with K_u = 2K (union and rankings); K -> map dir."""
    corpus = work / "corpus.jsonl"
    if not corpus.exists():
        write(corpus, [{"lang": r["lang"], "text": r["messages"][-1]["content"]} for r in recs])
    out = {}
    for k in SIZES:
        out[k] = work / "maps" / str(k)
        if not (out[k] / "token_maps.json").exists():
            _cli("token-map", "build", str(corpus), "--tokenizer", str(model), "--out",
                 str(out[k]), "--size", str(k), "--union", str(2 * k), "--holdout", "0.1",
                 "--overwrite", "-q")  # fmt: skip
    return out


def train_head(work: Path, model: Path, recs: list[dict], maps: dict[int, Path]) -> dict[int, Path]:
    """One K=3 head on every language's answers (issue 26's best recipe), exported with
    each K's maps; K -> artifact."""
    data = work / "train.jsonl"
    if not data.exists():
        write(data, recs)  # distill records, as train reads them
    head = work / "head"
    if not (head / "training.json").exists():
        _log(f"training on {len(recs)} answers")
        _cli("train", str(model), "--data", str(data), "--out", str(head), "--steps", "3",
             "--epochs", "1", "--batch", "8", "--lr", "3e-4", "--overwrite", "-q")  # fmt: skip
    arts = {}
    for k, m in maps.items():
        arts[k] = work / "arts" / str(k)
        if not (arts[k] / "fastmtp.json").exists():
            _cli("export", str(head), "--out", str(arts[k]), "--token-maps", str(m),
                 "--default-lang", "en", "--overwrite", "-q")  # fmt: skip
    return arts


def score(
    work: Path, model: Path, arts: dict[int, Path], held: Path, tokens: int, langs: list[str]
) -> dict:
    """``eval --choose`` for every K from one trace per prompt: alone, and mixed at 8 and
    32 in flight over an equal mix of every language."""
    import dataclasses

    import torch

    from fastmtp_export.artifact.manifest import load as load_manifest
    from fastmtp_export.evaluate.choose import ChooseOptions, choose
    from fastmtp_export.evaluate.run import EvalOptions, artifact_maps, prepare
    from fastmtp_export.evaluate.score import trace

    cached = work / "score.json"
    if cached.exists():
        return json.loads(cached.read_text())
    torch.set_num_threads(2)
    opts = EvalOptions(k=3, max_new_tokens=tokens, device="cpu", dtype="fp32", show_progress=False)
    p = prepare(arts[SIZES[0]], model, held, opts)
    _log(f"tracing {len(p.prompts)} held-out prompts")
    start = time.perf_counter()
    traces = {q.line: trace(p.target, p.mtp, q.ids, tokens, 3) for q in p.prompts}
    out: dict[str, Any] = {"trace_seconds": round(time.perf_counter() - start, 1)}
    mix = dict.fromkeys(langs, 1 / len(langs))
    for k, art in arts.items():
        manifest = load_manifest(art)
        maps, rankings = artifact_maps(art, manifest, p.vocab)
        pk = dataclasses.replace(p, manifest=manifest, maps=maps, rankings=rankings)
        for c in (8, 32):
            report = choose(pk, opts, ChooseOptions(mix=mix, concurrency=c), traces)
            out[f"{k}@{c}"] = report
            _log(f"K={k} @{c}: best {report['best']}")
    cached.write_text(json.dumps(out, indent=2))
    return out


SERVE_PER_LANG = 8


def serving_prompts(work: Path, model: Path, held: Path, langs: list[str]) -> Path:
    """The first ``SERVE_PER_LANG`` held-out prompts per language as chat-templated
    ``input_ids`` (the tokens eval decodes from), languages interleaved."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    recs = [json.loads(x) for x in held.read_text().splitlines()]
    per = {lang: [r for r in recs if r["lang"] == lang][:SERVE_PER_LANG] for lang in langs}
    rows = []
    for group in zip(*per.values(), strict=True):
        for r in group:
            text = tok.apply_chat_template(
                r["messages"], add_generation_prompt=True, tokenize=False
            )
            ids = tok(text, add_special_tokens=False)["input_ids"]
            rows.append({"lang": r["lang"], "input_ids": ids, "messages": r["messages"]})
    path = work / "serve.jsonl"
    write(path, [{"lang": r["lang"], "input_ids": r["input_ids"]} for r in rows])
    write(work / "serve-held.jsonl", [{"lang": r["lang"], "messages": r["messages"]} for r in rows])
    return path


def sglang(work: Path, model: Path, art: Path, prompts: Path, tokens: int, label: str,
           modes: str, levels: str, send_lang: bool) -> dict[str, Any]:  # fmt: skip
    """bench_serving.py on the lane's SGLang (cached by ``label``)."""
    from tests.sglang_lane.server import lane_env, serving_flags

    out = work / f"serving-{label}.json"
    if not out.exists():
        # detection decodes the request's ids: the server needs its tokenizer
        flags = serving_flags(tokenizer=not send_lang)
        cmd = [
            sys.executable, str(ROOT / "bench" / "bench_serving.py"), "--model", str(model),
            "--draft", str(art), "--prompts", str(prompts), "--max-new-tokens", str(tokens),
            "--modes", modes, "--concurrency", levels, "--static-lang", "en",
            "--server-args", shlex.join([*flags, *REAL_MODEL_FLAGS]),
            "--logs", str(work / f"logs-{label}"), "--json", str(out),
            *(["--send-lang"] if send_lang else []),
        ]  # fmt: skip
        _log(f"serving {label}: {modes} at {levels}")
        subprocess.run(cmd, env=lane_env(), check=True)
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def eval_vs_sglang(
    work: Path, model: Path, art: Path, tokens: int, served: dict[str, Any]
) -> dict[str, Any]:
    """eval's per-language tau (one trace per prompt) for the options SGLang served at
    concurrency 1, on the same prompts and tokens; their ratio."""
    import torch

    from fastmtp_export.evaluate.choose import ChooseOptions, choose
    from fastmtp_export.evaluate.run import EvalOptions, prepare

    torch.set_num_threads(2)
    opts = EvalOptions(k=3, max_new_tokens=tokens, device="cpu", dtype="fp32", show_progress=False)
    p = prepare(art, model, work / "serve-held.jsonl", opts)
    report = choose(p, opts, ChooseOptions(concurrency=1))
    rows = report["rows"]
    pairs = {"full": "full", "static": "map:en", "static-union": f"union:{rows}",
             "plugin": f"plugin:{rows}"}  # fmt: skip
    out: dict[str, Any] = {"eval": report}
    for run in served["runs"]:
        if run["concurrency"] != 1 or run["mode"] not in pairs:
            continue
        want = report["options"][pairs[run["mode"]]]["languages"]
        got = {lang: a["accept_length"] for lang, a in run["languages"].items()}
        out[run["mode"]] = {
            lang: {"sglang": got[lang], "eval": want[lang], "ratio": got[lang] / want[lang]}
            for lang in got
        }
    return out


def tables(results: dict[str, Any]) -> str:
    """The docs' markdown tables from a results document."""
    langs = results["measured_languages"]
    out = ["| lang | answers | in its language | degenerate | cut | tokens | distinct |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for lang, r in results["languages"].items():
        out.append(
            f"| {lang} | {r['answers']} | {r['in_language']:.0%} | {r['degenerate']:.0%} | "
            f"{r['cut']:.0%} | {r['tokens']:,} | {r['distinct']:,} |"
        )
    out += ["", "| K | coverage | " + " | ".join(langs) + " |",
            "|---|---|" + "---|" * len(langs)]  # fmt: skip
    for k in results["coverage"]:
        cov = results["coverage"][k]
        rows = {
            "own map (K)": [cov[x][x] for x in langs],
            "best other map (K)": [max(cov[x][m] for m in langs if m != x) for x in langs],
            "union (2K)": [results["union_coverage"][k][x] for x in langs],
            "own ranking (2K)": [results["ranking_coverage"][k][x] for x in langs],
        }
        for name, vals in rows.items():
            out.append(f"| {k} | {name} | " + " | ".join(f"{v:.1%}" for v in vals) + " |")
    out += ["", "| K | option | " + " | ".join(langs) + " | mix |",
            "|---|---|" + "---|" * len(langs) + "---|"]  # fmt: skip
    for key, rep in results["score"].items():
        if "@" not in key or not key.endswith("@32"):
            continue
        k = key.split("@")[0]
        c8 = results["score"][f"{k}@8"]["options"]
        opts = dict(rep["options"])
        own = {x: opts[f"map:{x}"]["languages"][x] for x in langs}
        other = {x: max(opts[f"map:{m}"]["languages"][x] for m in langs if m != x) for x in langs}
        rows2: dict[str, tuple[list[float], float | None]] = {
            "full vocabulary": ([opts["full"]["languages"][x] for x in langs], None),
            "own map (K)": ([own[x] for x in langs], None),
            "best other map (K)": ([other[x] for x in langs], None),
        }
        for name, o in opts.items():
            if name.startswith(("union", "plugin")):
                rows2[name] = ([o["languages"][x] for x in langs], o["mix_tau"])
        p8 = next(n for n in c8 if n.endswith("@8"))
        rows2[p8] = ([c8[p8]["languages"][x] for x in langs], c8[p8]["mix_tau"])
        for name, (vals, mix) in rows2.items():
            cells = " | ".join(f"{v:.3f}" for v in vals)
            out.append(f"| {k} | {name} | {cells} | {'-' if mix is None else f'{mix:.3f}'} |")
        out.append(f"| {k} | best named | {rep['best']} |" + " |" * len(langs))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/fastmtp-real-languages"))
    ap.add_argument("--english", type=Path, default=Path("/tmp/fastmtp-learning-curve"))
    ap.add_argument("--per-lang", type=int, default=128, help="training prompts per language")
    ap.add_argument("--max-tokens", type=int, default=160, help="answer length limit")
    ap.add_argument("--concurrency", type=int, default=8, help="per distill job")
    ap.add_argument("--eval-tokens", type=int, default=64)
    ap.add_argument("--stop-after", choices=["distill", "score"], default=None)
    ap.add_argument("--sglang-k", type=int, default=512, choices=SIZES)
    ap.add_argument("--serve-tokens", type=int, default=48)
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    model = smollm2_target(work)
    distill(model, work, args.per_lang, args.max_tokens, args.concurrency)
    if args.stop_after == "distill":
        return
    recs = answers(work, args.english)
    results: dict[str, Any] = {"machine": f"{platform.machine()} {platform.processor()}"}
    results["languages"] = language_shares(work, model, recs)
    _log(f"languages: {results['languages']}")
    langs = [
        lang for lang in ALL_LANGS
        if lang in ALWAYS or results["languages"][lang]["in_language"] >= MIN_IN_LANGUAGE
    ]  # fmt: skip
    results["measured_languages"] = langs
    recs = [r for r in recs if r["lang"] in langs]
    maps = build_maps(work, model, recs)
    results["coverage"] = {
        k: json.loads((d / "token_maps.json").read_text())["coverage"][str(k)]
        for k, d in maps.items()
    }
    results["union_coverage"] = {
        k: json.loads((d / "token_maps.json").read_text())["union"]["coverage"]
        for k, d in maps.items()
    }
    results["ranking_coverage"] = {
        k: {lang: e["ranking"]["coverage"] for lang, e in
            json.loads((d / "token_maps.json").read_text())["languages"].items()}
        for k, d in maps.items()
    }  # fmt: skip
    arts = train_head(work, model, recs, maps)
    held = held_prompts(work, args.english, langs)
    results["detection"] = detection(work, held, langs)
    results["score"] = score(work, model, arts, held, args.eval_tokens, langs)
    (work / "results.json").write_text(json.dumps(results, indent=2))
    if args.stop_after == "score":
        return
    art = arts[args.sglang_k]
    prompts = serving_prompts(work, model, held, langs)
    tokens = args.serve_tokens
    served = sglang(work, model, art, prompts, tokens, f"{args.sglang_k}",
                    "none,full,static,static-union,plugin", "1,8,32", True)  # fmt: skip
    results["serving"] = served
    results["eval_vs_sglang"] = eval_vs_sglang(work, model, art, tokens, served)
    (work / "results.json").write_text(json.dumps(results, indent=2))
    results["serving_detected"] = sglang(
        work, model, art, prompts, tokens, f"{args.sglang_k}-detected", "plugin", "8", False
    )
    (work / "results.json").write_text(json.dumps(results, indent=2))
    json.dump(results, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
