"""Which family has a reference head, and its wiring: one module per family registers it.

MiMo keeps its hand-written reference (:mod:`..evaluate.reference`, :mod:`..train.head`);
every other family is a :class:`~.module.FamilyHead` over its transformers decoder layer,
wired by a :class:`~.spec.HeadSpec` registered here, one module per family. transformers
is imported only when a head is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .spec import HeadSpec

SpecFn = Callable[[Mapping[str, Any]], HeadSpec]
HEADS: dict[str, SpecFn] = {}


def register_head(family: str) -> Callable[[SpecFn], SpecFn]:
    """Decorator: ``fn(config) -> HeadSpec`` is ``family``'s head wiring."""

    def add(fn: SpecFn) -> SpecFn:
        HEADS[family] = fn
        return fn

    return add


def has_head(family: str) -> bool:
    """Whether ``eval`` and ``train`` can run ``family``'s MTP head."""
    return family == "mimo" or family in HEADS


def no_head(family: str) -> str:
    """Why ``eval`` / ``train`` cannot run a ``family`` head."""
    return (
        f"eval and train have no PyTorch reference of the {family} head (families with one: "
        f"{', '.join(sorted({'mimo', *HEADS}))}); a {family} draft is served and measured "
        "by SGLang itself (bench/bench_serving.py reports its acceptance)"
    )


from . import deepseek_v3, glm4_moe, longcat_flash, qwen3_5, qwen3_next  # noqa: E402, F401
