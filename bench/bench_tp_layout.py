"""sglang_patch at TP > 1 with real token maps: slots per rank, memory per rank, switch cost.

A real byte-level BPE vocabulary does not spread a language's hot ids evenly over the
TP shards (merges learned early, low ids, are the frequent ones), and the per-rank slot
layout (sglang_patch/shard.py) pays for that: every rank scores W rows, W the largest
share any rank owns of any language set. This measures W on real maps, and the
per-rank switch against the TP 1 switch in the same run (a ratio).

Maps: two "languages" counted with a real tokenizer from text that ships with Python
(English: the standard library's docstrings; code: its source files), the top K ids of
each, as ``token-map build`` ranks them. Heads are random at the given hidden size.

Usage: python bench/bench_tp_layout.py --tokenizer DIR [--k 4096] [--hidden 4096]
       [--tp 1,2,4,8] [--json FILE]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib
import inspect
import json
import platform
import sys
from pathlib import Path

import torch
from bench_bank_switch import timed  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sglang_patch.bank import DraftVocabBank  # noqa: E402
from sglang_patch.shard import VocabShard  # noqa: E402
from tests.real_model.prompts import MODULES  # noqa: E402


def texts() -> dict[str, list[str]]:
    """English docstrings and Python source of the same standard-library modules."""
    out: dict[str, list[str]] = {"en": [], "code": []}
    for name in MODULES:
        module = importlib.import_module(name)
        with contextlib.suppress(OSError, TypeError):  # a module without source
            out["code"].append(inspect.getsource(module))
        for _attr, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if callable(obj) else None
            if doc:
                out["en"].append(doc)
    return out


def hot_maps(tokenizer: Path, k: int) -> tuple[dict[str, list[int]], int]:
    """The top ``k`` ids of each language, and the vocabulary size."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    maps = {}
    for lang, docs in texts().items():
        counts = collections.Counter(
            i for enc in tok.encode_batch(docs, add_special_tokens=False) for i in enc.ids
        )
        maps[lang] = [i for i, _ in counts.most_common(k)]
    return maps, tok.get_vocab_size(with_added_tokens=True)


def sglang_rows(vocab: int, tp: int) -> int:
    """Rows per rank as SGLang's VocabParallelEmbedding pads them (padding 64, x TP when
    the padded size does not divide)."""
    pad = 64 if -(-vocab // 64) * 64 % tp == 0 else 64 * tp
    return -(-vocab // pad) * pad // tp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", type=Path, required=True, help="dir with tokenizer.json")
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--tp", default="1,2,4,8")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    maps, vocab = hot_maps(args.tokenizer, args.k)
    k = min(len(ids) for ids in maps.values())
    maps = {lang: ids[:k] for lang, ids in maps.items()}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    head = torch.randn(vocab, args.hidden, dtype=torch.bfloat16, device=device)  # [V, H]
    sets = [frozenset({"en"}), frozenset({"code"}), frozenset({"en", "code"})]
    rows: list[dict[str, object]] = []
    base_switch = None
    for tp in (int(t) for t in args.tp.split(",")):
        per = sglang_rows(vocab, tp)
        widths, switch_s = [], 0.0
        for rank in range(tp):
            shard = VocabShard(rank, tp, per, vocab) if tp > 1 else None
            local = head[rank * per : (rank + 1) * per] if tp > 1 else head  # [P, H]
            bank = DraftVocabBank(maps, local, "en", shard=shard)
            widths.append(int(bank.active_head.shape[0]))
            if rank == 0:
                state = {"i": 0}

                def switch(bank: DraftVocabBank = bank, state: dict[str, int] = state) -> None:
                    state["i"] += 1
                    bank.switch(sets[state["i"] % len(sets)])

                switch_s = timed(switch, device, args.repeats)
                slots, nbytes = bank.slots, bank.nbytes
        base_switch = base_switch or switch_s
        owned = [sum(1 for t in set().union(*maps.values()) if t // per == r) for r in range(tp)]
        rows.append(
            {
                "tp": tp, "rows_per_rank": per, "W": widths[0], "slots": slots,
                "k_u": 2 * k, "union_ids_per_rank": owned,
                "bank_mib_rank0": nbytes / 2**20, "switch_ms_rank0": switch_s * 1e3,
                "switch_vs_tp1": switch_s / base_switch,
            }
        )  # fmt: skip
    print(
        "| TP | rows/rank | W (head rows per rank) | draft slots TP·W | K_u | union ids per "
        "rank | bank MiB (rank 0) | switch ms (rank 0) | x TP 1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['tp']} | {r['rows_per_rank']} | {r['W']} | {r['slots']} | {r['k_u']} | "
            f"{r['union_ids_per_rank']} | {r['bank_mib_rank0']:.1f} | "
            f"{r['switch_ms_rank0']:.2f} | {r['switch_vs_tp1']:.2f} |"
        )
    doc = {
        "machine": f"{platform.machine()} {platform.processor()} {torch.get_num_threads()} threads",
        "device": str(device), "vocab": vocab, "k": k, "hidden": args.hidden, "rows": rows,
    }  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
