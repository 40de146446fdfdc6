"""The SGLang CPU lane's fixtures and helpers, shared by the TP 1 and TP 2 lane tests:
the oracle / random / noisy targets and their drafts, reference outputs without
speculation, and the request helpers (parity, per-language tau, traffic shapes)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fastmtp_export.checkpoints.oracle import (
    EN,
    EOS,
    VOCAB,
    ZH,
    chain_permutation,
    greedy_chain,
    write_char_tokenizer,
    write_target,
)
from fastmtp_export.maps.token_map import save_token_map
from fastmtp_export.maps.union import union_hot_ids

from ..conftest import export_cli
from ..sglang_lane.server import (
    CHAIN_FLAGS,
    Server,
    sglang_import_problem,
    sglang_server,
)

Case = tuple[tuple[int, ...], int]  # (prompt ids, max_new_tokens)


@dataclass(frozen=True)
class Lane:
    root: Path
    oracle: Path
    oracle_draft: Path
    random: Path
    random_draft: Path
    noisy: Path
    noisy_draft: Path
    overlap_draft: Path
    perm: list[int]


@pytest.fixture(scope="session")
def lane(tmp_path_factory: pytest.TempPathFactory) -> Lane:
    problem = sglang_import_problem()
    if problem is not None:
        pytest.fail(
            f"the SGLang CPU lane cannot import SGLang 0.5.23 ({problem}); `make test` "
            "installs it (see docs/testing.md)"
        )
    root = tmp_path_factory.mktemp("lane")
    oracle = write_target(root / "oracle", oracle=True)
    # its own directory: next to a qwen2 config.json, transformers would rebuild it as a
    # byte-level Qwen2Tokenizer and ignore the fixture's pre-tokenizer
    (root / "oracle-tokenizer").mkdir()
    write_char_tokenizer(root / "oracle-tokenizer")
    save_token_map(root / "en.pt", EN)
    save_token_map(root / "zh.pt", [*ZH, EOS])
    # the union of both maps at 2K rows: stock SGLang's answer to mixed traffic
    union = union_hot_ids(
        {"en": EN, "zh": [*ZH, EOS]}, {"en": 0.5, "zh": 0.5}, 2 * len(EN), required=[EOS],
        vocab_size=VOCAB,
    )  # fmt: skip
    save_token_map(root / "union.pt", union)
    maps = ["--token-map", f"en={root / 'en.pt'}", "--token-map", f"zh={root / 'zh.pt'}"]
    oracle_draft = export_cli(
        oracle, root / "oracle-draft", *maps, "--token-map", f"union={root / 'union.pt'}",
        "--default-lang", "en",
    )  # fmt: skip
    rnd = write_target(root / "random", oracle=False, seed=1)
    random_draft = export_cli(rnd, root / "random-draft")
    # the oracle with full-strength residual blocks: its copy draft is right about half
    # the time, so acceptance is partial (the eval cross-check's discriminating case)
    noisy = write_target(root / "noisy", oracle=True, residual=2.0)
    noisy_draft = export_cli(noisy, root / "noisy-draft")
    # maps that overlap, as real ones do: each language's own ids, then 32 of the other's
    save_token_map(root / "en-overlap.pt", [*EN, *ZH[:32]])
    save_token_map(root / "zh-overlap.pt", [*ZH, EOS, *EN[1:33]])
    overlap_draft = export_cli(
        oracle, root / "overlap-draft", "--token-map", f"en={root / 'en-overlap.pt'}",
        "--token-map", f"zh={root / 'zh-overlap.pt'}", "--default-lang", "en",
    )  # fmt: skip
    return Lane(
        root, oracle, oracle_draft, rnd, random_draft, noisy, noisy_draft, overlap_draft,
        chain_permutation(0),
    )  # fmt: skip


def _oracle_cases(perm: list[int]) -> list[Case]:
    rng = random.Random(3)
    cases: list[Case] = []
    for ids in (EN[1:], ZH):
        for plen, n in ((1, 32), (4, 32), (9, 17), (20, 5), (3, 2), (6, 1)):
            cases.append((tuple(rng.sample(ids, plen)), n))
    pred = {b: a for a, b in enumerate(perm)}
    for k in range(1, 8):  # EOS after k tokens: inside and at the edges of the draft window
        t = EOS
        for _ in range(k):
            t = pred[t]
        cases.append(((rng.choice(EN[1:]), t), 16))
    return cases


def _random_cases() -> list[Case]:
    rng = random.Random(5)
    return [
        (tuple(rng.randrange(1, 256) for _ in range(plen)), n)
        for plen, n in ((1, 24), (5, 24), (12, 9), (30, 16), (7, 3), (2, 1), (16, 20), (3, 12))
    ]


def _run(server: Server, cases: list[Case]) -> dict[Case, dict[str, Any]]:
    return {case: server.generate(list(case[0]), case[1]) for case in cases}


def _concurrently(
    server: Server,
    cases: list[Case],
    params: Callable[[Case], dict[str, Any]] = lambda _case: {},
    workers: int | None = None,
) -> dict[Case, dict[str, Any]]:
    """Every case as its own request, ``workers`` in flight (default: all at once).

    ``params`` adds sampling params per case. Every case sent must come back: a missing
    result fails, not only a wrong one. Cases must be distinct (results are keyed by
    case, so a repeated one would be sent twice and counted once).
    """
    assert len(set(cases)) == len(cases), "repeated cases: each must be sent exactly once"
    with ThreadPoolExecutor(max_workers=workers or len(cases)) as pool:
        futures = {
            case: pool.submit(server.generate, list(case[0]), case[1], **params(case))
            for case in cases
        }
        done, pending = wait(futures.values(), timeout=300)
    errors = [f.exception() for f in done if f.exception() is not None]
    assert not errors, errors
    results = {case: f.result() for case, f in futures.items() if f in done}
    missing = [c for c in cases if c not in results]
    assert not missing, f"{len(missing)} of {len(cases)} requests got no result: {missing[:3]}"
    return results


def _reference(lane: Lane, model: Path, cases: list[Case]) -> dict[Case, dict[str, Any]]:
    with sglang_server(model, lane.root / "logs") as server:
        return _run(server, cases)


@pytest.fixture(scope="session")
def oracle_plain(lane: Lane) -> dict[Case, dict[str, Any]]:
    """Greedy outputs of the oracle target without speculation."""
    return _reference(lane, lane.oracle, _oracle_cases(lane.perm))


@pytest.fixture(scope="session")
def random_plain(lane: Lane) -> dict[Case, dict[str, Any]]:
    return _reference(lane, lane.random, _random_cases())


#: stock SGLang behaviour: our own sglang_patch plugin (installed with the package) off
STOCK = {"FASTMTP_SGLANG_PATCH": "0"}


def _spec(
    lane: Lane,
    model: Path,
    draft: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    tokenizer: bool = False,
) -> Iterator[Server]:
    with sglang_server(
        model, lane.root / "logs", *CHAIN_FLAGS, "--speculative-draft-model-path", str(draft),
        *extra, env=STOCK if env is None else env, tokenizer=tokenizer,
    ) as server:  # fmt: skip
        yield server


def _refused_log(workdir: Path, model: Path, *flags: str, env: dict[str, str]) -> str:
    """Launch a server that must refuse to start; its whole log."""
    with (
        pytest.raises(RuntimeError, match="sglang exited with"),
        sglang_server(model, workdir, *flags, env=env),
    ):
        pass
    return "\n".join(p.read_text(errors="replace") for p in workdir.glob("server-*.log"))


def _refused(workdir: Path, model: Path, *flags: str, env: dict[str, str]) -> list[str]:
    """Launch a server that must refuse to start; the plugin's log lines naming why."""
    log = _refused_log(workdir, model, *flags, env=env)
    return [line for line in log.splitlines() if line.startswith("RuntimeError: fastmtp")]


