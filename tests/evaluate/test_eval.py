"""``fastmtp-export eval`` and the reference chain speculative decoder behind it.

Fixtures come from fastmtp_export/checkpoints/oracle.py (no SGLang needed): the oracle target
follows a known token chain, so expected outputs are computed independently of the
code under test (``greedy_chain``); the noisy target (residual blocks at full strength)
strays from the chain, so its copy draft is only partly right and every verify path
(accept all, some, none) runs.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from fastmtp_export.artifact import manifest as mf
from fastmtp_export.artifact.eval_record import EvaluationInfo
from fastmtp_export.checkpoints.oracle import (
    EN,
    EOS,
    ZH,
    chain_permutation,
    greedy_chain,
    text_of,
    write_char_tokenizer,
    write_target,
)
from fastmtp_export.cli import app
from fastmtp_export.evaluate.reference import DraftHead, artifact_head
from fastmtp_export.evaluate.speculate import Draft, Target, greedy, speculate
from fastmtp_export.evaluate.target import check_pair, load_target_model
from fastmtp_export.maps.eos import read_json
from fastmtp_export.maps.token_map import save_token_map
from fastmtp_export.maps.union import union_hot_ids

from ..conftest import assert_one_line_error, export_cli, tree_digest

NOISY_RESIDUAL = 2.0  # tau about 2.3 on random prompts: accepts all, some or none


@dataclass(frozen=True)
class Pair:
    target: Path
    draft: Path
    tokenizer: Path


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    root = tmp_path_factory.mktemp("eval-oracle")
    target = write_target(root / "target", oracle=True)
    (root / "tok").mkdir()
    write_char_tokenizer(root / "tok")
    save_token_map(root / "en.pt", EN)
    save_token_map(root / "zh.pt", [*ZH, EOS])
    save_token_map(root / "union.pt", _union(256))  # 2K rows: both maps
    maps = ["--token-map", f"en={root / 'en.pt'}", "--token-map", f"zh={root / 'zh.pt'}"]
    draft = export_cli(
        target, root / "draft", *maps, "--token-map", f"union={root / 'union.pt'}",
        "--default-lang", "en",
    )  # fmt: skip
    return Pair(target, draft, root / "tok")


def _union(rows: int) -> list[int]:
    """The oracle maps' union at ``rows`` ids, equal weights."""
    maps = {"en": EN, "zh": [*ZH, EOS]}
    return union_hot_ids(maps, {"en": 0.5, "zh": 0.5}, rows, required=[EOS], vocab_size=256)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory, oracle: Pair) -> Pair:
    root = tmp_path_factory.mktemp("eval-noisy")
    target = write_target(root / "target", oracle=True, residual=NOISY_RESIDUAL)
    return Pair(target, export_cli(target, root / "draft"), oracle.tokenizer)


def _decoder(pair: Pair) -> tuple[Target, DraftHead]:
    manifest = mf.load(pair.draft)
    info = check_pair(pair.target, pair.draft, manifest)
    model = load_target_model(
        info.path, info.config, manifest.family, torch.device("cpu"), torch.float32
    )
    return Target(model), artifact_head(model, pair.draft)


def _chain_prompts(n_new: int, seed: int = 3) -> list[tuple[str, list[int]]]:
    """(lang, prompt) whose oracle continuation runs ``n_new`` tokens without EOS.

    At least 2 tokens: MiMoMTP zeroes the token embedding at position 0, so after a
    1-token prompt the copy draft's first proposal is wrong (in SGLang too).
    """
    perm, rng = chain_permutation(0), random.Random(seed)
    out: list[tuple[str, list[int]]] = []
    for lang, ids in (("en", EN[1:]), ("zh", ZH)):
        while len([lg for lg, _ in out if lg == lang]) < 3:
            prompt = rng.sample(ids, rng.randrange(2, 6))
            if EOS not in greedy_chain(prompt[-1], n_new, perm):
                out.append((lang, prompt))
    return out


def _write_prompts(path: Path, prompts: list[tuple[str, list[int]]]) -> Path:
    """Every record form: plain text (detected), chat messages (detected), ids with lang."""
    with path.open("w", encoding="utf-8") as fh:
        for i, (lang, ids) in enumerate(prompts):
            forms: list[dict[str, Any]] = [
                {"prompt": text_of(ids)},
                {"messages": [{"role": "user", "content": text_of(ids)}]},
                {"input_ids": ids, "lang": lang},
            ]
            form = forms[i % 3]
            fh.write(json.dumps(form, ensure_ascii=False) + "\n")
    return path


