"""sglang_patch's pure logic: bank, language sets, hooks with fake workers, settings (no SGLang)."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from fastmtp_export.artifact.export import export_draft
from fastmtp_export.errors import FastMTPError
from fastmtp_export.maps.draft_sets import slot_ids
from fastmtp_export.maps.token_map import save_token_map
from sglang_patch import choice, draft_source, hooks, settings
from sglang_patch.bank import DraftVocabBank, default_rows
from sglang_patch.choice import draft_set, language_counts, request_language

V, H = 12, 3
EN, ZH = [1, 2, 3, 0], [7, 8, 9, 0]  # overlapping in EOS (0), as real maps do


@pytest.fixture
def head() -> torch.Tensor:
    return torch.arange(V * H, dtype=torch.float32).view(V, H)  # row r = [3r, 3r+1, 3r+2]


@pytest.fixture
def bank(head: torch.Tensor) -> DraftVocabBank:
    return DraftVocabBank({"en": EN, "zh": ZH}, head, default="en")


def _set(*langs: str) -> frozenset[str]:
    return frozenset(langs)


# --- union buffer contents -----------------------------------------------------------


def test_union_of_one_language_is_its_map_padded_with_its_own_ids() -> None:
    maps = {"en": EN, "zh": ZH, "ja": [4, 5, 6, 0]}
    assert slot_ids(maps, ["en"], 4) == EN
    assert slot_ids(maps, ["en"], 10) == EN + EN + EN[:2]  # never another language's id


def test_union_of_two_interleaves_ranks_dedups_and_pads_from_the_others() -> None:
    maps = {"en": EN, "zh": ZH, "ja": [4, 5, 6, 0]}
    # en 1,2,3,0 and zh 7,8,9,0 interleaved rank by rank; EOS once
    assert slot_ids(maps, ["en", "zh"], 7) == [1, 7, 2, 8, 3, 9, 0]
    assert slot_ids(maps, ["zh", "en"], 7) == [1, 7, 2, 8, 3, 9, 0]  # order-free
    # room left: ja's ranking next (0 already in), then repeats of the union
    assert slot_ids(maps, ["en", "zh"], 11) == [1, 7, 2, 8, 3, 9, 0, 4, 5, 6, 1]
    # too small for the union: each language loses only its tail
    assert slot_ids(maps, ["en", "zh"], 4) == [1, 7, 2, 8]


def test_bank_table_holds_every_language_set(head: torch.Tensor) -> None:
    maps = {"en": EN, "zh": ZH, "ja": [4, 5, 6, 0]}
    bank = DraftVocabBank(maps, head, default="zh", rows=8)
    assert bank.max_langs == 2
    assert set(bank.sets) == {
        _set("en"),
        _set("ja"),
        _set("zh"),
        _set("en", "ja"),
        _set("en", "zh"),
        _set("ja", "zh"),
    }
    for langs, i in bank.sets.items():
        assert bank.table[i].tolist() == slot_ids(maps, sorted(langs), 8), langs
    assert bank.active == _set("zh")
    assert bank.active_ids.tolist() == ZH + ZH
    # K_u = K holds one language per set: the old majority-language behaviour
    assert set(DraftVocabBank(maps, head, default="en", rows=4).sets) == {
        _set("en"),
        _set("ja"),
        _set("zh"),
    }
    assert DraftVocabBank(maps, head, default="en", rows=12).max_langs == 3
    # overlapping maps: a pair fits in fewer than 2K rows (union 7 of 8 ids)
    two = {"en": EN, "zh": ZH}
    assert DraftVocabBank(two, head, default="en", rows=7).max_langs == 2
    assert DraftVocabBank(two, head, default="en", rows=6).max_langs == 1


def test_default_rows() -> None:
    assert default_rows(4, 1, 12) == 4  # one language: K
    assert default_rows(4, 2, 12) == 8  # two or more: 2K
    assert default_rows(4, 5, 12) == 8
    assert default_rows(8, 2, 12) == 12  # capped at V


def test_bank_rows_are_the_target_rows_in_private_storage(
    bank: DraftVocabBank, head: torch.Tensor
) -> None:
    assert bank.langs == ("en", "zh")
    assert (bank.size, bank.rows) == (4, 8)
    assert bank.active_ids.tolist() == EN + EN
    assert torch.equal(bank.active_head, head[EN + EN])
    assert bank.active_head.data_ptr() != head.data_ptr()
    # table [3 sets, 8] int32 + slots [8] + active ids [8] + inverse [V] int64 + head [8, H] f32
    assert bank.nbytes == 3 * 8 * 4 + (8 + 8 + V) * 8 + 8 * H * 4


def test_switch_is_in_place_and_pointer_stable(bank: DraftVocabBank, head: torch.Tensor) -> None:
    ptrs = (bank.active_ids.data_ptr(), bank.active_head.data_ptr(), bank.inverse.data_ptr())
    assert bank.switch(_set("en")) is False
    assert bank.switch(_set("en", "zh")) is True
    assert bank.active_ids.tolist() == [1, 7, 2, 8, 3, 9, 0, 1]
    assert torch.equal(bank.active_head, head[[1, 7, 2, 8, 3, 9, 0, 1]])
    assert bank.switch(_set("zh")) is True
    assert bank.active_ids.tolist() == ZH + ZH
    assert torch.equal(bank.active_head, head[ZH + ZH])
    # the buffers CUDA graphs captured keep their addresses
    assert (bank.active_ids.data_ptr(), bank.active_head.data_ptr(), bank.inverse.data_ptr()) == (
        ptrs
    )


def test_full_ids_and_slots_round_trip(bank: DraftVocabBank) -> None:
    bank.switch(_set("en", "zh"))  # slots: 1 7 2 8 3 9 0 1
    slots = torch.tensor([[0], [1], [6], [5]])
    full = bank.to_full(slots)
    assert full.tolist() == [[1], [7], [0], [9]]
    back = bank.to_slots(full)
    assert back[1:].tolist() == [[1], [6], [5]]
    assert back[0].item() in (0, 7)  # id 1 pads slot 7 too: either slot is the same token
    assert torch.equal(bank.to_full(back), full)
    bank.switch(_set("zh"))  # 1 and 7... 1 is absent from zh: slot 0 (one lost draft)
    got = bank.to_full(bank.to_slots(full)).view(-1).tolist()
    assert got == [7, 7, 0, 9]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drafting_quality_per_row(seed: int) -> None:
    """One-language set: exactly the own map's argmax. Two-language set: every row's
    choice scores at least its own map's best (its map is a subset of the slots)."""
    gen = torch.Generator().manual_seed(seed)
    vocab, hidden, k = 64, 8, 10
    rng = random.Random(seed)
    maps = {"en": rng.sample(range(vocab), k), "zh": rng.sample(range(vocab), k)}
    head = torch.randn(vocab, hidden, generator=gen)  # [V, H]
    bank = DraftVocabBank(maps, head, default="en")
    states = torch.randn(16, hidden, generator=gen)  # [B, H]
    for lang in ("en", "zh"):
        own = torch.tensor(maps[lang])
        want = own[(states @ head[own].T).argmax(-1)]  # [B] the K-row map's drafts
        bank.switch(_set(lang))
        got = bank.to_full((states @ bank.active_head.T).argmax(-1))
        assert torch.equal(got, want), lang
    bank.switch(_set("en", "zh"))
    got = bank.to_full((states @ bank.active_head.T).argmax(-1))
    logits = states @ head.T  # [B, V]
    for lang in ("en", "zh"):
        best_own = logits[:, maps[lang]].max(-1).values
        assert torch.all(logits.gather(1, got[:, None])[:, 0] >= best_own), lang