def _assert_parity(got: dict[Case, dict[str, Any]], want: dict[Case, dict[str, Any]]) -> None:
    for case, doc in got.items():
        assert doc["output_ids"] == want[case]["output_ids"], case
        reason = doc["meta_info"]["finish_reason"]["type"]
        assert reason == want[case]["meta_info"]["finish_reason"]["type"], case


def _full_length(plain: dict[Case, dict[str, Any]], n: int) -> list[Case]:
    """Cases of ``max_new_tokens == n`` whose greedy output did not stop at EOS."""
    return [c for c, d in plain.items() if c[1] == n and len(d["output_ids"]) == n]


def _sglang_tau(docs: list[dict[str, Any]]) -> float:
    """SGLang's spec_accept_length over several requests: sum(completion) / sum(verify)."""
    tokens = sum(d["meta_info"]["completion_tokens"] for d in docs)
    return tokens / sum(d["meta_info"]["spec_verify_ct"] for d in docs)


def _lang_of(case: Case) -> str:
    return "en" if case[0][0] in EN else "zh"


def _with_lang(case: Case) -> dict[str, Any]:
    return {"custom_params": {"draft_lang": _lang_of(case)}}


def _metric_values(server: Server) -> dict[str, float]:
    status, body = server.get("/metrics")
    assert status == 200
    values: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("fastmtp:"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def _mixed_cases(perm: list[int]) -> list[Case]:
    """16 English and 16 Chinese prompts, interleaved, each running the full 32 tokens."""
    rng = random.Random(17)
    by_lang: list[list[Case]] = [[], []]
    for cases, ids in zip(by_lang, (EN[1:], ZH), strict=True):
        while len(cases) < 16:
            prompt = tuple(rng.sample(ids, rng.randint(2, 8)))
            chain = greedy_chain(prompt[-1], 32, perm)
            if len(chain) == 32 and EOS not in chain and (prompt, 32) not in cases:
                cases.append((prompt, 32))
    return [c for pair in zip(*by_lang, strict=True) for c in pair]


@pytest.fixture(scope="session")
def mixed_plain(lane: Lane) -> dict[Case, dict[str, Any]]:
    """Non-speculative greedy outputs of the mixed-traffic cases."""
    return _reference(lane, lane.oracle, _mixed_cases(lane.perm))


def _tau_per_lang(docs: dict[Case, dict[str, Any]]) -> dict[str, float]:
    return {
        lang: _sglang_tau([d for c, d in docs.items() if _lang_of(c) == lang])
        for lang in ("en", "zh")
    }


def _traffic(server: Server, cases: list[Case]) -> dict[str, dict[Case, dict[str, Any]]]:
    """Batch 1 one language at a time (the reference), batch 1 alternating, 8 and 32 in flight."""
    return {
        "batch 1 alone": {
            c: server.generate(list(c[0]), c[1], **_with_lang(c))
            for c in sorted(cases, key=_lang_of)
        },
        "batch 1 alternating": {
            c: server.generate(list(c[0]), c[1], **_with_lang(c)) for c in cases
        },
        "concurrency 8": _concurrently(server, cases, _with_lang, workers=8),
        "concurrency 32": _concurrently(server, cases, _with_lang),
    }


def _assert_traffic_keeps_batch1(server: Server, plain: dict[Case, dict[str, Any]]) -> None:
    """Every traffic shape of :func:`_traffic`: parity, and each language at >= 95 % of
    its tau when requests run one language at a time (itself >= 3.8 on the oracle)."""
    runs = _traffic(server, list(plain))
    alone = _tau_per_lang(runs["batch 1 alone"])
    assert min(alone.values()) >= 3.8, alone  # the oracle accepts nearly every draft
    for name, docs in runs.items():
        _assert_parity(docs, plain)
        tau = _tau_per_lang(docs)
        for lang in ("en", "zh"):
            assert tau[lang] >= 0.95 * alone[lang], (name, lang, tau, alone)
