"""The real SGLang 0.5.23 EAGLE K=3 chain loop on this CPU, serving our exported drafts.

Servers are real ``python -m sglang.launch_server`` processes on loopback, with the
test-only plugin of tests/sglang_lane (2 hooks, 7 op fallbacks). These tests never
skip: when SGLang cannot be imported they fail with the reason, because CI must run
them (``make test`` installs the lane).
"""

from __future__ import annotations

import json
import random
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from fastmtp_export.checkpoints.oracle import (
    EN,
    ZH,
    greedy_chain,
    text_of,
)
from fastmtp_export.cli import app

from ..sglang_lane.fastmtp_cpu_lane.ops import FALLBACKS
from ..sglang_lane.server import (
    BENCH,
    CHAIN_FLAGS,
    LANE,
    Server,
    lane_env,
    serving_flags,
    sglang_server,
)
from .conftest import (
    Case,
    Lane,
    _assert_parity,
    _assert_traffic_keeps_batch1,
    _concurrently,
    _full_length,
    _lang_of,
    _metric_values,
    _refused,
    _run,
    _sglang_tau,
    _spec,
    _tau_per_lang,
    _with_lang,
)

pytestmark = pytest.mark.slow


def test_plain_server_follows_the_oracle_chain(
    lane: Lane, oracle_plain: dict[Case, dict[str, Any]]
) -> None:
    for (prompt, n), doc in oracle_plain.items():
        assert doc["output_ids"] == greedy_chain(prompt[-1], n, lane.perm), prompt
    assert any(d["meta_info"]["finish_reason"]["type"] == "stop" for d in oracle_plain.values())


@pytest.fixture(scope="class")
def oracle_spec(lane: Lane) -> Iterator[Server]:
    yield from _spec(lane, lane.oracle, lane.oracle_draft)


def _stock_map_spec(lane: Lane, map_file: str) -> Iterator[Server]:
    """Stock SGLang (no plugin) drafting with the artifact's ``map_file`` as its one map."""
    yield from _spec(
        lane, lane.oracle, lane.oracle_draft,
        "--speculative-token-map", str(lane.oracle_draft / map_file),
    )  # fmt: skip


@pytest.fixture(scope="class")
def map_spec(lane: Lane) -> Iterator[Server]:
    yield from _stock_map_spec(lane, "freq_en_128.pt")


@pytest.fixture(scope="class")
def random_spec(lane: Lane) -> Iterator[Server]:
    yield from _spec(lane, lane.random, lane.random_draft)