@pytest.mark.parametrize(
    ("maps", "default", "rows", "message"),
    [
        ({"en": [1, 2]}, "zh", None, "has no map"),
        ({"en": [1, 2], "zh": [3]}, "en", None, "one size"),
        ({"en": [1, 99]}, "en", None, r"\[0, 12\)"),
        ({"en": [1, 2]}, "en", 1, r"\[K=2, V=12\], got 1"),
        ({"en": [1, 2]}, "en", 13, r"got 13"),
    ],
)
def test_bad_bank_input(
    head: torch.Tensor, maps: dict[str, list[int]], default: str, rows: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DraftVocabBank(maps, head, default, rows)


# --- language sets ---------------------------------------------------------------------


PAIRS = {_set(x) for x in ("en", "ja", "zh")} | {_set("en", "zh"), _set("en", "ja")}
SINGLES = {_set(x) for x in ("en", "ja", "zh")}


@pytest.mark.parametrize(
    ("langs", "current", "sets", "want"),
    [
        (["zh", "zh", "en"], {"en"}, PAIRS, {"en", "zh"}),  # both languages of a mixed batch
        (["zh", "zh", "en"], {"en"}, SINGLES, {"zh"}),  # one per set: the majority
        (["zh", "en"], {"en"}, SINGLES, {"en"}),  # tie keeps the current language
        (["zh", "ja"], {"en"}, SINGLES, {"ja"}),  # tie without the current one: code order
        (["zh", "zh", "ja", "en", "en"], {"en", "ja"}, PAIRS, {"en", "zh"}),  # top two
        (["zh", "ja", "en"], {"en", "ja"}, PAIRS, {"en", "ja"}),  # three-way tie: keep current
        (["ja", "ja", "zh"], {"en"}, PAIRS, {"ja"}),  # {ja, zh} does not fit: the majority
        ([None, None, "zh"], {"zh"}, SINGLES, {"en"}),  # unknown counts as the default
        ([], {"zh"}, PAIRS, {"zh"}),
    ],
)
def test_draft_set(
    langs: list[str | None], current: set[str], sets: set[frozenset[str]], want: set[str]
) -> None:
    counts = language_counts(langs, "en")
    assert draft_set(counts, current=frozenset(current), sets=sets) == want


def test_prefill_keeps_a_set_that_covers_the_new_requests(head: torch.Tensor) -> None:
    bank = DraftVocabBank({"en": EN, "zh": ZH, "ja": [4, 5, 6, 0]}, head, default="en", rows=8)
    both = _set("en", "zh")
    bank.switch(both)
    assert bank.choose_prefill(language_counts(["zh"], "en")) == both
    bank.switch(_set("en"))
    assert bank.choose_prefill(language_counts(["zh"], "en")) == {"zh"}
    bank.switch(both)
    assert bank.choose_prefill(language_counts(["ja", "zh"], "en")) == {"ja", "zh"}


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


def test_reported_bad_values_are_bounded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(choice, "_reported", set())
    with caplog.at_level(logging.WARNING):
        for i in range(1000):
            assert request_language({"draft_lang": f"bad-{i}!"}, {"en"}) is None
    assert len(choice._reported) == choice.MAX_REPORTED + 1
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == choice.MAX_REPORTED + 1
    assert "no longer reporting" in messages[-1]


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


# --- hooks with fake workers ---------------------------------------------------------


class _Req:
    def __init__(self, lang: str | None) -> None:
        self.sampling_params = SimpleNamespace(custom_params={"draft_lang": lang} if lang else None)


def _worker(head: torch.Tensor, rows: int | None = None) -> SimpleNamespace:
    bank = DraftVocabBank({"en": EN, "zh": ZH}, head, default="en", rows=rows)
    worker = SimpleNamespace(
        _fastmtp_maps=settings.ArtifactMaps({}, "en", 4), _fastmtp_counts=hooks.report.Counts()
    )
    setattr(worker, hooks.BANK_ATTR, bank)
    return worker


def _batch(langs: list[str | None], full_ids: list[int]) -> SimpleNamespace:
    index = torch.tensor(full_ids, dtype=torch.int64).view(-1, 1)  # [B, 1] carried full ids
    return SimpleNamespace(
        reqs=[_Req(x) for x in langs], spec_info=SimpleNamespace(topk_index=index)
    )


def test_mixed_batch_drafts_over_both_maps(head: torch.Tensor) -> None:
    worker = _worker(head)
    bank: DraftVocabBank = getattr(worker, hooks.BANK_ATTR)
    batch = _batch(["zh", "zh", "en"], [8, 0, 2])
    hooks.draft_before(worker, batch)
    assert bank.active == _set("en", "zh")
    # the carried full ids are now slots of the union: draft_forward maps them back
    assert bank.to_full(batch.spec_info.topk_index).view(-1).tolist() == [8, 0, 2]
    counts = worker._fastmtp_counts
    assert (counts.batches, counts.rows, counts.off_map, counts.switches) == (
        {"en+zh": 1}, {"en": 1, "zh": 2}, {}, 1
    )  # fmt: skip
    hooks.draft_before(worker, _batch(["en"], [3]))  # single language: exactly its own map
    assert bank.active == _set("en")
    assert counts.switches == 2


def test_rows_off_their_map_are_counted(head: torch.Tensor) -> None:
    worker = _worker(head, rows=4)  # K_u = K: one language per set (majority)
    hooks.draft_before(worker, _batch(["zh", "zh", "en"], [8, 0, 2]))
    counts = worker._fastmtp_counts
    assert getattr(worker, hooks.BANK_ATTR).active == _set("zh")
    assert (counts.rows, counts.off_map) == ({"en": 1, "zh": 2}, {"en": 1})


def test_extend_outputs_become_full_ids(head: torch.Tensor) -> None:
    """Prefill: switch to a set holding the new requests, draft, return full ids; decode
    extend: full ids too. The next draft turns them into slots of whatever set is active."""
    worker = _worker(head)
    bank: DraftVocabBank = getattr(worker, hooks.BANK_ATTR)
    seen: list[frozenset[str]] = []

    def extend(worker: Any, batch: Any) -> Any:
        seen.append(bank.active)
        return SimpleNamespace(topk_index=torch.tensor([[1]]))  # slot 1 of the active set

    out = hooks.prefill_around(extend, worker, SimpleNamespace(reqs=[_Req("zh")]))
    assert seen == [_set("zh")]
    assert out.topk_index.tolist() == [[8]]  # zh slot 1 = full id 8
    bank.switch(_set("en", "zh"))
    out = hooks.prefill_around(extend, worker, SimpleNamespace(reqs=[_Req("zh")]))
    assert seen[-1] == _set("en", "zh")  # a set covering zh is kept: no switch
    assert out.topk_index.tolist() == [[7]]  # union slot 1 = full id 7
    result = SimpleNamespace(next_draft_input=SimpleNamespace(topk_index=torch.tensor([[2], [0]])))
    hooks.decode_extend_after(None, worker, None, result)
    assert result.next_draft_input.topk_index.tolist() == [[2], [1]]


def test_no_bank_leaves_everything_alone(head: torch.Tensor) -> None:
    worker = SimpleNamespace()
    batch = _batch(["zh"], [8])
    hooks.draft_before(worker, batch)
    assert batch.spec_info.topk_index.tolist() == [[8]]
    out = hooks.prefill_around(
        lambda w, b: SimpleNamespace(topk_index=torch.tensor([[5]])), worker, batch
    )
    assert out.topk_index.tolist() == [[5]]


def test_a_bad_request_never_fails_the_batch(
    head: torch.Tensor, caplog: pytest.LogCaptureFixture
) -> None:
    worker = _worker(head)
    bank: DraftVocabBank = getattr(worker, hooks.BANK_ATTR)
    with caplog.at_level(logging.ERROR, logger="sglang_patch"):
        for _ in range(2):
            batch = _batch(["en"], [2, 9])
            batch.reqs.append(SimpleNamespace())  # no sampling_params at all
            hooks.draft_before(worker, batch)
            # the carried ids still became slots (full id 9 is absent from en: slot 0 = 1)
            assert bank.to_full(batch.spec_info.topk_index).view(-1).tolist() == [2, 1]
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1  # once


def test_detection_never_fails_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastmtp_export.maps.lang import LanguageDetector

    monkeypatch.setattr(
        hooks.detect, "_detector", lambda _draft, _rev: LanguageDetector(["en", "zh"])
    )
    manager = SimpleNamespace(server_args=SimpleNamespace(speculative_draft_model_path="d"))
    obj = SimpleNamespace(sampling_params={})
    hooks.detect_before(manager, obj, "你好\ud800世界")  # a lone surrogate from JSON
    assert obj.sampling_params["custom_params"] == {"draft_lang": "zh"}
    obj = SimpleNamespace(sampling_params={})
    broken = SimpleNamespace()  # no server_args: anything raising inside detection
    hooks.detect_before(broken, obj, "hello")
    assert obj.sampling_params == {}


def test_draft_hook_logs_counters_periodically(
    head: torch.Tensor, caplog: pytest.LogCaptureFixture
) -> None:
    worker = _worker(head)
    batch = SimpleNamespace(reqs=[_Req(None)], spec_info=None)
    with caplog.at_level(logging.INFO, logger="sglang_patch"):
        for _ in range(hooks.draft.LOG_EVERY):
            hooks.draft_before(worker, batch)
    lines = [r.getMessage() for r in caplog.records if "draft batches" in r.getMessage()]
    assert lines == [
        f"fastmtp: draft batches en={hooks.draft.LOG_EVERY}; rows en={hooks.draft.LOG_EVERY}; "
        "rows off their map none; switches 0"
    ]


class _HostTraffic(TorchDispatchMode):
    """Records every op that touches a CPU tensor or reads a device value to the host.

    With the bank on the ``meta`` device standing in for the GPU, any such op in the
    draft path is a host-to-device copy (a tensor built from a Python list) or a sync.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        leaves = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        sync = func is torch.ops.aten._local_scalar_dense.default
        if sync or any(t.device.type == "cpu" for t in leaves):
            self.ops.append(str(func))
        return out


def test_draft_path_has_no_host_tensors_and_no_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    head = torch.empty(V, H, device="meta")  # [V, H] the "GPU" target head
    worker = _worker(head)
    bank: DraftVocabBank = getattr(worker, hooks.BANK_ATTR)
    assert bank.active_head.device.type == "meta"

    def batch(langs: list[str]) -> SimpleNamespace:
        index = torch.zeros(len(langs), 1, dtype=torch.int64, device="meta")  # [B, 1]
        return SimpleNamespace(
            reqs=[_Req(x) for x in langs], spec_info=SimpleNamespace(topk_index=index)
        )

    def extend(worker: Any, b: Any) -> Any:
        return SimpleNamespace(topk_index=torch.zeros(1, 1, dtype=torch.int64, device="meta"))

    built: list[str] = []  # torch.tensor(list, device=GPU) copies host data without dispatch
    for name in ("tensor", "as_tensor"):
        factory = getattr(torch, name)

        def record(*args: Any, _f: Any = factory, _n: str = name, **kwargs: Any) -> Any:
            built.append(_n)
            return _f(*args, **kwargs)

        monkeypatch.setattr(torch, name, record)
    with _HostTraffic() as probe:
        for langs in (["en", "zh"], ["zh"], ["en", "zh", "zh"], ["en"]):  # every switch kind
            hooks.prefill_around(extend, worker, SimpleNamespace(reqs=[_Req(langs[0])]))
            hooks.draft_before(worker, batch(langs))
            result = SimpleNamespace(next_draft_input=batch(langs).spec_info)
            hooks.decode_extend_after(None, worker, None, result)
    assert worker._fastmtp_counts.switches >= 4
    assert (probe.ops, built) == ([], [])
    with _HostTraffic() as control:  # the probes do see host data reaching the device
        torch.ones(2).to("meta")
        torch.tensor([1, 2], device="meta")
    assert "aten._to_copy.default" in control.ops
    assert built == ["tensor"]


# --- settings and the start-up guard ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "want"), [(None, 256), ("", 256), ("128", 128), ("300", 300), ("1000", 1000)]
)
def test_draft_rows(monkeypatch: pytest.MonkeyPatch, value: str | None, want: int) -> None:
    if value is None:
        monkeypatch.delenv(settings.ROWS_ENV, raising=False)
    else:
        monkeypatch.setenv(settings.ROWS_ENV, value)
    assert settings.draft_rows(128, 2, 1000) == want


@pytest.mark.parametrize("value", ["abc", "127", "1001", "2.5", "-1"])
def test_bad_draft_rows_is_one_line(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(settings.ROWS_ENV, value)
    with pytest.raises(FastMTPError) as err:
        settings.draft_rows(128, 2, 1000)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"FASTMTP_DRAFT_ROWS={value!r}" in msg
    assert "from K=128 to the vocabulary size 1000" in msg
    assert "default 256" in msg


def _server_args(model: Path, draft: Path | str | None, algo: str = "EAGLE") -> Any:
    return SimpleNamespace(
        speculative_algorithm=algo, model_path=str(model),
        speculative_draft_model_path=None if draft is None else str(draft),
    )  # fmt: skip


def test_guard_refuses_a_base_without_mtp_tensors(
    tmp_path: Path, tiny_source: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert settings.base_mtp_tensors(tiny_source) == 16
    with caplog.at_level(logging.WARNING, logger="sglang_patch"):
        hooks.guard_before(None, _server_args(tiny_source, None))
        hooks.guard_before(None, _server_args(tiny_source, tiny_source))
    warned = [r.getMessage() for r in caplog.records if r.name == "sglang_patch"]
    assert len(warned) == 2
    assert "serves the base checkpoint's own MTP head (16 tensors" in warned[0]
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_source / "config.json", bare)
    from safetensors.torch import save_file

    save_file({"model.embed_tokens.weight": torch.zeros(2, 2)}, str(bare / "model.safetensors"))
    assert settings.base_mtp_tensors(bare) == 0
    with pytest.raises(RuntimeError, match="has no MTP tensors.*--speculative-draft-model-path"):
        hooks.guard_before(None, _server_args(bare, None))
    hooks.guard_before(None, _server_args(bare, None, algo="EAGLE3"))  # not an MTP draft
    hooks.guard_before(None, _server_args(Path("org/hub-model"), None))  # cannot tell: quiet


def test_guard_says_why_the_plugin_is_idle(
    tmp_path: Path,
    tiny_source: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)  # a repo id must not reach any network
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(hf, "HF_HOME", str(tmp_path / "hf-home"))
    draft_source.forget_fetches()
    plain = tmp_path / "plain"
    export_draft(tiny_source, plain)
    with caplog.at_level(logging.INFO, logger="sglang_patch"):
        hooks.guard_before(None, _server_args(tiny_source, "org/draft"))
        hooks.guard_before(None, _server_args(tiny_source, tmp_path))
        hooks.guard_before(None, _server_args(tiny_source, plain))
    got = [r.getMessage() for r in caplog.records if r.name == "sglang_patch"]
    assert len(got) == 3
    assert "plugin idle: fastmtp: cannot read the manifest and maps of org/draft" in got[0]
    assert "drafting over the full vocabulary" in got[0]
    assert "has no fastmtp.json" in got[1]
    assert "carries no token maps" in got[2]


def test_guard_refuses_an_artifact_on_a_bad_version_or_a_partial_hook_set(
    tmp_path: Path, tiny_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eos = json.loads((tiny_source / "config.json").read_text())["eos_token_id"]
    save_token_map(tmp_path / "en.pt", [eos, 1, 2])
    art = tmp_path / "draft"
    export_draft(tiny_source, art, token_map=[f"en={tmp_path / 'en.pt'}"], default_lang="en")
    args = _server_args(tiny_source, art)
    monkeypatch.setattr(hooks.guard, "missing_hooks", lambda: [])
    hooks.guard_before(None, args)  # all hooks applied: fine
    monkeypatch.setattr(hooks.guard, "missing_hooks", lambda: [hooks.TARGETS["draft"]])
    with pytest.raises(
        RuntimeError, match="did not apply the plugin's hooks to .*EagleDraftWorker.draft"
    ):
        hooks.guard_before(None, args)
    monkeypatch.setattr(hooks.guard, "_version_problem", settings.version_problem("0.6.0"))
    with pytest.raises(RuntimeError, match="supports SGLang 0.5.23, found 0.6.0"):
        hooks.guard_before(None, args)


# --- draft classes that do not keep the head they are handed ---------------------------


def _start_worker(head_rows: int | None) -> SimpleNamespace:
    """A worker after stock ``init_lm_head`` with our one-row placeholder map."""
    model = SimpleNamespace()
    if head_rows is not None:
        model.lm_head = SimpleNamespace(weight=torch.zeros(head_rows, H))  # [rows, H]
    return SimpleNamespace(
        hot_token_id=torch.zeros(1, dtype=torch.int64), draft_runner=SimpleNamespace(model=model)
    )


def test_a_class_keeping_the_reduced_head_passes() -> None:
    hooks.startup.refuse_head_not_kept(_start_worker(1))


@pytest.mark.parametrize("rows", [V, None], ids=["own full head", "no lm_head"])
def test_a_class_drafting_with_another_head_is_refused(rows: int | None) -> None:
    with pytest.raises(RuntimeError, match="does not draft with the reduced head") as err:
        hooks.startup.refuse_head_not_kept(_start_worker(rows))
    assert "FASTMTP_SGLANG_PATCH=0" in str(err.value)
