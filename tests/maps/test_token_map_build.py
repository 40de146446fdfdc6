"""token-map build with a real byte-level BPE tokenizer on multilingual corpora.

Expected values come from an independent oracle: one-at-a-time ``Tokenizer.encode``
plus ``collections.Counter`` and plain sorting, not from the builder's own counters.
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections import Counter
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from typer.testing import CliRunner

from fastmtp_export.cli import app
from fastmtp_export.errors import CorpusError
from fastmtp_export.maps.builder import build_token_maps
from fastmtp_export.maps.corpus import CorpusFile
from fastmtp_export.maps.synthetic_corpus import records, write_jsonl
from fastmtp_export.maps.tokenizer import load_tokenizer

from ..conftest import BPE_MODEL_VOCAB, assert_one_line_error, nothing_written, tree_digest


def _build(runner: CliRunner, *args: str) -> tuple[dict, str]:
    r = runner.invoke(app, ["token-map", "build", *args, "--json", "-q"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), r.stderr


def _oracle(tokenizer: Path, corpus: Path, holdout: float = 0.05) -> tuple[Counter, Counter, int]:
    """(counted, held-out) token counters and held-out records: a line is held out iff
    its crc32 (newline included) lies in the first ``holdout`` share of the hash range."""
    tok = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    counted: Counter = Counter()
    held: Counter = Counter()
    n_held = 0
    for line in corpus.read_bytes().splitlines(keepends=True):
        ids = tok.encode(json.loads(line)["text"], add_special_tokens=False).ids
        is_held = zlib.crc32(line) / 2**32 < holdout
        n_held += is_held
        (held if is_held else counted).update(ids)
    return counted, held, n_held


def _eos(tokenizer: Path) -> list[int]:
    tok = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    ids = [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]
    assert None not in ids
    return [i for i in ids if i is not None]


def test_maps_match_an_independent_count(
    runner: CliRunner, tmp_path: Path, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    out = tmp_path / "maps"
    k = 128  # below every language's distinct-token count: no padding involved
    summary, _ = _build(
        runner, *map(str, corpora.values()), "--tokenizer", str(bpe_tokenizer), "--out", str(out),
        "--size", str(k),
    )  # fmt: skip
    eos = _eos(bpe_tokenizer)
    for lang, corpus in corpora.items():
        counted, held, n_held = _oracle(bpe_tokenizer, corpus)
        ranked = [t for t, _c in sorted(counted.items(), key=lambda tc: (-tc[1], tc[0]))]
        expected = ranked[: k - len(eos)] + eos  # EOS never occurs in plain text: appended
        # what stock SGLang does with --speculative-token-map
        hot = torch.tensor(torch.load(out / f"freq_{lang}_{k}.pt", weights_only=True))
        assert hot.dtype == torch.int64
        assert hot.tolist() == expected
        entry = summary["languages"][lang]
        assert entry["tokens"] == sum(counted.values())
        assert entry["distinct_tokens"] == len(counted)
        assert entry["heldout_records"] == n_held
        assert 5 <= n_held <= 40  # about 5% of 400
        assert entry["heldout_tokens"] == sum(held.values())
        own = sum(held[t] for t in expected) / sum(held.values())
        assert summary["coverage"][str(k)][lang][lang] == pytest.approx(own, abs=1e-6)
        assert entry["coverage"] == pytest.approx(own, abs=1e-6)
    assert summary["eos_ids"] == eos
    assert summary["vocab_size"] == BPE_MODEL_VOCAB
    assert summary["default_lang"] == max(
        summary["languages"], key=lambda x: summary["languages"][x]["tokens"]
    )


def test_coverage_matrix_diagonal_dominates(
    runner: CliRunner, tmp_path: Path, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    summary, _ = _build(
        runner, *map(str, corpora.values()), "--tokenizer", str(bpe_tokenizer),
        "--out", str(tmp_path / "maps"), "--size", "128", "--sizes", "64,256,1024",
    )  # fmt: skip
    assert sorted(summary["coverage"]) == ["1024", "128", "256", "64"]
    cov = summary["coverage"]["128"]
    for text in corpora:
        for m in corpora:
            if m != text:
                assert cov[text][text] > cov[text][m] + 0.3, (text, m, cov)
    # Latin text on the Chinese map: only shared bytes/punctuation survive
    assert cov["en"]["zh"] < 0.2
    for lang in corpora:  # a bigger map never covers less
        own = [summary["coverage"][k][lang][lang] for k in ("64", "128", "256", "1024")]
        assert own == sorted(own)


def test_build_is_byte_identical_across_runs(
    runner: CliRunner, tmp_path: Path, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    args = [*map(str, corpora.values()), "--tokenizer", str(bpe_tokenizer), "--size", "300"]
    _build(runner, *args, "--out", str(tmp_path / "a"))
    _build(runner, *args, "--out", str(tmp_path / "b"), "--batch-size", "7")
    a, b = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert a == b
    assert sorted(a) == ["freq_en_300.pt", "freq_ru_300.pt", "freq_zh_300.pt", "token_maps.json"]


def test_short_language_is_padded_from_the_all_language_ranking(
    runner: CliRunner, tmp_path: Path, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    few = write_jsonl(tmp_path / "few.jsonl", [{"text": "the model", "lang": "de"}] * 3)
    summary, _ = _build(
        runner, str(corpora["en"]), str(few), "--tokenizer", str(bpe_tokenizer),
        "--out", str(tmp_path / "maps"), "--size", "64", "--holdout", "0",
    )  # fmt: skip
    de = torch.load(tmp_path / "maps" / "freq_de_64.pt", weights_only=True)
    tok = Tokenizer.from_file(str(bpe_tokenizer / "tokenizer.json"))
    own = tok.encode("the model", add_special_tokens=False).ids  # 2 distinct tokens
    eos = _eos(bpe_tokenizer)
    assert len(de) == 64 == len(set(de))
    assert de[: len(own)] == sorted(own)  # equal counts: ties broken by id
    assert de[len(own) : len(own) + 2] == eos
    # the rest: the all-language ranking (en dominates it), skipping ids already taken
    counted, _, _ = _oracle(bpe_tokenizer, corpora["en"], holdout=0)
    counted.update(own * 3)
    overall = [t for t, _c in sorted(counted.items(), key=lambda tc: (-tc[1], tc[0]))]
    assert de[len(own) + 2 :] == [t for t in overall if t not in own + eos][: 64 - len(own) - 2]
    assert summary["languages"]["de"]["padded"] == 64 - len(own) - 2
    assert summary["languages"]["de"]["coverage"] is None  # nothing held out


def test_chat_records_count_only_assistant_turns(
    runner: CliRunner, tmp_path: Path, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    rows = [json.loads(line) for line in corpora["en"].read_text().splitlines()]
    chat: list[dict[str, object]] = [
        {
            "lang": "en",
            "messages": [
                {"role": "system", "content": "Вы помощник."},
                {"role": "user", "content": "今天天气很好"},
                {"role": "assistant", "content": [{"type": "text", "text": r["text"]}]},
            ],
        }
        for r in rows
    ]
    chat_file = write_jsonl(tmp_path / "chat.jsonl", chat)
    # no holdout: it hashes the raw line, which differs between the two forms
    common = ["--tokenizer", str(bpe_tokenizer), "--size", "200", "--holdout", "0"]
    _build(runner, str(corpora["en"]), *common, "--out", str(tmp_path / "text"))
    _build(runner, str(chat_file), *common, "--out", str(tmp_path / "chat"))
    assert (tmp_path / "text" / "freq_en_200.pt").read_bytes() == (
        tmp_path / "chat" / "freq_en_200.pt"
    ).read_bytes()


def test_detect_and_file_language_agree_with_labels(
    runner: CliRunner, tmp_path: Path, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    unlabelled = tmp_path / "mixed.jsonl"
    lines = []
    for en, zh in zip(
        corpora["en"].read_text().splitlines(), corpora["zh"].read_text().splitlines(), strict=True
    ):
        lines += [json.dumps({"text": json.loads(x)["text"]}) for x in (en, zh)]
    unlabelled.write_text("\n".join(lines) + "\n")
    common = ["--tokenizer", str(bpe_tokenizer), "--size", "150", "--holdout", "0"]
    _build(runner, str(corpora["en"]), str(corpora["zh"]), *common, "--out", str(tmp_path / "a"))
    _build(runner, str(unlabelled), "--detect", *common, "--out", str(tmp_path / "b"))
    strip = tmp_path / "nolang.jsonl"  # same texts, language from the file argument
    strip.write_text(
        "".join(
            json.dumps({"text": json.loads(x)["text"]}) + "\n"
            for x in corpora["zh"].read_text().splitlines()
        )
    )
    _build(runner, str(corpora["en"]), f"zh={strip}", *common, "--out", str(tmp_path / "c"))
    for name in ("freq_en_150.pt", "freq_zh_150.pt"):
        data = (tmp_path / "a" / name).read_bytes()
        assert (tmp_path / "b" / name).read_bytes() == data
        assert (tmp_path / "c" / name).read_bytes() == data


def test_cli_prints_the_coverage_table(
    runner: CliRunner, tmp_path: Path, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    r = runner.invoke(
        app,
        ["token-map", "build", str(corpora["en"]), str(corpora["zh"]), "--tokenizer",
         str(bpe_tokenizer), "--out", str(tmp_path / "m"), "--size", "128", "--sizes", "64"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "coverage of held-out tokens at K=128" in r.stdout
    assert "own-map coverage by K" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == str((tmp_path / "m").absolute())
    assert "counted 800 records in 2 languages" in r.stderr  # logs go to stderr


# --- bad input: one line naming the file and line, exit 1, nothing written ---------------


def _fail(runner: CliRunner, tmp_path: Path, *args: str) -> tuple[Path, object]:
    out = tmp_path / "maps"
    r = runner.invoke(app, ["token-map", "build", *args, "--out", str(out), "--size", "16"])
    return out, r


def test_malformed_line_fails_or_is_skipped(
    runner: CliRunner, tmp_path: Path, bpe_tokenizer: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "the model", "lang": "en"}\n\n{"text": "the", "lang"\n')
    out, r = _fail(runner, tmp_path, str(bad), "--tokenizer", str(bpe_tokenizer))
    assert_one_line_error(r, f"{bad}:3", "not valid JSON", "--skip-bad-records")  # type: ignore[arg-type]
    nothing_written(out)
    summary, stderr = _build(
        runner, str(bad), "--tokenizer", str(bpe_tokenizer), "--out", str(out), "--size", "8",
        "--skip-bad-records",
    )  # fmt: skip
    assert summary["skipped_bad_records"] == 1
    warning = [line for line in stderr.splitlines() if "skipped 1 bad records" in line]
    assert len(warning) == 1, stderr
    assert f"{bad}:3" in warning[0]  # the log names the skipped line


@pytest.mark.parametrize(
    ("record", "needles"),
    [
        ({"lang": "en"}, ["has no text"]),
        ({"text": "", "lang": "en"}, ["has no text"]),
        ({"messages": [{"role": "user", "content": "hi"}], "lang": "en"}, ["has no text"]),
        ({"text": "hello"}, ["no 'lang' field", "--detect"]),
        ({"text": "hello", "lang": "english!"}, ["unusable language label"]),
        ({"text": "hello", "lang": "fr"}, ["'fr', not in --languages en,zh"]),
    ],
    ids=["no-text", "empty-text", "no-assistant", "no-lang", "bad-label", "not-allowed"],
)
def test_bad_record(
    runner: CliRunner, tmp_path: Path, bpe_tokenizer: Path, record: dict, needles: list[str]
) -> None:
    f = write_jsonl(tmp_path / "c.jsonl", [{"text": "ok", "lang": "en"}, record])
    out, r = _fail(
        runner, tmp_path, str(f), "--tokenizer", str(bpe_tokenizer), "--languages", "en,zh"
    )
    assert_one_line_error(r, f"{f}:2", *needles)  # type: ignore[arg-type]
    nothing_written(out)


@pytest.mark.parametrize("kind", ["empty-dir", "garbage-json", "missing"])
def test_not_a_tokenizer(
    runner: CliRunner, tmp_path: Path, corpora: dict[str, Path], kind: str
) -> None:
    tok = tmp_path / "tok"
    if kind != "missing":
        tok.mkdir()
    if kind == "garbage-json":
        (tok / "tokenizer.json").write_text('{"version": "1.0", "model": 42}')
    out, r = _fail(runner, tmp_path, str(corpora["en"]), "--tokenizer", str(tok))
    assert_one_line_error(r, str(tok), "tokenizer")  # type: ignore[arg-type]
    nothing_written(out)


def test_tokenizer_without_eos_asks_for_one(
    runner: CliRunner, tmp_path: Path, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_bytes((bpe_tokenizer / "tokenizer.json").read_bytes())
    out, r = _fail(runner, tmp_path, str(corpora["en"]), "--tokenizer", str(tok))
    assert_one_line_error(r, "no EOS token", "--eos")  # type: ignore[arg-type]
    summary, _ = _build(
        runner, str(corpora["en"]), "--tokenizer", str(tok), "--eos", "<|im_end|>",
        "--out", str(out), "--size", "16",
    )  # fmt: skip
    assert summary["eos_ids"] == _eos(bpe_tokenizer)[:1]


def test_out_inside_corpus_dir_is_refused(
    runner: CliRunner, tmp_path: Path, bpe_tokenizer: Path
) -> None:
    data = tmp_path / "data"
    f = write_jsonl(data / "en.jsonl", records("en", 5))
    before = tree_digest(data)
    r = runner.invoke(
        app,
        ["token-map", "build", str(f), "--tokenizer", str(bpe_tokenizer), "--out", str(data),
         "--overwrite", "--size", "16"],
    )  # fmt: skip
    assert_one_line_error(r, "overlaps the input")
    assert tree_digest(data) == before


def test_worker_processes_give_identical_maps(
    tmp_path: Path, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    """Spawned workers over 4 KiB chunks == one process over whole files, byte for byte."""
    tok = load_tokenizer(bpe_tokenizer)
    files = [CorpusFile(p) for p in corpora.values()]
    build_token_maps(files, tok, tmp_path / "one", size=100, sizes=[50], workers=1)
    build_token_maps(
        files, tok, tmp_path / "many", size=100, sizes=[50], workers=2, chunk_bytes=4096
    )
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "many")


def test_worker_errors_name_the_line(tmp_path: Path, bpe_tokenizer: Path) -> None:
    lines = [json.dumps(r, ensure_ascii=False) for r in records("en", 300)]
    lines[250] = "{oops"
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=r"c\.jsonl:251 is not valid JSON"):
        build_token_maps(
            [CorpusFile(f)], load_tokenizer(bpe_tokenizer), tmp_path / "m", size=16,
            workers=2, chunk_bytes=8192,
        )  # fmt: skip
    nothing_written(tmp_path / "m")


def test_size_beyond_the_vocab_fails_before_counting(
    runner: CliRunner, tmp_path: Path, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    out = tmp_path / "maps"
    r = runner.invoke(
        app,
        ["token-map", "build", str(corpora["en"]), "--tokenizer", str(bpe_tokenizer),
         "--out", str(out), "--sizes", "999999"],
    )  # fmt: skip
    assert_one_line_error(r, "map size 32768", "vocab size 2048")
    assert "counted" not in r.stderr
    nothing_written(out)


def test_progress_goes_to_stderr(
    tmp_path: Path,
    bpe_tokenizer: Path,
    corpora: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    build_token_maps(
        [CorpusFile(corpora["en"])], load_tokenizer(bpe_tokenizer), tmp_path / "m", size=16,
        progress=True,
    )  # fmt: skip
    captured = capsys.readouterr()
    assert "counting" in captured.err
    assert "100%" in captured.err
    assert captured.out == ""


def test_a_multimodal_config_gives_its_text_vocab_and_eos(
    runner: CliRunner, tmp_path: Path, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    """Qwen3.5-style releases keep vocab_size and eos_token_id under text_config."""
    tok = tmp_path / "qwen3_5"
    shutil.copytree(bpe_tokenizer, tok)
    flat = json.loads((tok / "config.json").read_text())
    flat["eos_token_id"] = json.loads((tok / "generation_config.json").read_text())["eos_token_id"]
    (tok / "config.json").write_text(
        json.dumps({"architectures": ["Qwen3_5ForConditionalGeneration"], "text_config": flat})
    )
    (tok / "generation_config.json").unlink()
    summary, _ = _build(
        runner, str(corpora["en"]), "--tokenizer", str(tok), "--out", str(tmp_path / "m"),
        "--size", "128",
    )  # fmt: skip
    assert summary["vocab_size"] == BPE_MODEL_VOCAB
    assert summary["eos_ids"] == _eos(bpe_tokenizer)
