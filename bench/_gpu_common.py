"""What bench/gpu_check.py's parts share: shapes, maps, timers, and SGLang stand-ins.

The GPU machines this check runs on have PyTorch but no SGLang and cannot install
anything, so everything here needs only torch and the project's own SGLang-free code.
The stand-ins carry exactly the attributes the plugin's draft hooks read
(``sglang_patch/hooks/draft.py``) and that ``hooks/startup.py`` sets on the worker.
"""

from __future__ import annotations

import importlib
import importlib.util
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the GPU machine gets a copy of the tree, not an install
    sys.path.insert(0, str(ROOT))

from fastmtp_export.checkpoints.synthetic import MIMO_7B, TINY  # noqa: E402
from sglang_patch.bank import DraftVocabBank, default_rows  # noqa: E402


@dataclass(frozen=True)
class Shapes:
    """Every size the check uses; ``GPU`` is MiMo-7B's, ``CPU`` a tiny stand-in."""

    name: str
    model: dict[str, int]  # MiMo config dims (hidden, layers, heads, vocab, ...)
    k: int  # one language's map (FastMTP's paper: 16k-32k)
    langs: int
    steps: int  # speculative_num_steps: the chain's draft tokens per round
    graph_bs: tuple[int, ...]  # batch sizes captured (a subset of SGLang's spec list)
    raw_bs: tuple[int, ...]  # batch sizes run (a raw size pads up to a captured one)
    cost_bs: tuple[int, ...]  # draft head cost
    hook_bs: tuple[int, ...]  # the hooks' host time
    ctx: int  # KV-cache length of the decode step the hooks are compared with
    train_tokens: int  # tokens of the training-step sequence
    repeats: int  # timed repeats (median)

    @property
    def vocab(self) -> int:
        return self.model["vocab_size"]

    @property
    def hidden(self) -> int:
        return self.model["hidden_size"]

    @property
    def rows(self) -> int:
        """K_u, the plugin's default draft rows (2K with two or more languages)."""
        return default_rows(self.k, self.langs, self.vocab)


GPU = Shapes(
    name="mimo-7b",
    model=MIMO_7B,
    k=32768,
    langs=3,
    steps=3,
    graph_bs=(1, 2, 4, 8, 10, 32, 64),
    raw_bs=(1, 2, 3, 8, 9, 32, 64),
    cost_bs=(1, 2, 4, 8, 16, 32, 64),
    hook_bs=(1, 4, 16, 64, 256),
    ctx=1024,
    train_tokens=2048,
    repeats=20,
)
CPU = Shapes(
    name="tiny",
    model=TINY,
    k=32,
    langs=3,
    steps=3,
    graph_bs=(1, 2, 4, 8),
    raw_bs=(1, 3, 8),
    cost_bs=(1, 8),
    hook_bs=(1, 4, 16, 64, 256),
    ctx=32,
    train_tokens=48,
    repeats=5,
)
LANGS = ("en", "zh", "ru", "de", "ja", "ko")


def language_maps(shapes: Shapes, seed: int = 0) -> dict[str, list[int]]:
    """``langs`` ranked maps of K ids; a quarter of each is shared (punctuation, digits...).

    Overlap makes a two-language union shorter than K_u, so the bank pads it from the
    third language's ranking: the padding path is replayed too.
    """
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(shapes.vocab, generator=gen)  # [V]
    shared = perm[: shapes.k // 4].tolist()
    rest = perm[shapes.k // 4 :]  # [V - K/4]
    maps = {}
    for lang in LANGS[: shapes.langs]:
        own = rest[torch.randperm(rest.numel(), generator=gen)[: shapes.k - len(shared)]]
        maps[lang] = shared + own.tolist()
    return maps


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, inner: int = 1) -> float:
    """Median seconds per call of ``fn`` (``inner`` calls per timed sample, one warm-up)."""
    fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        synchronize(device)
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def draft_hooks() -> types.ModuleType:
    """``sglang_patch.hooks.draft``, the plugin's own per-batch hooks.

    ``sglang_patch/hooks/__init__.py`` imports every hook module, and the start-up guard's
    imports need pydantic, which the GPU machines lack. The draft hooks themselves need
    only torch, so when the package import fails the module is loaded from its file under
    an empty ``sglang_patch.hooks`` package (same code, same relative imports).
    """
    try:
        return importlib.import_module("sglang_patch.hooks.draft")
    except ImportError:
        pass
    name = "sglang_patch.hooks"
    package = types.ModuleType(name)
    package.__path__ = [str(ROOT / "sglang_patch" / "hooks")]
    sys.modules[name] = package
    spec = importlib.util.spec_from_file_location(
        f"{name}.draft", ROOT / "sglang_patch" / "hooks" / "draft.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class SamplingParams:
    """SGLang's ``SamplingParams`` (a msgspec struct): only ``custom_params`` is read."""

    __slots__ = ("custom_params",)

    def __init__(self, custom_params: dict[str, Any] | None) -> None:
        self.custom_params = custom_params


class Req:
    """SGLang's ``Req`` (a plain class): the hooks read ``sampling_params.custom_params``."""

    def __init__(self, rid: int, lang: str | None) -> None:
        self.rid = rid
        self.sampling_params = SamplingParams(None if lang is None else {"draft_lang": lang})


class SpecInfo:
    """``EagleDraftInput``: the carried draft token ``topk_index`` [B, 1] int64."""

    def __init__(self, topk_index: torch.Tensor | None) -> None:
        self.topk_index = topk_index


class Batch:
    """``ScheduleBatch``: ``reqs`` (row i is request i) and ``spec_info``."""

    def __init__(self, reqs: Sequence[Req], topk_index: torch.Tensor | None = None) -> None:
        self.reqs = list(reqs)
        self.spec_info = SpecInfo(topk_index)


class BatchResult:
    """``GenerationBatchResult``: hook 6 rewrites ``next_draft_input.topk_index``."""

    def __init__(self, topk_index: torch.Tensor) -> None:
        self.next_draft_input = SpecInfo(topk_index)


class Worker:
    """``EagleDraftWorker`` after ``hooks/startup.py``'s ``init_lm_head_after``.

    ``hot_token_id`` is the bank's id buffer and the draft head's weight a Parameter whose
    ``.data`` is the bank's head buffer, bound as startup binds
    ``draft_runner.model.lm_head.weight.data``.
    """

    def __init__(self, bank: DraftVocabBank, default: str, hooks: types.ModuleType) -> None:
        self.hot_token_id = bank.active_ids  # [K_u] int64
        placeholder = bank.active_head.new_empty(1, bank.active_head.shape[1])  # [1, H]
        self.lm_head = torch.nn.Parameter(placeholder, requires_grad=False)
        self.lm_head.data = bank.active_head  # [K_u, H]
        self._fastmtp_maps = types.SimpleNamespace(default=default)
        self._fastmtp_counts = hooks.Counts()
        setattr(self, hooks.BANK_ATTR, bank)


def mixed_reqs(n: int, langs: Sequence[str | None], start: int = 0) -> list[Req]:
    """``n`` requests cycling through ``langs`` (``None``: no ``draft_lang``)."""
    return [Req(start + i, langs[i % len(langs)]) for i in range(n)]
