"""sglang_patch's pure logic: bank, remapping, language choice, settings (no SGLang)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fastmtp_export.errors import FastMTPError
from fastmtp_export.export import export_draft
from fastmtp_export.token_maps import save_token_map
from sglang_patch import hooks, settings
from sglang_patch.bank import DraftVocabBank
from sglang_patch.choice import batch_language, request_language

V, H = 10, 3


@pytest.fixture
def head() -> torch.Tensor:
    return torch.arange(V * H, dtype=torch.float32).view(V, H)  # row r = [3r, 3r+1, 3r+2]


@pytest.fixture
def bank(head: torch.Tensor) -> DraftVocabBank:
    return DraftVocabBank({"en": [1, 2, 3, 0], "zh": [7, 8, 9, 0]}, head, default="en")


def test_bank_rows_are_the_target_rows_in_private_storage(
    bank: DraftVocabBank, head: torch.Tensor
) -> None:
    assert bank.langs == ("en", "zh")
    assert bank.size == 4
    assert torch.equal(bank.active_head, head[[1, 2, 3, 0]])
    assert bank.active_ids.tolist() == [1, 2, 3, 0]
    assert torch.equal(bank.heads[1], head[[7, 8, 9, 0]])
    head.zero_()  # the target head changing must not change the draft's copy
    assert bank.active_head.abs().sum() > 0
    # ids [2, 4] + inverse [2, V] + active ids [4] in int64; heads [2, 4, H] + active [4, H] in f32
    assert bank.nbytes == (2 * 4 + 2 * V + 4) * 8 + (2 * 4 * H + 4 * H) * 4


def test_switch_copies_in_place(bank: DraftVocabBank, head: torch.Tensor) -> None:
    ptr_ids, ptr_head = bank.active_ids.data_ptr(), bank.active_head.data_ptr()
    assert bank.switch("en") is False
    assert bank.switch("zh") is True
    assert bank.active == "zh"
    assert bank.active_ids.tolist() == [7, 8, 9, 0]
    assert torch.equal(bank.active_head, head[[7, 8, 9, 0]])
    # the buffers CUDA graphs captured keep their addresses
    assert (bank.active_ids.data_ptr(), bank.active_head.data_ptr()) == (ptr_ids, ptr_head)


def test_remap_goes_through_full_ids(bank: DraftVocabBank) -> None:
    # en slots [0, 3, 2] are full ids [1, 0, 3]; in zh, 0 is slot 3, 1 and 3 are absent
    got = bank.remap(torch.tensor([0, 3, 2]), "en", "zh")
    assert got.tolist() == [0, 3, 0]  # absent -> slot 0 (one wasted draft, never an assert)
    assert bank.remap(torch.tensor([1]), "en", "en").tolist() == [1]
    assert bank.to_hot(torch.tensor([9, 0, 5]), "zh").tolist() == [2, 3, 0]


def test_remap_rows_carries_each_row_from_its_own_space(bank: DraftVocabBank) -> None:
    # en map [1, 2, 3, 0], zh map [7, 8, 9, 0]; rows drafted in en, zh, en, zh
    index = torch.tensor([[1], [0], [3], [2]])  # full ids: 2 (en), 7 (zh), 0 (en), 9 (zh)
    got = bank.remap_rows(index, ["en", "zh", "en", "zh"], "zh")
    assert got.tolist() == [[0], [0], [3], [2]]  # 2 absent in zh -> 0; 7 -> 0; 0 -> 3; 9 -> 2
    got = bank.remap_rows(index, ["en", "zh", "en", "zh"], "en")
    assert got.tolist() == [[1], [0], [3], [0]]  # 7, 9 absent in en -> 0; 0 -> slot 3
    assert bank.remap_rows(index, ["zh"] * 4, "zh") is index  # nothing to carry


@pytest.mark.parametrize(
    ("maps", "default", "message"),
    [
        ({"en": [1, 2]}, "zh", "has no map"),
        ({"en": [1, 2], "zh": [3]}, "en", "one size"),
        ({"en": [1, 99]}, "en", r"\[0, 10\)"),
    ],
)
def test_bad_bank_input(head: torch.Tensor, maps: dict, default: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DraftVocabBank(maps, head, default)


@pytest.mark.parametrize(
    ("langs", "current", "want"),
    [
        (["zh", "zh", "en"], "en", "zh"),  # majority
        (["zh", "en"], "en", "en"),  # tie keeps the current language
        (["zh", "en"], "zh", "zh"),
        (["zh", "ja"], "en", "ja"),  # tie without the current one: smallest code
        ([None, None, "zh"], "zh", "en"),  # unknown counts as the default
        ([], "zh", "zh"),
    ],
)
def test_batch_language(langs: list[str | None], current: str, want: str) -> None:
    assert batch_language(langs, current=current, default="en") == want


def test_request_language_never_fails(caplog: pytest.LogCaptureFixture) -> None:
    supported = {"en", "zh"}
    assert request_language({"draft_lang": "zh-CN"}, supported) == "zh"
    assert request_language({"draft_lang": "EN"}, supported) == "en"
    assert request_language(None, supported) is None
    assert request_language({"other": 1}, supported) is None
    with caplog.at_level(logging.WARNING):
        for bad in ({"draft_lang": 3}, {"draft_lang": "klingon!"}, {"draft_lang": "fr"}):
            assert request_language(bad, supported) is None
            assert request_language(bad, supported) is None  # logged once per value
    assert len([r for r in caplog.records if "draft_lang" in r.getMessage()]) == 3


def test_version_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.ANY_VERSION_ENV, raising=False)
    assert settings.version_problem("0.5.23") is None
    problem = settings.version_problem("0.6.0")
    assert problem is not None
    assert "0.5.23" in problem
    assert settings.ENABLE_ENV in problem
    monkeypatch.setenv(settings.ANY_VERSION_ENV, "1")
    assert settings.version_problem("0.6.0") is None


@pytest.mark.parametrize(
    ("value", "off"), [("0", True), ("off", True), ("1", False), (None, False)]
)
def test_kill_switch(monkeypatch: pytest.MonkeyPatch, value: str | None, off: bool) -> None:
    if value is None:
        monkeypatch.delenv(settings.ENABLE_ENV, raising=False)
    else:
        monkeypatch.setenv(settings.ENABLE_ENV, value)
    assert settings.disabled() is off


def test_artifact_maps(tmp_path: Path, tiny_source: Path) -> None:
    eos = json.loads((tiny_source / "config.json").read_text())["eos_token_id"]
    save_token_map(tmp_path / "en.pt", [eos, 1, 2])
    save_token_map(tmp_path / "zh.pt", [eos, 3, 4])
    out = tmp_path / "draft"
    export_draft(
        tiny_source, out, token_map=[f"en={tmp_path / 'en.pt'}", f"zh={tmp_path / 'zh.pt'}"],
        default_lang="zh",
    )  # fmt: skip
    got = settings.artifact_maps(out)
    assert got == settings.ArtifactMaps({"en": [eos, 1, 2], "zh": [eos, 3, 4]}, "zh", 3)
    plain = tmp_path / "plain"
    export_draft(tiny_source, plain)
    assert settings.artifact_maps(plain) is None  # an artifact without maps: plugin idle
    assert settings.artifact_maps(tmp_path) is None  # not an artifact at all
    save_token_map(out / "freq_zh_3.pt", [1, 1, 2])  # tampered after export
    with pytest.raises(FastMTPError, match="duplicate"):
        settings.artifact_maps(out)


class _Req:
    def __init__(self, lang: str | None) -> None:
        self.sampling_params = SimpleNamespace(custom_params={"draft_lang": lang} if lang else None)


def _worker(head: torch.Tensor) -> SimpleNamespace:
    bank = DraftVocabBank({"en": [1, 2, 3, 0], "zh": [7, 8, 9, 0]}, head, default="en")
    worker = SimpleNamespace(
        _fastmtp_maps=settings.ArtifactMaps({}, "en", 4),
        _fastmtp_counts={"batches": dict.fromkeys(bank.langs, 0), "switches": 0},
    )
    setattr(worker, hooks.BANK_ATTR, bank)
    return worker


def test_draft_hook_switches_and_remaps_the_carried_index(head: torch.Tensor) -> None:
    worker = _worker(head)
    bank = getattr(worker, hooks.BANK_ATTR)
    # carried index in en space: slots [0, 3] = full ids [1, 0]
    batch = SimpleNamespace(
        reqs=[_Req("zh"), _Req("zh"), _Req("en")],
        spec_info=SimpleNamespace(topk_index=torch.tensor([[0], [3], [1]])),
    )
    hooks.draft_before(worker, batch)
    assert bank.active == "zh"
    assert bank.active_ids.tolist() == [7, 8, 9, 0]
    # full ids [1, 0, 2] in zh space: 1 and 2 absent -> 0, 0 is slot 3
    assert batch.spec_info.topk_index.tolist() == [[0], [3], [0]]
    assert worker._fastmtp_counts == {"batches": {"en": 0, "zh": 1}, "switches": 1}
    hooks.draft_before(worker, batch)  # same language: no switch, index untouched
    assert batch.spec_info.topk_index.tolist() == [[0], [3], [0]]
    assert worker._fastmtp_counts == {"batches": {"en": 0, "zh": 2}, "switches": 1}


def test_prefill_drafts_new_requests_in_their_language(head: torch.Tensor) -> None:
    """A zh request joins a running en one: its first draft uses the zh map, and the
    merged batch carries each row from the space it was drafted in."""
    worker = _worker(head)
    bank = getattr(worker, hooks.BANK_ATTR)
    running, new = _Req("en"), _Req("zh")
    hooks.draft_before(worker, SimpleNamespace(reqs=[running], spec_info=None))
    assert getattr(running, hooks.SPACE_ATTR) == "en"
    hooks.prefill_before(worker, SimpleNamespace(reqs=[new]))
    assert bank.active == "zh"  # the prefill's draft-extend uses the zh head
    assert getattr(new, hooks.SPACE_ATTR) == "zh"
    assert worker._fastmtp_counts["switches"] == 1
    # merged batch: running row is en slot 3 (full id 0), new row is zh slot 1 (full id 8)
    merged = SimpleNamespace(
        reqs=[running, new], spec_info=SimpleNamespace(topk_index=torch.tensor([[3], [1]]))
    )
    hooks.draft_before(worker, merged)  # tie en/zh: keep the current zh
    assert bank.active == "zh"
    assert merged.spec_info.topk_index.tolist() == [[3], [1]]  # full ids 0 and 8, zh slots
    assert [getattr(r, hooks.SPACE_ATTR) for r in merged.reqs] == ["zh", "zh"]


def test_draft_hook_logs_counters_periodically(
    head: torch.Tensor, caplog: pytest.LogCaptureFixture
) -> None:
    worker = _worker(head)
    batch = SimpleNamespace(reqs=[_Req(None)], spec_info=None)
    with caplog.at_level(logging.INFO, logger="sglang_patch"):
        for _ in range(hooks.LOG_EVERY):
            hooks.draft_before(worker, batch)
    lines = [r.getMessage() for r in caplog.records if "draft batches" in r.getMessage()]
    assert lines == [f"fastmtp: draft batches en={hooks.LOG_EVERY}, zh=0; switches 0"]


def test_sharded_head_is_refused_at_start_up() -> None:
    runner = SimpleNamespace(
        model=SimpleNamespace(lm_head=SimpleNamespace(weight=torch.zeros(5, 2))),
        model_config=SimpleNamespace(vocab_size=10),
    )
    worker = SimpleNamespace(target_worker=SimpleNamespace(model_runner=runner))
    with pytest.raises(RuntimeError, match="holds 5 of 10 lm_head rows.*--tp-size 1"):
        hooks._refuse_sharded_head(worker)
    runner.model_config.vocab_size = 5
    hooks._refuse_sharded_head(worker)  # TP=1: fine
