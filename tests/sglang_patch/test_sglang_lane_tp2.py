"""The CPU lane at tensor parallelism 2 (two ranks, one core each), same oracle fixtures.

Stock SGLang 0.5.23 cannot use a reduced draft vocabulary there: global hot ids index
the rank's vocabulary shard of the target head and start-up stops with an
``IndexError``. With our package installed, a static ``--speculative-token-map`` and the
per-language plugin both lay the draft slots out per rank (sglang_patch/shard.py); here
both keep the TP 1 output token for token and their languages' acceptance, and both
ranks draft every batch with the same language set.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from ..sglang_lane.server import CHAIN_FLAGS, TP2_ENV, TP2_FLAGS, Server
from .conftest import (
    STOCK,
    Case,
    Lane,
    _assert_parity,
    _assert_traffic_keeps_batch1,
    _concurrently,
    _full_length,
    _lang_of,
    _refused,
    _refused_log,
    _run,
    _sglang_tau,
    _spec,
    _with_lang,
)

pytestmark = pytest.mark.slow


def _tp2(lane: Lane, *extra: str, env: dict[str, str]) -> Iterator[Server]:
    yield from _spec(
        lane, lane.oracle, lane.oracle_draft, *TP2_FLAGS, *extra, env={**TP2_ENV, **env}
    )


def test_stock_sglang_stops_on_a_token_map_at_tp2(lane: Lane) -> None:
    """The upstream bug the static-map layout fixes, reproduced with our plugin off."""
    log = _refused_log(
        lane.root / "tp2-stock-map", lane.oracle, *TP2_FLAGS, *CHAIN_FLAGS,
        "--speculative-draft-model-path", str(lane.oracle_draft), "--speculative-token-map",
        str(lane.oracle_draft / "freq_zh_128.pt"), env={**TP2_ENV, **STOCK},
    )  # fmt: skip
    assert re.search(r"IndexError: index \d+ is out of bounds for dimension 0 with size 128", log)


def test_dp_attention_stops_with_the_reason(lane: Lane) -> None:
    """DP attention gathers draft logits across the attention-DP group, which the per-rank
    slots do not cover: refused at start-up, in one line. (Stock SGLang's own DP attention
    with EAGLE does not start on this CPU lane either: the torch_native backend lacks
    ``get_cpu_graph_seq_len_fill_value``; docs/testing.md.)"""
    refusals = _refused(
        lane.root / "tp2-dp-attention", lane.oracle, *TP2_FLAGS, *CHAIN_FLAGS,
        "--speculative-draft-model-path", str(lane.oracle_draft), "--enable-dp-attention",
        "--dp-size", "2", env=TP2_ENV,
    )  # fmt: skip
    assert refusals, "no refusal line in the log"
    assert "not supported with DP attention (--enable-dp-attention" in refusals[0]
    assert "FASTMTP_SGLANG_PATCH=0" in refusals[0]


@pytest.fixture(scope="class")
def static_tp2(lane: Lane) -> Iterator[Server]:
    """Our package installed (plugin on), one static map: the English one."""
    yield from _tp2(
        lane, "--speculative-token-map", str(lane.oracle_draft / "freq_en_128.pt"),
        "--log-level", "info", env={},
    )  # fmt: skip


class TestStaticMapAtTP2:
    def test_parity_and_the_maps_language_accepts(
        self, static_tp2: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        _assert_parity(_run(static_tp2, list(oracle_plain)), oracle_plain)
        full = _full_length(oracle_plain, 32)
        docs = _run(static_tp2, full)
        en = [d for c, d in docs.items() if _lang_of(c) == "en"]
        zh = [d for c, d in docs.items() if _lang_of(c) == "zh"]
        assert _sglang_tau(en) >= 3.5  # as at TP 1 (TestStaticTokenMap)
        assert _sglang_tau(zh) <= 1.2  # the other language is off the map, as at TP 1
        log = static_tp2.log.read_text(errors="replace")
        for rank in (0, 1):  # every rank laid the map out: 128 en ids on rank 0's shard
            assert re.search(
                rf"TP{rank}\] fastmtp: static token map at TP 2: 128 ids laid out as 256 "
                rf"slots \(128 per rank; rank {rank} holds {128 if rank == 0 else 0}",
                log,
            ), rank


@pytest.fixture(scope="class")
def plugin_tp2(lane: Lane) -> Iterator[Server]:
    yield from _tp2(lane, "--log-level", "info", env={})


def _draft_lines(server: Server) -> dict[int, list[str]]:
    """Each rank's periodic ``fastmtp: draft batches ...`` lines, in order."""
    found: dict[int, list[str]] = {0: [], 1: []}
    for m in re.finditer(r"TP(\d)\] (fastmtp: draft batches .*)", server.log.read_text()):
        found[int(m.group(1))].append(m.group(2))
    return found


class TestPluginAtTP2:
    def test_each_language_drafts_over_its_map_on_both_ranks(
        self, plugin_tp2: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        cases = _full_length(oracle_plain, 32)
        got = {c: plugin_tp2.generate(list(c[0]), c[1], **_with_lang(c)) for c in cases}
        _assert_parity(got, oracle_plain)
        for c, doc in got.items():
            assert doc["meta_info"]["spec_accept_length"] >= 3.5, (_lang_of(c), doc["meta_info"])
        log = plugin_tp2.log.read_text(errors="replace")
        for rank in (0, 1):
            assert f"TP rank {rank}/2: 256 draft slots, 128 head rows here" in log, rank

    def test_mixed_traffic_keeps_batch1_acceptance(
        self, plugin_tp2: Server, mixed_plain: dict[Case, dict[str, Any]]
    ) -> None:
        _assert_traffic_keeps_batch1(plugin_tp2, mixed_plain)

    def test_both_ranks_draft_each_batch_with_the_same_languages(
        self, plugin_tp2: Server, mixed_plain: dict[Case, dict[str, Any]]
    ) -> None:
        _concurrently(plugin_tp2, list(mixed_plain), _with_lang)  # >= 40 mixed batches
        lines = _draft_lines(plugin_tp2)
        assert lines[0], "rank 0 logged no draft counters"
        assert lines[0] == lines[1]  # same batches, same sets, same switches, in order
        assert any("en+zh=" in line for line in lines[0]), lines[0][-1]
