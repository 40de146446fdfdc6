"""FR-Spec hot-token maps: deterministic ranking, forced EOS, padding, validation."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from fastmtp_export.errors import TokenMapError
from fastmtp_export.maps.token_map import (
    load_token_map,
    ranked_ids,
    save_token_map,
    select_hot_ids,
    token_map_bytes,
)
from fastmtp_export.maps.tokenizer import load_tokenizer


def test_ranking_breaks_ties_by_id() -> None:
    counts = [0, 5, 7, 5, 0, 7, 1]
    assert ranked_ids(counts) == [2, 5, 1, 3, 6]
    assert ranked_ids(torch.tensor(counts)) == [2, 5, 1, 3, 6]


def test_required_ids_replace_the_lowest_ranked() -> None:
    ranked = [10, 11, 12, 13, 14]
    got = select_hot_ids(ranked, 4, required=[99], vocab_size=100)
    assert got == [10, 11, 12, 99]


def test_required_id_already_frequent_keeps_its_rank() -> None:
    got = select_hot_ids([7, 3, 9, 1], 3, required=[3], vocab_size=10)
    assert got == [7, 3, 9]


def test_shortfall_is_padded_from_the_fallback_then_low_ids() -> None:
    got = select_hot_ids([5, 2], 6, required=[9], fallback=[2, 8, 5, 7], vocab_size=10)
    # language tokens by rank, then the required EOS, then all-language ranking, then ids
    assert got == [5, 2, 9, 8, 7, 0]
    assert len(set(got)) == len(got)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ranked": [1, 200], "size": 2}, "outside the vocabulary"),
        ({"ranked": [1], "size": 0}, "between 1 and the vocab size"),
        ({"ranked": [1], "size": 1, "required": [2, 3]}, "do not fit"),
    ],
    ids=["out-of-range", "zero-size", "required-too-many"],
)
def test_bad_selection_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(TokenMapError, match=message):
        select_hot_ids(vocab_size=100, **kwargs)


def test_saved_map_loads_as_sglang_loads_it(tmp_path: Path) -> None:
    path = tmp_path / "freq_en_4.pt"
    save_token_map(path, [3, 1, 2, 0])
    # SGLang's spec_utils.load_token_map, verbatim semantics
    hot = torch.tensor(torch.load(path, weights_only=True), dtype=torch.int64)
    assert hot.tolist() == [3, 1, 2, 0]
    assert load_token_map(path, vocab_size=4, required=[0], size=4) == [3, 1, 2, 0]
    assert [p.name for p in tmp_path.iterdir()] == ["freq_en_4.pt"]  # no temp files left


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([1, 1, 2], "1 duplicate ids"),
        ([1, 2, 50], r"outside the vocabulary of 10: \[50\]"),
        ([1, 2, 3], r"lacks required ids \[9\]"),
        ([9, 1], "has 2 ids, expected 3"),
        ([1.0, 2.0, 9.0], "not a flat list of int"),
    ],
    ids=["duplicates", "out-of-range", "missing-eos", "wrong-size", "floats"],
)
def test_bad_maps_are_named_and_refused(tmp_path: Path, content: list, message: str) -> None:
    path = tmp_path / "freq_zh_3.pt"
    torch.save(content, path)
    with pytest.raises(TokenMapError, match=message) as info:
        load_token_map(path, vocab_size=10, required=[9], size=3)
    assert "freq_zh_3.pt" in str(info.value)


def test_tensor_maps_are_accepted_and_garbage_is_not(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    torch.save(torch.tensor([4, 2, 9]), path)
    assert load_token_map(path, vocab_size=10, required=[9]) == [4, 2, 9]
    path.write_bytes(b"not a pickle")
    with pytest.raises(TokenMapError, match="cannot be loaded"):
        load_token_map(path, vocab_size=10)


def test_stdlib_writer_matches_torch_save_for_every_loader(tmp_path: Path) -> None:
    ids = [151645, 3, 70000, 0, 151643]
    ours = tmp_path / "ours.pt"
    save_token_map(ours, ids)
    theirs = tmp_path / "theirs.pt"
    torch.save(ids, theirs)
    for path in (ours, theirs):
        assert torch.load(path, weights_only=True) == ids
        assert torch.load(path, weights_only=True, mmap=True) == ids
        assert load_token_map(path, vocab_size=151680) == ids
    # every record torch writes, byte for byte, except the random serialization id
    # (torch names the archive folder after the file)
    with zipfile.ZipFile(ours) as a, zipfile.ZipFile(theirs) as b:
        mine = {n.removeprefix("archive/"): a.read(n) for n in a.namelist()}
        torchs = {n.removeprefix("theirs/"): b.read(n) for n in b.namelist()}
    torchs.pop(".data/serialization_id")
    assert mine == torchs
    assert [n.removeprefix("archive/") for n in zipfile.ZipFile(ours).namelist()] == [
        n.removeprefix("theirs/")
        for n in zipfile.ZipFile(theirs).namelist()
        if not n.endswith("serialization_id")
    ]  # same records in the same order
    # and the bytes depend on the ids alone (fixed timestamps)
    assert token_map_bytes(ids) == ours.read_bytes()


def test_int_tensor_maps_are_accepted_like_sglang_does(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    torch.save(torch.tensor([4, 2, 9]), path)
    assert load_token_map(path, vocab_size=10) == [4, 2, 9]


def test_building_and_shipping_maps_never_import_torch(
    tmp_path: Path, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    """torch costs ~2 s and ~500 MB RSS to import; maps are plain pickled lists."""
    code = f"""
import sys
from pathlib import Path
from fastmtp_export.maps.corpus import CorpusFile
from fastmtp_export.maps.builder import build_token_maps
from fastmtp_export.artifact.map_bundle import collect_maps
from fastmtp_export.maps.tokenizer import load_tokenizer
tok = load_tokenizer(Path({str(bpe_tokenizer)!r}))
out = Path({str(tmp_path / "maps")!r})
build_token_maps([CorpusFile(Path({str(corpora["en"])!r}))], tok, out, size=32)
collect_maps(token_maps=out, token_map=(), vocab_size=tok.vocab_size, required=tok.eos_ids,
             default_lang=None)
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    assert torch.load(tmp_path / "maps" / "freq_en_32.pt", weights_only=True)[-2:] == list(
        load_tokenizer(bpe_tokenizer).eos_ids
    )
