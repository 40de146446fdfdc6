"""The union map: construction, weights, the build option, shipping, stock SGLang loading.

Expected values are stated from the definition (row shares, set containment, counts
from an independent ``collections.Counter`` over the corpora), not from the builder.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from typer.testing import CliRunner

from fastmtp_export.artifact import manifest as mf
from fastmtp_export.artifact.launch import sglang_command
from fastmtp_export.cli import app
from fastmtp_export.errors import TokenMapError
from fastmtp_export.maps.ranking import load_ranking
from fastmtp_export.maps.summary import SUMMARY_NAME
from fastmtp_export.maps.token_map import save_token_map
from fastmtp_export.maps.union import interleave, parse_weights, union_hot_ids
from sglang_patch import settings

from ..conftest import assert_one_line_error, export_cli, nothing_written, write_bpe_source

EN = list(range(0, 100))
ZH = list(range(100, 200))


# --- interleave / union_hot_ids -------------------------------------------------------


def test_equal_weights_at_twice_k_hold_both_maps_exactly() -> None:
    ids = interleave({"en": EN, "zh": ZH}, {"en": 0.5, "zh": 0.5}, 200)
    assert sorted(ids) == EN + ZH
    assert ids[:4] == [0, 100, 1, 101]  # rank by rank: each language's best first


def test_weights_set_each_languages_share_of_rows() -> None:
    ids = interleave({"en": EN, "zh": ZH}, {"en": 0.75, "zh": 0.25}, 80)
    en = [i for i in ids if i in set(EN)]
    assert len(en) == 60
    assert en == EN[:60]  # a language's rows are its top ids, in rank order
    assert [i for i in ids if i in set(ZH)] == ZH[:20]


def test_shared_ids_are_taken_once_and_the_next_language_digs_deeper() -> None:
    zh = [*EN[:10], *ZH]  # zh's ten best tokens are en's ten best (digits, punctuation)
    ids = interleave({"en": EN, "zh": zh}, {"en": 0.5, "zh": 0.5}, 100)
    assert len(ids) == len(set(ids)) == 100
    # the shared ten fill ten rows, not twenty: each language's top 55 fits in 100 rows
    assert set(EN[:55]) <= set(ids)
    assert set(zh[:55]) <= set(ids)


def test_an_exhausted_ranking_leaves_its_rows_to_the_others() -> None:
    ids = interleave({"en": EN, "zh": ZH[:10]}, {"en": 0.5, "zh": 0.5}, 60)
    assert set(ZH[:10]) <= set(ids)
    assert len(ids) == 60
    assert set(ids) - set(ZH[:10]) == set(EN[:50])


def test_union_is_deterministic_and_independent_of_argument_order() -> None:
    a = union_hot_ids(
        {"en": EN, "zh": ZH}, {"en": 0.4, "zh": 0.6}, 150, required=[255], vocab_size=256
    )
    b = union_hot_ids(
        {"zh": ZH, "en": EN}, {"zh": 0.6, "en": 0.4}, 150, required=[255], vocab_size=256
    )
    assert a == b


def test_eos_is_forced_and_a_shortfall_padded_from_the_fallback() -> None:
    fallback = [250, 240, 5]
    ids = union_hot_ids(
        {"en": EN[:3], "zh": ZH[:3]}, {"en": 0.5, "zh": 0.5}, 9,
        required=[255], fallback=fallback, vocab_size=256,
    )  # fmt: skip
    assert len(ids) == len(set(ids)) == 9
    assert 255 in ids
    assert set(ids) == {*EN[:3], *ZH[:3], 255, 250, 240}  # 5 is already in: skipped
    full = union_hot_ids({"en": EN, "zh": ZH}, {"en": 0.5, "zh": 0.5}, 20, required=[255],
                         vocab_size=256)  # fmt: skip
    assert 255 in full
    assert len(full) == 20  # EOS replaced the union's last row, the size is kept


@pytest.mark.parametrize("size", [0, -1, 257])
def test_size_outside_the_vocabulary_is_refused(size: int) -> None:
    with pytest.raises(TokenMapError, match="between 1 and the vocab size 256"):
        union_hot_ids({"en": EN}, {"en": 1.0}, size, vocab_size=256)


# --- weights ---------------------------------------------------------------------------


def test_weights_default_equal_tokens_and_explicit() -> None:
    tokens = {"en": 300, "zh": 100}
    assert parse_weights("equal", ["zh", "en"], tokens) == {"en": 0.5, "zh": 0.5}
    assert parse_weights("tokens", ["en", "zh"], tokens) == {"en": 0.75, "zh": 0.25}
    assert parse_weights("en=7, zh=3", ["en", "zh", "ru"], tokens) == pytest.approx(
        {"en": 0.7, "zh": 0.3}
    )  # ru is left out of the union


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("en=0.7,zh=0", "the weight of 'zh' must be a positive number, not '0'"),
        ("en=-1", "the weight of 'en' must be a positive number"),
        ("en=nan", "the weight of 'en' must be a positive number, not 'nan'"),
        ("en=inf", "the weight of 'en' must be a positive number, not 'inf'"),
        ("en=lots", "not 'lots'"),
        ("en", "'en' is not LANG=WEIGHT; write e.g. en=0.7,zh=0.3"),
        ("=1", "'=1' is not LANG=WEIGHT"),
        ("en=1,,zh=1", "'' is not LANG=WEIGHT"),
        ("en=1,en=2", "'en' is given twice"),
        ("en=1,fr=1", "'fr' has no map; choose among en, zh"),
        ("equall", "'equall' is not LANG=WEIGHT"),
    ],
)
def test_bad_weights_are_one_line_errors(spec: str, needle: str) -> None:
    with pytest.raises(TokenMapError) as err:
        parse_weights(spec, ["en", "zh"], {"en": 1, "zh": 1})
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


# --- token-map build --union -----------------------------------------------------------


def _held_out(tokenizer: Path, corpus: Path, summary: dict) -> Counter:
    """Held-out token counts of ``corpus``, recounted independently: a record is held
    out iff the builder says so (same crc rule as the build test's oracle)."""
    import zlib

    tok = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    held: Counter = Counter()
    for line in corpus.read_bytes().splitlines(keepends=True):
        if zlib.crc32(line) / 2**32 < summary["holdout"]:
            held.update(tok.encode(json.loads(line)["text"], add_special_tokens=False).ids)
    return held


@pytest.fixture(scope="module")
def union_build(
    tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("union") / "maps"
    r = CliRunner().invoke(
        app,
        ["token-map", "build", str(corpora["en"]), str(corpora["zh"]), "--tokenizer",
         str(bpe_tokenizer), "--out", str(out), "--size", "128", "--union", "256"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return out, json.loads((out / SUMMARY_NAME).read_text()), r.stdout


def test_build_union_holds_both_maps_at_twice_k(
    union_build: tuple[Path, dict, str], bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    out, summary, _ = union_build
    union = summary["union"]
    assert union["file"] == "freq_union_256.pt"
    assert union["size"] == 256
    assert union["weights"] == {"en": 0.5, "zh": 0.5}
    assert summary["format_version"] == 3  # --union also ranks each language to N
    ids = torch.load(out / "freq_union_256.pt", weights_only=True)  # as stock SGLang does
    assert isinstance(ids, list)
    assert len(ids) == len(set(ids)) == 256
    assert set(summary["eos_ids"]) <= set(ids)
    for lang in ("en", "zh"):
        own = torch.load(out / f"freq_{lang}_128.pt", weights_only=True)
        assert set(own) <= set(ids), lang  # two languages at 2K: both maps, exactly
        held = _held_out(bpe_tokenizer, corpora[lang], summary)
        want = sum(held[t] for t in set(ids)) / sum(held.values())
        assert union["coverage"][lang] == pytest.approx(want, abs=1e-6)
        assert union["coverage"][lang] >= summary["coverage"]["128"][lang][lang]


def test_build_union_ranks_each_language_to_its_rows(
    union_build: tuple[Path, dict, str], bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    """Each language's top N ids (N = --union's rows) with its token shares, recounted here."""
    out, summary, stdout = union_build
    tok = Tokenizer.from_file(str(bpe_tokenizer / "tokenizer.json"))
    for lang in ("en", "zh"):
        entry = summary["languages"][lang]["ranking"]
        assert entry["file"] == f"rank_{lang}_256.json"
        assert entry["size"] == 256
        r = load_ranking(out / entry["file"], vocab_size=summary["vocab_size"], size=256)
        own = torch.load(out / f"freq_{lang}_128.pt", weights_only=True)
        assert set(own) <= set(r.ids)  # the map's ids are the ranking's head
        assert set(summary["eos_ids"]) <= set(r.ids)
        # shares: each id's share of the counted (not held-out) tokens, recounted
        held = _held_out(bpe_tokenizer, corpora[lang], summary)
        every: Counter = Counter()
        for line in corpora[lang].read_text().splitlines():
            every.update(tok.encode(json.loads(line)["text"], add_special_tokens=False).ids)
        counted = every - held
        total = sum(counted.values())
        for i, share in list(zip(r.ids, r.shares, strict=True))[:20]:
            assert share == pytest.approx(counted[i] / total, rel=1e-5), (lang, i)
        assert r.shares[:50] == sorted(r.shares[:50], reverse=True)
        want = sum(held[t] for t in set(r.ids)) / sum(held.values())
        assert entry["coverage"] == pytest.approx(want, abs=1e-6)
        assert entry["coverage"] >= summary["coverage"]["128"][lang][lang]
        assert f"rank_{lang}_256.json" in stdout


def test_build_union_prints_its_column(union_build: tuple[Path, dict, str]) -> None:
    _, summary, stdout = union_build
    lines = stdout.splitlines()
    assert lines[1].split() == ["en", "zh", "union:256"]
    en_row = lines[2].split()
    assert en_row[0] == "en"
    assert en_row[3] == f"{100 * summary['union']['coverage']['en']:.1f}%"
    assert "freq_union_256.pt (row shares: en 0.50, zh 0.50)" in stdout


def test_build_weights_shift_rows_and_coverage(
    tmp_path: Path, bpe_tokenizer: Path, corpora: dict[str, Path], union_build: tuple
) -> None:
    out = tmp_path / "maps"
    r = CliRunner().invoke(
        app,
        ["token-map", "build", str(corpora["en"]), str(corpora["zh"]), "--tokenizer",
         str(bpe_tokenizer), "--out", str(out), "--size", "128", "--union", "128",
         "--weights", "en=3,zh=1", "--json", "-q"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    heavy = json.loads(r.stdout)["union"]
    assert heavy["weights"] == {"en": 0.75, "zh": 0.25}
    # 3/4 of 128 rows to en: en close to its own map, zh far below its own
    own = json.loads(r.stdout)["coverage"]["128"]
    assert heavy["coverage"]["en"] > heavy["coverage"]["zh"]
    assert heavy["coverage"]["zh"] < own["zh"]["zh"]
    assert heavy["coverage"]["en"] <= own["en"]["en"]


def test_build_without_union_writes_a_version_1_summary(
    tmp_path: Path, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> None:
    out = tmp_path / "maps"
    r = CliRunner().invoke(
        app,
        ["token-map", "build", str(corpora["en"]), "--tokenizer", str(bpe_tokenizer),
         "--out", str(out), "--size", "64", "-q"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads((out / SUMMARY_NAME).read_text())
    assert doc["format_version"] == 1
    assert "union" not in doc  # readable by tools that predate union maps
    assert not list(out.glob("freq_union_*"))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--union", "100000"], "--union 100000 must be between 2 and the vocab size 2048"),
        (["--union", "1"], "--union 1 must be between 2"),
        (["--union", "64", "--weights", "en=0"], "the weight of 'en' must be a positive"),
        (["--union", "64", "--weights", "fr=1"], "'fr' has no map; choose among en, zh"),
        (["--weights", "en=1"], "--weights shapes the union map; pass --union N too"),
    ],
)
def test_bad_union_options_fail_and_write_nothing(
    runner: CliRunner,
    tmp_path: Path,
    bpe_tokenizer: Path,
    corpora: dict[str, Path],
    args: list[str],
    needle: str,
) -> None:
    out = tmp_path / "maps"
    r = runner.invoke(
        app,
        ["token-map", "build", str(corpora["en"]), str(corpora["zh"]), "--tokenizer",
         str(bpe_tokenizer), "--out", str(out), "--size", "32", *args],
    )  # fmt: skip
    assert_one_line_error(r, needle)
    nothing_written(out)


def test_newer_summary_asks_for_an_upgrade(
    union_build: tuple, tmp_path: Path, bpe_tokenizer: Path
) -> None:
    src, _, _ = union_build
    maps = tmp_path / "maps"
    maps.mkdir()
    for f in src.iterdir():
        (maps / f.name).write_bytes(f.read_bytes())
    doc = json.loads((maps / SUMMARY_NAME).read_text())
    (maps / SUMMARY_NAME).write_text(json.dumps({**doc, "format_version": 4}))
    src = write_bpe_source(tmp_path / "src", bpe_tokenizer)
    r = CliRunner().invoke(
        app, ["export", str(src), "--out", str(tmp_path / "d"), "--token-maps", str(maps)]
    )
    assert_one_line_error(r, "format version 4, newer than this tool's 3; upgrade")


# --- shipping in the artifact ----------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_source(tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer: Path) -> Path:
    return write_bpe_source(tmp_path_factory.mktemp("bpe-src") / "src", bpe_tokenizer)


def test_export_ships_the_union_and_stock_sglang_serves_it(
    union_build: tuple[Path, dict, str], bpe_source: Path, tmp_path: Path
) -> None:
    maps, summary, _ = union_build
    draft = export_cli(bpe_source, tmp_path / "draft", "--token-maps", str(maps))
    doc = json.loads((draft / mf.MANIFEST_NAME).read_text())
    assert doc["format_version"] == 3  # with rankings
    union = doc["token_maps"]["union"]
    assert union == {
        "file": "freq_union_256.pt",
        "size": 256,
        "weights": summary["union"]["weights"],
        "coverage": summary["union"]["coverage"],
    }
    assert (draft / "freq_union_256.pt").read_bytes() == (maps / "freq_union_256.pt").read_bytes()
    assert "freq_union_256.pt" in doc["files"]
    for lang in ("en", "zh"):  # each language's ranking ships, byte for byte, for the plugin
        name = f"rank_{lang}_256.json"
        assert doc["token_maps"]["languages"][lang]["ranking"] == {
            "file": name, "size": 256,
            "coverage": summary["languages"][lang]["ranking"]["coverage"],
        }  # fmt: skip
        assert (draft / name).read_bytes() == (maps / name).read_bytes()
        assert name in doc["files"]
    found = settings.artifact_maps(draft)
    assert found is not None
    assert found.rankings is not None
    assert found.shares is not None
    assert found.rankings["zh"] == json.loads((maps / "rank_zh_256.json").read_text())["ids"]
    manifest = mf.load(draft)
    argv = sglang_command(draft, manifest, static_map=True)
    assert argv[-2:] == ["--speculative-token-map", str(draft / "freq_union_256.pt")]
    r = CliRunner().invoke(app, ["inspect", str(draft)])
    assert r.exit_code == 0, r.output
    assert "union freq_union_256.pt" in r.stdout
    assert "rank_zh_256.json" in r.stdout
    assert "ranking to N=256 (the plugin's rows)" in r.stdout
    assert "stock SGLang without the plugin (one static map: the union)" in r.stdout
    card = (draft / "README.md").read_text()
    assert "| union | 256 | `freq_union_256.pt` |" in card


def test_artifact_without_union_stays_format_1(union_build: tuple, bpe_source: Path,
                                               tmp_path: Path) -> None:  # fmt: skip
    maps, _, _ = union_build
    draft = export_cli(
        bpe_source, tmp_path / "draft",
        "--token-map", f"en={maps / 'freq_en_128.pt'}", "--token-map",
        f"zh={maps / 'freq_zh_128.pt'}", "--default-lang", "en",
    )  # fmt: skip
    doc = json.loads((draft / mf.MANIFEST_NAME).read_text())
    assert doc["format_version"] == 1
    assert "union" not in doc["token_maps"]
    argv = sglang_command(draft, mf.load(draft), static_map=True)
    assert argv[-1] == str(draft / "freq_en_128.pt")  # no union: the default language's map


def test_hand_made_union_ships_without_figures(union_build: tuple, bpe_source: Path,
                                               tmp_path: Path) -> None:  # fmt: skip
    maps, summary, _ = union_build
    mine = tmp_path / "my-union.pt"
    save_token_map(mine, [*summary["eos_ids"], *range(10, 200)])
    draft = export_cli(
        bpe_source, tmp_path / "draft", "--token-maps", str(maps), "--token-map", f"union={mine}"
    )
    info = mf.load(draft).token_maps
    assert info is not None
    assert info.union == mf.UnionMapEntry(
        file="freq_union_192.pt", size=192, weights=None, coverage=None
    )
    assert torch.load(draft / "freq_union_192.pt", weights_only=True)[:2] == summary["eos_ids"]
    assert not (draft / "freq_union_256.pt").exists()  # the explicit one replaced it


@pytest.mark.parametrize(
    ("ids", "extra", "needle"),
    [
        ("no-eos", [], "lacks required ids"),
        ("dup", [], "duplicate ids"),
        ("ok", ["--default-lang", "en"], None),
    ],
)
def test_bad_union_map_is_refused(
    union_build: tuple, bpe_source: Path, tmp_path: Path, ids: str, extra: list[str],
    needle: str | None,
) -> None:  # fmt: skip
    maps, summary, _ = union_build
    eos = summary["eos_ids"]
    content = {"no-eos": list(range(10, 60)), "dup": [*eos, 5, 5], "ok": [*eos, 5]}[ids]
    bad = tmp_path / "u.pt"
    save_token_map(bad, content)
    out = tmp_path / "draft"
    r = CliRunner().invoke(
        app,
        ["export", str(bpe_source), "--out", str(out), "--token-map",
         f"en={maps / 'freq_en_128.pt'}", "--token-map", f"union={bad}", *extra],
    )  # fmt: skip
    if needle is None:
        assert r.exit_code == 0, r.output
        return
    assert_one_line_error(r, "u.pt", needle)
    nothing_written(out)


def test_a_union_alone_is_refused(bpe_source: Path, tmp_path: Path) -> None:
    u = tmp_path / "u.pt"
    save_token_map(u, list(range(64)))
    r = CliRunner().invoke(
        app, ["export", str(bpe_source), "--out", str(tmp_path / "d"), "--token-map", f"union={u}"]
    )
    assert_one_line_error(r, "a union map ships beside the language maps it serves")
