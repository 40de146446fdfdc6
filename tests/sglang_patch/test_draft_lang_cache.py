"""The draft hook parses each request's ``draft_lang`` once, not every round (issue 29:
at 256 requests the parse was most of the hooks' host time per round)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from sglang_patch import hooks
from sglang_patch.bank import DraftVocabBank
from sglang_patch.hooks import draft

V, H = 12, 3
MAPS = {"en": [1, 2, 3, 0], "zh": [7, 8, 9, 0]}


class _Req:
    def __init__(self, lang: str | None) -> None:
        self.sampling_params = SimpleNamespace(custom_params={"draft_lang": lang} if lang else None)


class _SlotReq:
    """A request type that cannot take new attributes."""

    __slots__ = ("sampling_params",)

    def __init__(self, lang: str) -> None:
        self.sampling_params = SimpleNamespace(custom_params={"draft_lang": lang})


def _worker(maps: dict[str, list[int]]) -> SimpleNamespace:
    head = torch.arange(V * H, dtype=torch.float32).view(V, H)  # [V, H]
    worker = SimpleNamespace(
        _fastmtp_maps=SimpleNamespace(default="en"), _fastmtp_counts=hooks.report.Counts()
    )
    setattr(worker, hooks.BANK_ATTR, DraftVocabBank(maps, head, default="en"))
    return worker


def _round(worker: SimpleNamespace, reqs: list[Any]) -> None:
    index = torch.zeros(len(reqs), 1, dtype=torch.int64)  # [B, 1] carried full ids
    hooks.draft_before(
        worker, SimpleNamespace(reqs=reqs, spec_info=SimpleNamespace(topk_index=index))
    )


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every ``custom_params`` the hook parses."""
    seen: list[object] = []
    real = draft.request_language

    def counting(params: object, supported: Any) -> str | None:
        seen.append(params)
        return real(params, supported)

    monkeypatch.setattr(draft, "request_language", counting)
    return seen


def test_a_request_is_parsed_once_across_rounds(parses: list[object]) -> None:
    worker = _worker(MAPS)
    reqs = [_Req("zh"), _Req("ZH-cn"), _Req("en"), _Req(None), _Req("xx")]
    for _ in range(3):
        _round(worker, reqs)
    assert len(parses) == 5  # not 15
    # unknown, absent and bad values draft as the default, every round
    assert worker._fastmtp_counts.rows == {"en": 9, "zh": 6}
    assert getattr(worker, hooks.BANK_ATTR).active == frozenset({"en", "zh"})


def test_a_request_without_room_for_the_cache_is_parsed_each_round(
    parses: list[object],
) -> None:
    worker = _worker(MAPS)
    reqs = [_SlotReq("zh"), _SlotReq("en")]
    for _ in range(3):
        _round(worker, reqs)
    assert len(parses) == 6
    assert worker._fastmtp_counts.rows == {"en": 3, "zh": 3}


def test_another_bank_parses_again() -> None:
    """Each worker's bank has its own languages: a cached answer is never reused across."""
    both, english = _worker(MAPS), _worker({"en": MAPS["en"]})
    reqs = [_Req("zh"), _Req("zh")]
    _round(both, reqs)
    _round(english, reqs)
    assert both._fastmtp_counts.rows == {"zh": 2}
    assert english._fastmtp_counts.rows == {"en": 2}  # zh is not one of its languages
