"""Shipping token maps in the draft artifact: validation, layout, manifest, inspect."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

from fastmtp_export.cli import app
from fastmtp_export.maps.builder import build_token_maps
from fastmtp_export.maps.corpus import CorpusFile
from fastmtp_export.maps.token_map import save_token_map
from fastmtp_export.maps.tokenizer import load_tokenizer

from ..conftest import (
    assert_one_line_error,
    nothing_written,
    tree_digest,
    write_bpe_source,
)

K = 64


@pytest.fixture(scope="module")
def maps_dir(
    tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer: Path, corpora: dict[str, Path]
) -> Path:
    out = tmp_path_factory.mktemp("built") / "maps"
    build_token_maps(
        [CorpusFile(p) for p in corpora.values()], load_tokenizer(bpe_tokenizer), out, size=K
    )
    return out


@pytest.fixture
def source(tmp_path: Path, bpe_tokenizer: Path) -> Path:
    return write_bpe_source(tmp_path / "src", bpe_tokenizer)


def _export(runner: CliRunner, source: Path, out: Path, *args: str) -> Result:
    return runner.invoke(app, ["export", str(source), "--out", str(out), "-q", *args])


def test_maps_ship_at_the_root_with_manifest_entries(
    runner: CliRunner, tmp_path: Path, source: Path, maps_dir: Path
) -> None:
    out = tmp_path / "draft"
    r = _export(runner, source, out, "--token-maps", str(maps_dir), "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads((maps_dir / "token_maps.json").read_text())
    names = [f"freq_{lang}_{K}.pt" for lang in ("en", "ru", "zh")]
    for name in names:
        assert (out / name).read_bytes() == (maps_dir / name).read_bytes()
    manifest = json.loads((out / "fastmtp.json").read_text())
    tm = manifest["token_maps"]
    assert tm["size"] == K
    assert tm["default_lang"] == summary["default_lang"]
    assert tm["required_ids"] == summary["eos_ids"]
    assert tm["coverage"] == summary["coverage"][str(K)]
    assert {lang: e["file"] for lang, e in tm["languages"].items()} == dict(
        zip(("en", "ru", "zh"), names, strict=True)
    )
    assert tm["languages"]["zh"]["coverage"] == summary["languages"]["zh"]["coverage"]
    digest = tree_digest(out)
    for name in names:
        assert manifest["files"][name]["sha256"] == digest[name]

    r = runner.invoke(app, ["inspect", str(out), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["languages"] == ["en", "ru", "zh"]
    static = report["sglang_command_static_map"]
    assert static[-2:] == [
        "--speculative-token-map",
        str(out / f"freq_{tm['default_lang']}_{K}.pt"),
    ]
    text = runner.invoke(app, ["inspect", str(out)]).stdout
    assert f"languages  en, ru, zh: K={K}" in text
    assert "stock SGLang without the plugin" in text


def test_single_maps_and_default_lang(
    runner: CliRunner, tmp_path: Path, source: Path, maps_dir: Path
) -> None:
    out = tmp_path / "draft"
    zh = maps_dir / f"freq_zh_{K}.pt"
    en = maps_dir / f"freq_en_{K}.pt"
    r = _export(
        runner, source, out, "--token-map", f"zh={zh}", "--token-map", f"en={en}",
        "--default-lang", "zh-CN",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    tm = json.loads((out / "fastmtp.json").read_text())["token_maps"]
    assert sorted(tm["languages"]) == ["en", "zh"]
    assert tm["default_lang"] == "zh"
    assert tm["languages"]["zh"]["coverage"] is None  # no summary for single files
    assert tm["coverage"] is None


# --- bad maps: one-line error naming the file, nothing written --------------------------


def _eos(source: Path) -> list[int]:
    return json.loads((source / "generation_config.json").read_text())["eos_token_id"]


def _map(tmp_path: Path, name: str, ids: list[int]) -> Path:
    path = tmp_path / name
    save_token_map(path, ids)
    return path


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("touch pwned",))


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (lambda d, eos: [_map(d, "m.pt", [*eos, 5000])], ["m.pt", "outside the vocabulary"]),
        (lambda d, eos: [_map(d, "m.pt", [*eos, 7, 7])], ["m.pt", "duplicate"]),
        (lambda d, eos: [_map(d, "m.pt", [1, 2, 3])], ["m.pt", "lacks required ids"]),
        (
            lambda d, eos: [_map(d, "a.pt", [*eos, 1]), _map(d, "b.pt", [*eos, 1, 2])],
            ["unequal sizes", "en=3", "zh=4"],
        ),
        (lambda d, eos: [_torch_save(d / "m.pt", {"ids": eos})], ["m.pt", "not a flat list"]),
        (lambda d, eos: [_torch_save(d / "m.pt", [1.5, 2.0])], ["m.pt", "not a flat list"]),
        (
            lambda d, eos: [_torch_save(d / "m.pt", torch.tensor([*eos, 1.0]))],
            ["m.pt", "not a flat list"],
        ),
        (lambda d, eos: [_raw_pickle(d / "m.pt", _Evil())], ["m.pt", "weights_only=True"]),
        (lambda d, eos: [d / "nope.pt"], ["not found", "nope.pt"]),
    ],
    ids=[
        "out-of-range",
        "duplicates",
        "no-eos",
        "unequal",
        "dict",
        "floats",
        "float-tensor",
        "arbitrary-pickle",
        "missing",
    ],
)
def test_bad_map_is_refused(
    runner: CliRunner,
    tmp_path: Path,
    source: Path,
    make: Callable[[Path, list[int]], list[Path]],
    needles: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    maps = tmp_path / "maps"
    maps.mkdir()
    files = make(maps, _eos(source))
    args = [
        arg
        for lang, f in zip(("en", "zh"), files, strict=False)
        for arg in ("--token-map", f"{lang}={f}")
    ]
    before = tree_digest(source)
    out = tmp_path / "draft"
    r = _export(runner, source, out, *args, "--default-lang", "en")
    assert_one_line_error(r, *needles)
    nothing_written(out)
    assert not (tmp_path / "pwned").exists()  # the pickle's payload never ran
    assert tree_digest(source) == before


def _torch_save(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def _raw_pickle(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--default-lang", "en"], ["--default-lang needs maps"]),
        (["--token-map", "english"], ["LANG=PATH"]),
        (
            ["--token-maps", "MAPS", "--default-lang", "fr"],
            ["'fr' has no map", "['en', 'ru', 'zh']"],
        ),
        (["--token-maps", "EMPTY"], ["holds no freq_<lang>_<K>.pt maps"]),
    ],
    ids=["default-without-maps", "bad-arg", "default-unknown", "empty-dir"],
)
def test_bad_map_options(
    runner: CliRunner,
    tmp_path: Path,
    source: Path,
    maps_dir: Path,
    args: list[str],
    needles: list[str],
) -> None:
    (tmp_path / "empty").mkdir()
    args = [
        str(maps_dir) if a == "MAPS" else str(tmp_path / "empty") if a == "EMPTY" else a
        for a in args
    ]
    out = tmp_path / "draft"
    assert_one_line_error(_export(runner, source, out, *args), *needles)
    nothing_written(out)


def test_maps_without_summary_need_a_default(
    runner: CliRunner, tmp_path: Path, source: Path, maps_dir: Path
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in maps_dir.glob("*.pt"):
        (bare / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "draft"
    assert_one_line_error(_export(runner, source, out, "--token-maps", str(bare)), "--default-lang")
    r = _export(runner, source, out, "--token-maps", str(bare), "--default-lang", "ru")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "fastmtp.json").read_text())["token_maps"]["default_lang"] == "ru"


def test_inspect_catches_a_tampered_map(
    runner: CliRunner, tmp_path: Path, source: Path, maps_dir: Path
) -> None:
    out = tmp_path / "draft"
    assert _export(runner, source, out, "--token-maps", str(maps_dir)).exit_code == 0
    eos = _eos(source)
    save_token_map(out / f"freq_en_{K}.pt", [*eos, *([9] * (K - len(eos)))])
    r = runner.invoke(app, ["inspect", str(out), "--json"])
    assert r.exit_code == 1
    problems = json.loads(r.stdout)["problems"]
    assert any(p.startswith("freq_en_64.pt has") for p in problems), problems  # size changed
    assert any("duplicate ids" in p for p in problems), problems


def test_an_overriding_map_drops_the_summary_figures_for_it(
    runner: CliRunner, tmp_path: Path, source: Path, maps_dir: Path
) -> None:
    other = tmp_path / "other_en.pt"
    eos = _eos(source)
    save_token_map(other, [*eos, *range(100, 100 + K - len(eos))])
    out = tmp_path / "draft"
    r = _export(runner, source, out, "--token-maps", str(maps_dir), "--token-map", f"en={other}")
    assert r.exit_code == 0, r.output
    tm = json.loads((out / "fastmtp.json").read_text())["token_maps"]
    assert (out / f"freq_en_{K}.pt").read_bytes() == other.read_bytes()
    assert tm["languages"]["en"]["coverage"] is None  # the summary measured another file
    assert tm["languages"]["zh"]["coverage"] is not None
    assert all("en" not in row for row in tm["coverage"].values())