def _eval(pair: Pair, prompts: Path, *args: str) -> Any:
    return CliRunner().invoke(
        app,
        ["eval", str(pair.draft), "--base", str(pair.target), "--tokenizer", str(pair.tokenizer),
         "--prompts", str(prompts), *args],
    )  # fmt: skip


class TestOracle:
    def test_tau_is_k_plus_one_and_a_wrong_static_map_collapses(
        self, oracle: Pair, tmp_path: Path
    ) -> None:
        prompts = _write_prompts(tmp_path / "p.jsonl", _chain_prompts(32))
        out = tmp_path / "res" / "eval.json"
        out.parent.mkdir()
        r = _eval(
            oracle, prompts, "--vocab", "full", "--vocab", "auto", "--vocab", "en",
            "--max-new-tokens", "32", "--output", str(out), "--json",
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        info = EvaluationInfo.model_validate(doc)
        assert info.lossless
        assert info.mismatches == []
        assert info.prompts == 6
        assert info.k == 3
        for mode in ("full", "auto"):
            for lang in ("en", "zh"):
                st = info.modes[mode].languages[lang]
                assert st.accept_length == 4.0, (mode, lang, st)  # 32 tokens / 8 verifies
                assert st.position_acceptance == [1.0, 1.0, 1.0]
                assert st.histogram == [0, 0, 0, 24]
        static = info.modes["en"].languages
        assert static["en"].accept_length == 4.0
        assert static["zh"].accept_length is not None
        assert static["zh"].accept_length < 1.1
        assert static["zh"].position_acceptance[0] == 0.0
        # the file beside it is the same record, and the chart is a PNG
        assert EvaluationInfo.model_validate_json(out.read_text()) == info
        assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert info.prompts_sha256 == hashlib.sha256(prompts.read_bytes()).hexdigest()

    def test_union_keeps_both_languages_only_with_room_for_both(
        self, oracle: Pair, tmp_path: Path
    ) -> None:
        prompts = _write_prompts(tmp_path / "p.jsonl", _chain_prompts(32))
        r = _eval(oracle, prompts, "--vocab", "union", "--max-new-tokens", "32", "--json", "-q")
        assert r.exit_code == 0, r.output
        wide = EvaluationInfo.model_validate_json(r.stdout).modes["union"].languages
        assert {lang: st.accept_length for lang, st in wide.items()} == {"en": 4.0, "zh": 4.0}
        # the same union squeezed into K rows: half of each language's drafts miss it
        save_token_map(tmp_path / "narrow.pt", _union(128))
        narrow_draft = export_cli(
            oracle.target, tmp_path / "narrow", "--token-map",
            f"en={oracle.draft / 'freq_en_128.pt'}", "--token-map",
            f"zh={oracle.draft / 'freq_zh_128.pt'}", "--token-map",
            f"union={tmp_path / 'narrow.pt'}", "--default-lang", "en",
        )  # fmt: skip
        narrow = Pair(oracle.target, narrow_draft, oracle.tokenizer)
        r = _eval(narrow, prompts, "--vocab", "union", "--max-new-tokens", "32", "--json", "-q")
        assert r.exit_code == 0, r.output
        info = EvaluationInfo.model_validate_json(r.stdout)
        assert info.lossless
        for lang, st in info.modes["union"].languages.items():
            assert st.accept_length is not None
            assert st.accept_length < 3.0, (lang, st)

    def test_table_and_default_modes(self, oracle: Pair, tmp_path: Path) -> None:
        prompts = _write_prompts(tmp_path / "p.jsonl", _chain_prompts(16))
        r = _eval(oracle, prompts, "--max-new-tokens", "16", "-q")
        assert r.exit_code == 0, r.output
        lines = r.stdout.splitlines()
        assert lines[0].split()[:5] == ["vocab", "lang", "prompts", "tokens", "tau"]
        modes = {line.split()[0] for line in lines[1:] if line.split()}
        # the default: full, plus auto and union when the artifact ships maps and a union
        assert modes & {"full", "auto", "union", "en", "zh"} == {"full", "auto", "union"}
        # 6 prompts x 3 modes
        assert "lossless: all 18 speculative outputs equal greedy decoding" in r.stdout

    def test_eos_inside_the_draft_window(self, oracle: Pair) -> None:
        target, mtp = _decoder(oracle)
        perm = chain_permutation(0)
        pred = {b: a for a, b in enumerate(perm)}
        draft = Draft(mtp)
        for steps in range(1, 9):  # EOS after 1..8 tokens: every slot of a K=3 window
            t = EOS
            for _ in range(steps):
                t = pred[t]
            gen = speculate(target, draft, [7, t], 20, {EOS}, k=3)
            assert gen.output == greedy_chain(t, 20, perm), steps
            assert gen.finish == "stop"
            assert len(gen.output) == steps
        for n in range(1, 10):  # max_new_tokens reached mid-window
            gen = speculate(target, draft, [7, 9], n, {EOS}, k=3)
            assert gen.output == greedy_chain(9, n, perm)[:n]
            assert gen.finish == "length"

    def test_write_manifest_keeps_the_artifact_valid(
        self, oracle: Pair, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
    ) -> None:

        draft = tmp_path / "draft"
        shutil.copytree(oracle.draft, draft)
        before = tree_digest(draft)
        pair = Pair(oracle.target, draft, oracle.tokenizer)
        prompts = _write_prompts(tmp_path / "p.jsonl", _chain_prompts(8))
        r = _eval(pair, prompts, "--max-new-tokens", "8", "--write-manifest", "--json", "-q")
        assert r.exit_code == 0, r.output
        after = tree_digest(draft)
        assert {k for k in after if after[k] != before.get(k)} == {"fastmtp.json"}
        stored = mf.load(draft).evaluation
        assert stored == EvaluationInfo.model_validate(json.loads(r.stdout))
        assert stored.base_model == str(oracle.target.absolute())
        inspect = CliRunner().invoke(app, ["inspect", str(draft)])
        assert inspect.exit_code == 0, inspect.output


class TestLossless:
    def test_many_prompts_lengths_and_eos_positions(self, noisy: Pair) -> None:
        target, mtp = _decoder(noisy)
        draft = Draft(mtp)
        rng = random.Random(7)
        accepted: list[int] = []
        tokens = verifies = 0
        for case in range(24):
            prompt = [rng.randrange(1, 255) for _ in range(rng.randrange(1, 20))]
            free = greedy(target, prompt, 40, set()).output  # no EOS: pick some from it
            for k in (1, 2, 3, 5):
                for max_new, eos in ((40, set()), (rng.randrange(1, 12), set()),
                                     (40, {free[rng.randrange(len(free))]})):  # fmt: skip
                    want = greedy(target, prompt, max_new, eos)
                    got = speculate(target, draft, prompt, max_new, eos, k=k)
                    assert got.output == want.output, (case, k, max_new, eos)
                    assert got.finish == want.finish
                    if k == 3:
                        accepted += got.accepted
                        tokens += len(got.output)
                        verifies += got.verifies
        # the fixture must exercise full, partial and zero acceptance
        assert {0, 1, 2, 3} <= set(accepted)
        assert 1.5 < tokens / verifies < 3.5

    def test_no_prefix_reencoding(self, noisy: Pair) -> None:
        """Per round the target runs K+1 tokens, the draft K-1 + accepted + 1: never the prefix."""
        target, mtp = _decoder(noisy)
        runs: list[int] = []
        original = Target.run

        def counting(self: Target, ids: Any, start: int, cache: Any) -> Any:
            runs.append(len(ids))
            return original(self, ids, start, cache)

        Target.run = counting  # type: ignore[method-assign]
        try:
            prompt = list(range(1, 60))
            gen = speculate(target, Draft(mtp), prompt, 48, set(), k=3)
        finally:
            Target.run = original  # type: ignore[method-assign]
        assert runs[0] == len(prompt)
        assert runs[1:] == [4] * gen.verifies


class TestBadInput:
    def test_base_with_another_hidden_size_fails_before_loading(
        self, oracle: Pair, tmp_path: Path
    ) -> None:
        base = tmp_path / "base"
        base.mkdir()
        cfg = read_json(oracle.target / "config.json")
        (base / "config.json").write_text(json.dumps({**cfg, "hidden_size": 96}))
        prompts = _write_prompts(tmp_path / "p.jsonl", _chain_prompts(4))
        r = _eval(Pair(base, oracle.draft, oracle.tokenizer), prompts)
        assert_one_line_error(r, "hidden_size is 96", "--base")  # no weights: never loaded

    def test_base_with_another_vocab(self, oracle: Pair, tmp_path: Path) -> None:
        base = tmp_path / "base"
        base.mkdir()
        cfg = read_json(oracle.target / "config.json")
        (base / "config.json").write_text(json.dumps({**cfg, "vocab_size": 512}))
        r = _eval(Pair(base, oracle.draft, oracle.tokenizer), tmp_path / "missing.jsonl")
        assert_one_line_error(r, "does not exist")
        prompts = _write_prompts(tmp_path / "p.jsonl", _chain_prompts(4))
        r = _eval(Pair(base, oracle.draft, oracle.tokenizer), prompts)
        assert_one_line_error(r, "vocab_size is 512")

    @pytest.mark.parametrize(
        ("line", "needle"),
        [
            ("not json", "is not JSON"),
            ('["a list"]', "is not a JSON object"),
            ('{"text": "hi"}', "exactly one of 'prompt', 'messages', 'input_ids'"),
            ('{"prompt": ""}', "non-empty string"),
            ('{"input_ids": [1, -2]}', "list of token ids"),
            ('{"input_ids": [1, 999]}', "token id 999 >= the vocab size 256"),
            ('{"messages": [{"role": "user"}]}', "'messages' must be"),
            ('{"prompt": "abc", "lang": "??"}', "is not a language code"),
        ],
    )
    def test_bad_prompt_lines_name_the_line(
        self, oracle: Pair, tmp_path: Path, line: str, needle: str
    ) -> None:
        prompts = tmp_path / "p.jsonl"
        prompts.write_text('{"prompt": "abc", "lang": "en"}\n\n' + line + "\n")
        draft = Path(shutil.copytree(oracle.draft, tmp_path / "draft"))
        before = tree_digest(draft)
        out = tmp_path / "eval.json"
        r = _eval(Pair(oracle.target, draft, oracle.tokenizer), prompts, "--write-manifest",
                  "--output", str(out))  # fmt: skip
        assert_one_line_error(r, needle, f"{prompts}:3")
        assert tree_digest(draft) == before  # --write-manifest wrote nothing
        assert not out.exists()
        assert not out.with_suffix(".png").exists()

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (["--vocab", "fr"], "--vocab fr: choose full, auto, union or a language with a map"),
            (["--vocab", "xx!"], "--vocab xx!"),
            (["--k", "0"], "at least 1"),
        ],
    )
    def test_bad_options(self, oracle: Pair, tmp_path: Path, args: list[str], needle: str) -> None:
        prompts = _write_prompts(tmp_path / "p.jsonl", _chain_prompts(4))
        assert_one_line_error(_eval(oracle, prompts, *args), needle)

    def test_auto_needs_maps(self, noisy: Pair, tmp_path: Path) -> None:
        prompts = _write_prompts(tmp_path / "p.jsonl", _chain_prompts(4))
        assert_one_line_error(_eval(noisy, prompts, "--vocab", "auto"), "needs token maps")

    def test_invalid_artifact_is_refused(self, oracle: Pair, tmp_path: Path) -> None:

        draft = tmp_path / "draft"
        shutil.copytree(oracle.draft, draft)
        weights = next(draft.glob("*.safetensors"))
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        prompts = _write_prompts(tmp_path / "p.jsonl", _chain_prompts(4))
        r = _eval(Pair(oracle.target, draft, oracle.tokenizer), prompts)
        assert_one_line_error(r, "is invalid", "sha256")

    def test_a_lossy_decoder_fails_and_writes_no_manifest(
        self, oracle: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The losslessness check itself can fail: corrupt one speculative output."""

        import fastmtp_export.evaluate.speculate as spec

        draft = tmp_path / "draft"
        shutil.copytree(oracle.draft, draft)
        real = spec.speculate

        def lossy(*args: Any, **kwargs: Any) -> Any:
            gen = real(*args, **kwargs)
            gen.output[-1] = (gen.output[-1] + 1) % 256
            return gen

        monkeypatch.setattr(spec, "speculate", lossy)
        prompts = _write_prompts(tmp_path / "p.jsonl", _chain_prompts(8))
        r = _eval(Pair(oracle.target, draft, oracle.tokenizer), prompts, "--write-manifest",
                  "--max-new-tokens", "8", "--vocab", "full")  # fmt: skip
        assert r.exit_code == 1
        assert "NOT lossless: 6 of 6 outputs differ from greedy" in r.stdout
        assert r.stderr.strip().splitlines()[-1].startswith("error: 6 speculative outputs differ")
        assert mf.load(draft).evaluation is None


def test_output_without_matplotlib_fails_before_the_run(
    oracle: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    prompts = _write_prompts(tmp_path / "p.jsonl", _chain_prompts(4))
    out = tmp_path / "eval.json"
    r = _eval(oracle, prompts, "--output", str(out))
    assert_one_line_error(r, "needs matplotlib", "fastmtp-export[eval]")
    assert not out.exists()