def _eval_tau(lane: Lane, model: Path, draft: Path, cases: list[Case], vocab: str) -> Any:
    """``fastmtp-export eval --json`` on ``cases`` (ids, one max_new_tokens)."""
    (n,) = {c[1] for c in cases}
    prompts = lane.root / f"eval-{draft.name}-{vocab}.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"input_ids": list(p), "lang": "en" if p[0] in EN else "zh"}) + "\n"
            for p, _ in cases
        )
    )
    r = CliRunner().invoke(
        app,
        ["eval", str(draft), "--base", str(model), "--tokenizer",
         str(lane.root / "oracle-tokenizer"), "--prompts", str(prompts), "--vocab", vocab,
         "--max-new-tokens", str(n), "--json", "-q"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["modes"][vocab]


def _assert_eval_matches_sglang(
    lane: Lane, server: Server, oracle_plain: dict[Case, dict[str, Any]], vocab: str
) -> None:
    """Per language, eval's tau and verify steps equal SGLang's exactly (oracle: no ties)."""
    cases = [c for c in oracle_plain if c[1] == 32]  # 1- and 4-token prompts, both langs
    docs = _run(server, cases)
    ours = _eval_tau(lane, lane.oracle, lane.oracle_draft, cases, vocab)
    for lang, ids in (("en", EN), ("zh", ZH)):
        mine = [docs[c] for c in cases if c[0][0] in ids]
        got = ours["languages"][lang]
        assert got["verify_steps"] == sum(d["meta_info"]["spec_verify_ct"] for d in mine), lang
        assert got["accept_length"] == pytest.approx(_sglang_tau(mine), rel=1e-9), lang


class TestOracleSpeculation:
    @pytest.fixture
    def server(self, oracle_spec: Server) -> Server:
        return oracle_spec

    def test_parity_with_plain_greedy(
        self, server: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        _assert_parity(_run(server, list(oracle_plain)), oracle_plain)

    def test_acceptance_is_near_the_maximum(
        self, server: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        long = _full_length(oracle_plain, 32)
        assert len(long) >= 3
        lengths = [server.generate(list(p), n)["meta_info"]["spec_accept_length"] for p, n in long]
        assert sum(lengths) / len(lengths) >= 3.5, lengths
        assert min(lengths) >= 3.0, lengths

    def test_eval_predicts_sglang_acceptance(
        self, lane: Lane, server: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        """The reference decoder and SGLang mean the same tau (issue 6's cross-check)."""
        _assert_eval_matches_sglang(lane, server, oracle_plain, "full")

    def test_concurrent_batch_keeps_parity(
        self, server: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        cases = list(oracle_plain)[:12]
        _assert_parity(_concurrently(server, cases), oracle_plain)

    def test_abort_leaves_the_server_healthy(
        self, lane: Lane, server: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        box: dict[str, Any] = {}

        def long_request() -> None:
            box["doc"] = server.post(
                "/generate",
                {"input_ids": [5, 9], "rid": "abort-me",
                 "sampling_params": {"max_new_tokens": 900, "temperature": 0,
                                     "ignore_eos": True}},
            )  # fmt: skip

        t = threading.Thread(target=long_request)
        t.start()
        time.sleep(1.0)
        server.post("/abort_request", {"rid": "abort-me"})
        t.join(timeout=120)
        assert box["doc"]["meta_info"]["finish_reason"]["type"] == "abort", box
        assert len(box["doc"]["output_ids"]) < 900
        assert server.get("/health")[0] == 200
        case = next(iter(oracle_plain))
        assert (
            server.generate(list(case[0]), case[1])["output_ids"]
            == (oracle_plain[case]["output_ids"])
        )

    def test_every_shim_ran_in_the_scheduler(self, server: Server) -> None:
        """A fallback or hook that silently did not run must fail the lane."""
        server.generate([5, 9, 11], 8)
        need = {f"called:{name}" for name in FALLBACKS} | {
            "hook:draft_decode_backend",
            "hook:draft_extend_backend",
            "hook:target_verify",
            "called:draft_decode_step",
        }
        events = server.events()
        scheduler = [e for e in events.values() if "hook:target_verify" in e]
        assert len(scheduler) == 1, events
        assert need <= scheduler[0], sorted(need - scheduler[0])
        assert all(f"registered:{name}" in scheduler[0] for name in FALLBACKS)


class TestStockTokenMap:
    """Plain SGLang's one static map (``--speculative-token-map``), from our artifact."""

    @pytest.fixture
    def server(self, map_spec: Server) -> Server:
        return map_spec

    def test_map_language_accepts_other_language_collapses(
        self, server: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        en = [c for c in _full_length(oracle_plain, 32) if c[0][0] in EN]
        zh = [c for c in _full_length(oracle_plain, 32) if c[0][0] in ZH]
        assert en
        assert zh
        got = _run(server, en + zh)
        _assert_parity(got, oracle_plain)
        en_acc = [got[c]["meta_info"]["spec_accept_length"] for c in en]
        zh_acc = [got[c]["meta_info"]["spec_accept_length"] for c in zh]
        assert min(en_acc) >= 3.5, en_acc
        assert max(zh_acc) <= 1.2, zh_acc  # every zh draft is outside the en map

    def test_eval_static_map_matches_sglang(
        self, lane: Lane, server: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        _assert_eval_matches_sglang(lane, server, oracle_plain, "en")


class TestRandomDraft:
    """A random target and draft: almost every draft is rejected, output must not change."""

    @pytest.fixture
    def server(self, random_spec: Server) -> Server:
        return random_spec

    def test_parity_under_rejection(
        self, server: Server, random_plain: dict[Case, dict[str, Any]]
    ) -> None:
        got = _run(server, list(random_plain))
        _assert_parity(got, random_plain)
        verifies = sum(d["meta_info"].get("spec_verify_ct", 0) for d in got.values())
        tokens = sum(d["meta_info"]["completion_tokens"] for d in got.values())
        assert verifies > 20
        assert tokens / verifies < 2.0  # SGLang's accept length overall: drafts mostly rejected

    def test_concurrent_batch_keeps_parity(
        self, server: Server, random_plain: dict[Case, dict[str, Any]]
    ) -> None:
        _assert_parity(_concurrently(server, list(random_plain)), random_plain)


@pytest.fixture(scope="class")
def noisy_spec(lane: Lane) -> Iterator[Server]:
    """Our plugin installed and on, with an artifact that ships no maps: it must stay idle."""
    yield from _spec(lane, lane.noisy, lane.noisy_draft, env={})


class TestEvalCrossCheckPartialAcceptance:
    """Partial acceptance (tau about 2.3): the evaluator and SGLang agree within 2%."""

    def test_tau_agrees(self, lane: Lane, noisy_spec: Server) -> None:
        rng = random.Random(9)
        cases: list[Case] = [
            (tuple(rng.randrange(1, 255) for _ in range(rng.randrange(2, 16))), 24)
            for _ in range(16)
        ]
        docs = _run(noisy_spec, cases)
        sglang = _sglang_tau(list(docs.values()))
        ours = _eval_tau(lane, lane.noisy, lane.noisy_draft, cases, "full")["all"]
        assert 1.5 < sglang < 3.5, sglang  # partial: accept-all or reject-all would not test it
        assert ours["accept_length"] == pytest.approx(sglang, rel=0.02), (ours, sglang)
        log = noisy_spec.log.read_text(errors="replace")
        assert f"fastmtp: plugin idle: {lane.noisy_draft} carries no token maps" in log
        assert "per-language draft vocabulary active" not in log


@pytest.fixture(scope="class")
def plugin_spec(lane: Lane) -> Iterator[Server]:
    """Our sglang_patch plugin active (it is installed with the package): no static map."""
    yield from _spec(
        lane, lane.oracle, lane.oracle_draft, "--log-level", "info", "--enable-metrics", env={}
    )


class TestLanguageAwarePlugin:
    """sglang_patch switches the draft vocabulary per batch (issue 5)."""

    @pytest.fixture
    def server(self, plugin_spec: Server) -> Server:
        return plugin_spec

    def test_each_language_keeps_acceptance_with_draft_lang(
        self, server: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        cases = _full_length(oracle_plain, 32)
        got = {c: server.generate(list(c[0]), c[1], **_with_lang(c)) for c in cases}
        _assert_parity(got, oracle_plain)
        for c, doc in got.items():
            assert doc["meta_info"]["spec_accept_length"] >= 3.5, (_lang_of(c), doc["meta_info"])
        assert {_lang_of(c) for c in cases} == {"en", "zh"}
        log = server.log.read_text(errors="replace")
        assert (
            "per-language draft vocabulary active: languages en,zh, K=128, draft rows K_u=256 "
            "(FASTMTP_DRAFT_ROWS), up to 2 languages per batch, rows filled from repeats, "
            "sets chosen by request counts, default en" in log
        )

    def test_unknown_or_bad_language_uses_the_default(
        self, server: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        zh = next(c for c in _full_length(oracle_plain, 32) if _lang_of(c) == "zh")
        for params in (
            {},
            {"custom_params": {"draft_lang": 3}},
            {"custom_params": {"draft_lang": "xx!"}},
        ):
            doc = server.generate(list(zh[0]), zh[1], **params)
            assert doc["output_ids"] == oracle_plain[zh]["output_ids"]
            assert doc["meta_info"]["spec_accept_length"] <= 1.2, params  # default en map

    def test_counters_on_prometheus_metrics(
        self, server: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        zh = next(c for c in _full_length(oracle_plain, 32) if _lang_of(c) == "zh")
        en = next(c for c in _full_length(oracle_plain, 32) if _lang_of(c) == "en")
        for case in (zh, en):
            server.generate(list(case[0]), case[1], **_with_lang(case))
        values = _metric_values(server)
        # each 32-token request drafts about 8 batches; switches: en -> zh -> en at least
        assert values['fastmtp:draft_batches_total{lang="zh"}'] >= 5, values
        assert values['fastmtp:draft_batches_total{lang="en"}'] >= 5, values
        assert values["fastmtp:draft_switches_total"] >= 2, values

    def test_mixed_concurrent_batches_keep_parity(
        self, server: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        cases = list(oracle_plain)
        results = _concurrently(server, cases, _with_lang)
        assert len(results) == len(cases)
        _assert_parity(results, oracle_plain)


@pytest.fixture(scope="class", params=["disjoint maps", "overlapping maps"])
def mixed_spec(request: pytest.FixtureRequest, lane: Lane) -> Iterator[Server]:
    draft = lane.oracle_draft if request.param == "disjoint maps" else lane.overlap_draft
    yield from _spec(lane, lane.oracle, draft, "--enable-metrics", env={})


class TestMixedLanguageTraffic:
    """Concurrent en/zh traffic: every request drafts at its own language's acceptance."""

    def test_each_language_keeps_its_batch1_acceptance(
        self, mixed_spec: Server, mixed_plain: dict[Case, dict[str, Any]]
    ) -> None:
        _assert_traffic_keeps_batch1(mixed_spec, mixed_plain)
        values = _metric_values(mixed_spec)
        assert values.get('fastmtp:draft_batches_total{lang="en+zh"}', 0) > 0, values  # mixed
        assert values['fastmtp:draft_rows_total{lang="zh"}'] > 0, values
        off_map = {k: v for k, v in values.items() if k.startswith("fastmtp:draft_rows_off_map")}
        assert all(v == 0 for v in off_map.values()), off_map


@pytest.fixture(scope="class")
def union_spec(lane: Lane) -> Iterator[Server]:
    yield from _stock_map_spec(lane, "freq_union_256.pt")


class TestStockUnionMap:
    """The plugin-free option: one union map keeps both languages under mixed traffic."""

    def test_each_language_keeps_its_own_map_acceptance(
        self, union_spec: Server, mixed_plain: dict[Case, dict[str, Any]]
    ) -> None:
        _assert_traffic_keeps_batch1(union_spec, mixed_plain)
        log = union_spec.log.read_text(errors="replace")
        assert "per-language draft vocabulary active" not in log  # stock: no plugin

    def test_eval_union_matches_sglang(
        self, lane: Lane, union_spec: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        _assert_eval_matches_sglang(lane, union_spec, oracle_plain, "union")


@pytest.fixture(scope="class")
def majority_spec(lane: Lane) -> Iterator[Server]:
    """K_u = K: one language per batch, the previous (majority-language) design."""
    yield from _spec(
        lane, lane.oracle, lane.oracle_draft, "--enable-metrics",
        env={"FASTMTP_DRAFT_ROWS": "128"},
    )  # fmt: skip


class TestOneLanguagePerBatchLosesTheMinority:
    """The same traffic with K_u = K: the loss the union buffer removes (the test's control)."""

    def test_minority_rows_lose_acceptance(
        self, majority_spec: Server, mixed_plain: dict[Case, dict[str, Any]]
    ) -> None:
        cases = list(mixed_plain)
        alone = _tau_per_lang(
            {c: majority_spec.generate(list(c[0]), c[1], **_with_lang(c)) for c in cases}
        )
        mixed = _concurrently(majority_spec, cases, _with_lang)
        _assert_parity(mixed, mixed_plain)
        tau = _tau_per_lang(mixed)
        assert min(tau[lang] / alone[lang] for lang in tau) < 0.95, (tau, alone)
        values = _metric_values(majority_spec)
        off_map = sum(v for k, v in values.items() if k.startswith("fastmtp:draft_rows_off_map"))
        assert off_map > 0, values


STARTUP_FAULTS = LANE / "startup_faults"


def _faults(**faults: str) -> dict[str, str]:
    return {"PYTHONPATH": f"{STARTUP_FAULTS}:{lane_env()['PYTHONPATH']}", **faults}


class TestStartupRefusals:
    """The plugin fails loudly at start-up, or not at all (a real server each)."""

    @pytest.mark.parametrize(
        ("fault", "reasons"),
        [
            (  # an SGLang the plugin was not checked against
                {"FASTMTP_LANE_FAKE_SGLANG_VERSION": "0.6.0"},
                ["supports SGLang 0.5.23, found 0.6.0", "FASTMTP_SGLANG_PATCH=0"],
            ),
            (  # a seam SGLang could not hook: a partial hook set
                {"FASTMTP_LANE_UNHOOKABLE": "EagleDraftWorker.draft"},
                ["did not apply the plugin's hooks to ", "eagle_worker_v2.EagleDraftWorker.draft "],
            ),
        ],
        ids=["unsupported sglang", "partial hook set"],
    )
    def test_artifact_fault_stops_the_server(
        self, lane: Lane, tmp_path: Path, fault: dict[str, str], reasons: list[str]
    ) -> None:
        lines = _refused(
            tmp_path, lane.oracle, *CHAIN_FLAGS, "--speculative-draft-model-path",
            str(lane.oracle_draft), env=_faults(**fault),
        )  # fmt: skip
        assert lines, "no refusal line in the log"
        for reason in reasons:
            assert reason in lines[0], lines[0]

    def test_draft_from_a_base_without_mtp_tensors_stops_the_server(
        self, lane: Lane, tmp_path: Path
    ) -> None:
        base = tmp_path / "no-mtp"
        base.mkdir()
        for name in ("config.json", "generation_config.json"):
            shutil.copy(lane.oracle / name, base / name)
        with safe_open(str(lane.oracle / "model.safetensors"), "pt") as f:
            names = [k for k in f.keys() if ".mtp_layers." not in k]  # noqa: SIM118
            trunk = {k: f.get_tensor(k) for k in names}
        save_file(trunk, str(base / "model.safetensors"), metadata={"format": "pt"})
        lines = _refused(tmp_path / "logs", base, *CHAIN_FLAGS, env={})  # no draft path
        assert lines, "no refusal line in the log"
        assert f"the base checkpoint {base} has no MTP tensors" in lines[0]

    def test_draft_from_a_base_with_mtp_tensors_warns(
        self, lane: Lane, tmp_path: Path, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        with sglang_server(lane.oracle, tmp_path, *CHAIN_FLAGS, env={}) as server:
            case = _full_length(oracle_plain, 32)[0]
            doc = server.generate(list(case[0]), case[1])
            log = server.log.read_text(errors="replace")
        assert doc["output_ids"] == oracle_plain[case]["output_ids"]
        assert doc["meta_info"]["spec_accept_length"] >= 3.5  # the base's own (oracle) head
        assert "SGLang serves the base checkpoint's own MTP head (16 tensors" in log

    def test_rejection_sampling_leaves_the_plugin_idle(self, lane: Lane, tmp_path: Path) -> None:
        """Stock 0.5.23 refuses a reduced draft vocabulary with rejection sampling at start-up
        (a vocabulary-size error about a map the user never set): the plugin stays idle.

        On this CPU the server still cannot serve: under rejection sampling SGLang samples
        drafts with a Triton kernel, which has no CPU driver, and its own warm-up request
        stops it (before or just after /health answers). The test checks that it got past
        the memory-pool set-up, where the vocabulary check sits, with the plugin idle and
        saying why.
        """
        exited: list[str] = []
        try:
            with sglang_server(
                lane.oracle, tmp_path, *CHAIN_FLAGS, "--speculative-draft-model-path",
                str(lane.oracle_draft), "--speculative-use-rejection-sampling", env={},
            ):  # fmt: skip
                pass
        except RuntimeError as exc:  # the Triton sampler's exit, not a start-up refusal
            exited.append(str(exc))
        assert all("sglang exited with" in e for e in exited), exited
        log = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("server-*.log"))
        assert "fastmtp: rejection sampling" in log
        assert "plugin idle, drafting over the full vocabulary" in log
        assert "share one vocab" not in log  # stock's start-up refusal never came
        assert "per-language draft vocabulary active" not in log


@pytest.fixture(scope="class")
def text_spec(lane: Lane) -> Iterator[Server]:
    """The plugin with the fixture tokenizer loaded: requests carry text, not ids."""
    yield from _spec(
        lane, lane.oracle, lane.oracle_draft,
        "--tokenizer-path", str(lane.root / "oracle-tokenizer"), env={}, tokenizer=True,
    )  # fmt: skip


class TestDetectionFromText:
    """No draft_lang from the client: the tokenizer-manager hook detects it from the text."""

    def test_detected_language_keeps_acceptance(
        self, lane: Lane, text_spec: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        cases = _full_length(oracle_plain, 32)
        assert {c[0][0] in EN for c in cases} == {True, False}  # both languages
        for prompt, n in cases:
            doc = text_spec.post(
                "/generate",
                {
                    "text": text_of(prompt),
                    "sampling_params": {"max_new_tokens": n, "temperature": 0},
                },
            )
            assert doc["output_ids"] == greedy_chain(prompt[-1], n, lane.perm), prompt
            assert doc["meta_info"]["spec_accept_length"] >= 3.5, (
                text_of(prompt),
                doc["meta_info"],
            )

    def test_client_draft_lang_overrides_detection(
        self, text_spec: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        zh = next(c for c in _full_length(oracle_plain, 32) if c[0][0] in ZH)
        params = {"max_new_tokens": zh[1], "temperature": 0, "custom_params": {"draft_lang": "en"}}
        doc = text_spec.post("/generate", {"text": text_of(zh[0]), "sampling_params": params})
        assert doc["output_ids"] == oracle_plain[zh]["output_ids"]
        assert doc["meta_info"]["spec_accept_length"] <= 1.2  # the client's (wrong) choice won


@pytest.fixture(scope="class")
def plugin_with_static_map(lane: Lane) -> Iterator[Server]:
    """Our plugin installed and enabled, but the operator gave an explicit static map."""
    yield from _spec(
        lane, lane.oracle, lane.oracle_draft, "--log-level", "info",
        "--speculative-token-map", str(lane.oracle_draft / "freq_en_128.pt"), env={},
    )  # fmt: skip


class TestExplicitTokenMapWins:
    def test_static_map_gives_stock_behaviour(
        self, plugin_with_static_map: Server, oracle_plain: dict[Case, dict[str, Any]]
    ) -> None:
        server = plugin_with_static_map
        zh = [c for c in _full_length(oracle_plain, 32) if c[0][0] in ZH]
        got = {c: server.generate(list(c[0]), c[1], custom_params={"draft_lang": "zh"}) for c in zh}
        _assert_parity(got, oracle_plain)
        assert max(d["meta_info"]["spec_accept_length"] for d in got.values()) <= 1.2
        log = server.log.read_text(errors="replace")
        assert "--speculative-token-map is set; using it as one static map" in log
        assert "per-language draft vocabulary active" not in log


class TestServingBenchmark:
    """bench/bench_serving.py end to end: six real servers, one mixed en/zh workload."""

    def test_six_modes_on_the_oracle(self, lane: Lane, tmp_path: Path) -> None:
        rng = random.Random(11)
        prompts = tmp_path / "prompts.jsonl"
        with prompts.open("w", encoding="utf-8") as fh:
            for i in range(12):  # every request form: text, chat messages, token ids
                lang, ids = ("en", EN[1:]) if i % 2 == 0 else ("zh", ZH)
                prompt = rng.sample(ids, 5)
                forms: list[dict[str, Any]] = [
                    {"text": text_of(prompt)},
                    {"messages": [{"role": "user", "content": text_of(prompt)}]},
                    {"input_ids": prompt},
                ]
                body = forms[i % 3]
                fh.write(json.dumps({"lang": lang, **body}, ensure_ascii=False) + "\n")
        flags = serving_flags(tokenizer=True) + [
            "--tokenizer-path",
            str(lane.root / "oracle-tokenizer"),
        ]
        out = tmp_path / "serving.json"
        r = subprocess.run(
            [sys.executable, str(BENCH / "bench_serving.py"), "--model", str(lane.oracle),
             "--draft", str(lane.oracle_draft), "--prompts", str(prompts),
             "--max-new-tokens", "32", "--server-args", shlex.join(flags),
             "--concurrency", "1,8",
             "--logs", str(tmp_path / "logs"), "--json", str(out)],
            env=lane_env(), capture_output=True, text=True, timeout=1500, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.splitlines()[0].split()[:4] == ["mode", "conc", "tok/s", "x"]
        runs = {
            (row["mode"], row["concurrency"]): row for row in json.loads(out.read_text())["runs"]
        }
        modes = ("none", "full", "static", "static-union", "plugin", "plugin-k")
        assert set(runs) == {(m, c) for m in modes for c in (1, 8)}

        def tau(mode: str, conc: int, lang: str) -> float:
            value: float = runs[mode, conc]["languages"][lang]["accept_length"]
            return value

        for (mode, conc), row in runs.items():
            assert row["plugin_active"] == mode.startswith("plugin"), (mode, conc)
            assert row["output_tokens"] > 12 * 16
            if mode == "none":
                continue
            assert row["differs_from_none"] == 0, (mode, conc)  # lossless in every mode
            assert row["speedup"] > 0
            acc = row["all"]
            hist = acc["histogram"]
            # SGLang's histogram counts accepted drafts per verify (bonus excluded): each
            # verify commits j + 1 tokens. Per request, the output is that sum, plus at
            # most the prefill's token, less at most K cut at EOS or max_new_tokens.
            assert sum(hist) == acc["verify_steps"]
            committed = sum((j + 1) * c for j, c in enumerate(hist))
            assert acc["output_tokens"] - 12 <= committed <= acc["output_tokens"] + 3 * 12
        for lang in ("en", "zh"):
            assert tau("full", 1, lang) >= 3.8
            assert tau("plugin", 1, lang) >= 3.8, runs["plugin", 1]["languages"]
            position = runs["plugin", 1]["languages"][lang]["position_acceptance"]
            assert min(position) >= 0.9, position
        assert tau("static", 1, "en") >= 3.8
        assert tau("static", 1, "zh") <= 1.2  # the static en map loses every zh draft
        # mixed batches of 8: the union keeps both languages at their batch-1 acceptance;
        # one language per batch (plugin-k, K_u = K) loses the minority's drafts
        for lang in ("en", "zh"):
            assert tau("plugin", 8, lang) >= 0.95 * tau("plugin", 1, lang), runs["plugin", 8]
        # the union map (2K rows, stock SGLang) holds both languages like the plugin's union
        for lang in ("en", "zh"):
            for conc in (1, 8):
                assert tau("static-union", conc, lang) >= 0.95 * tau("plugin", 1, lang), lang
        overall = {m: runs[m, 8]["all"]["accept_length"] for m in ("plugin", "plugin-k", "static")}
        assert overall["plugin-k"] < 0.9 * overall["plugin"], overall
        assert overall["plugin-k"] > overall["static"], overall
