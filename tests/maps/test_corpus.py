"""Corpus chunking: every line read exactly once, errors name the true line, any split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastmtp_export.errors import CorpusError
from fastmtp_export.maps.corpus import (
    CorpusFile,
    CorpusStats,
    ReadOptions,
    plan_chunks,
    read_chunk,
    record_text,
)


def _lines(n: int) -> list[str]:
    return [json.dumps({"text": f"sample {i} " + "x" * (i % 7), "lang": "en"}) for i in range(n)]


@pytest.mark.parametrize("chunk_bytes", [1, 2, 7, 33, 64, 100, 10**6])
def test_chunks_partition_the_lines(tmp_path: Path, chunk_bytes: int) -> None:
    f = tmp_path / "c.jsonl"
    lines = _lines(23)
    f.write_text("\n".join(lines) + "\n\n")  # trailing blank line
    stats = CorpusStats()
    got = [
        text
        for chunk in plan_chunks([CorpusFile(f)], chunk_bytes)
        for _lang, text, _crc in read_chunk(chunk, ReadOptions(), stats)
    ]
    assert got == [json.loads(line)["text"] for line in lines]
    assert stats.records == 23
    assert stats.bytes_read == f.stat().st_size


@pytest.mark.parametrize("chunk_bytes", [1, 5, 40, 41, 42, 97, 10**6])
def test_errors_name_the_true_line_for_any_split(tmp_path: Path, chunk_bytes: int) -> None:
    f = tmp_path / "c.jsonl"
    lines = _lines(12)
    lines[8] = '{"text": "broken'
    f.write_text("\n".join(lines))  # no final newline
    with pytest.raises(CorpusError, match=r"c\.jsonl:9 is not valid JSON"):  # noqa: PT012
        for chunk in plan_chunks([CorpusFile(f)], chunk_bytes):
            list(read_chunk(chunk, ReadOptions(), CorpusStats()))


def test_crc_identifies_the_line(tmp_path: Path) -> None:
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join(_lines(3)) + "\n")
    crcs = [
        crc
        for *_x, crc in read_chunk(
            plan_chunks([CorpusFile(f)], 10**6)[0], ReadOptions(), CorpusStats()
        )
    ]
    assert len(set(crcs)) == 3


def test_lang_prefix_and_paths_with_equals(tmp_path: Path) -> None:
    weird = tmp_path / "a=b.jsonl"
    weird.write_text("")
    assert CorpusFile.parse(str(weird)) == CorpusFile(weird)  # an existing path wins
    assert CorpusFile.parse("zh-CN=x.jsonl") == CorpusFile(Path("x.jsonl"), "zh")
    assert CorpusFile.parse("not a code=x.jsonl") == CorpusFile(Path("not a code=x.jsonl"))
    assert CorpusFile.parse("zh=x.jsonl") == CorpusFile(Path("x.jsonl"), "zh")


@pytest.mark.parametrize(
    ("record", "text"),
    [
        ({"text": "hi"}, "hi"),
        (
            {
                "messages": [
                    {"role": "assistant", "content": "a"},
                    {"role": "assistant", "content": "b"},
                ]
            },
            "a\nb",
        ),
        ({"messages": [{"role": "user", "content": "q"}]}, None),
        ({"messages": "nope"}, None),
        ({"text": 3}, None),
        ([1, 2], None),
    ],
)
def test_record_text(record: object, text: str | None) -> None:
    assert record_text(record) == text


def test_missing_corpus_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="cannot read corpus"):
        plan_chunks([CorpusFile(tmp_path / "nope.jsonl")], 100)
