"""File names read from a manifest or a map summary stay inside their directory.

An artifact is downloaded data: a name such as ``../../.ssh/id_rsa`` or a symbolic link
to a file outside must never make ``inspect``, ``push``, ``export --token-maps`` or the
plugin read (and hash, upload or serve) a file outside the artifact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastmtp_export.checkpoints.oracle import EN, EOS, ZH, write_target
from fastmtp_export.cli import app
from fastmtp_export.errors import FastMTPError
from fastmtp_export.maps.token_map import save_token_map
from sglang_patch.settings import artifact_maps

from ..conftest import assert_one_line_error, export_cli, nothing_written

BAD_NAMES = ["../outside.pt", "/etc/passwd", "sub/freq_en_128.pt", "..", ""]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("confined")
    target = write_target(root / "target", oracle=True)
    save_token_map(root / "en.pt", EN)
    save_token_map(root / "zh.pt", [*ZH, EOS])
    return export_cli(
        target, root / "draft", "--token-map", f"en={root / 'en.pt'}",
        "--token-map", f"zh={root / 'zh.pt'}", "--default-lang", "en",
    )  # fmt: skip


@pytest.fixture
def artifact(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "draft"))


def _edit_manifest(artifact: Path, edit: object) -> None:
    doc = json.loads((artifact / "fastmtp.json").read_text())
    edit(doc)  # type: ignore[operator]
    (artifact / "fastmtp.json").write_text(json.dumps(doc))


def _refusals(artifact: Path, *needles: str) -> None:
    """inspect, push --dry-run and the plugin all refuse the artifact with one line."""
    runner = CliRunner()
    assert_one_line_error(runner.invoke(app, ["inspect", str(artifact)]), *needles)
    r = runner.invoke(app, ["push", str(artifact), "--repo-id", "acme/x", "--dry-run"])
    assert_one_line_error(r, *needles)
    with pytest.raises(FastMTPError) as err:
        artifact_maps(artifact)
    assert all(n in str(err.value) for n in needles), str(err.value)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_map_name_outside_the_artifact_is_refused(artifact: Path, name: str) -> None:
    def edit(doc: dict) -> None:
        doc["token_maps"]["languages"]["en"]["file"] = name

    _edit_manifest(artifact, edit)
    _refusals(artifact, "must be a plain file name inside the artifact")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_listed_file_outside_the_artifact_is_refused(artifact: Path, name: str) -> None:
    def edit(doc: dict) -> None:
        doc["files"][name] = doc["files"].pop("freq_en_128.pt")

    _edit_manifest(artifact, edit)
    _refusals(artifact, "must be a plain file name inside the artifact")


def test_a_tensor_file_outside_the_artifact_is_refused(artifact: Path) -> None:
    def edit(doc: dict) -> None:
        first = next(iter(doc["tensors"]))
        doc["tensors"][first]["file"] = "../model.safetensors"

    _edit_manifest(artifact, edit)
    r = CliRunner().invoke(app, ["inspect", str(artifact)])
    assert_one_line_error(r, "'../model.safetensors' must be a plain file name")


def test_a_symlink_out_of_the_artifact_is_refused(artifact: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.pt"
    shutil.copyfile(artifact / "freq_en_128.pt", outside)  # same bytes: the hash matches
    (artifact / "freq_en_128.pt").unlink()
    (artifact / "freq_en_128.pt").symlink_to(outside)
    _refusals(artifact, "freq_en_128.pt", "links outside draft; replace the link")


def test_a_symlink_within_the_artifact_is_fine(artifact: Path) -> None:
    (artifact / "en-copy.pt").write_bytes((artifact / "freq_en_128.pt").read_bytes())
    (artifact / "freq_en_128.pt").unlink()
    (artifact / "freq_en_128.pt").symlink_to("en-copy.pt")
    r = CliRunner().invoke(app, ["inspect", str(artifact), "--json"])
    assert r.exit_code == 0, r.output
    maps = artifact_maps(artifact)
    assert maps is not None
    assert maps.maps["en"] == EN


def test_a_summary_name_outside_its_directory_is_refused(pristine: Path, tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.mkdir()
    save_token_map(maps / "freq_en_128.pt", EN)
    (tmp_path / "outside.pt").write_bytes((maps / "freq_en_128.pt").read_bytes())
    summary = {
        "format": "fastmtp-token-maps", "format_version": 1, "size": 128, "vocab_size": 256,
        "tokenizer": "tok", "eos_ids": [EOS], "holdout": 0.0, "default_lang": "en",
        "languages": {"en": {
            "file": "../outside.pt", "sha256": "0" * 64, "records": 1, "tokens": 1,
            "distinct_tokens": 1, "padded": 0, "heldout_records": 0, "heldout_tokens": 0,
            "coverage": None,
        }},
        "coverage": {}, "corpora": [], "skipped_bad_records": 0, "skipped_undetected": 0,
        "tool_version": "0",
    }  # fmt: skip
    (maps / "token_maps.json").write_text(json.dumps(summary))
    out = tmp_path / "draft"
    target = pristine.parent / "target"
    r = CliRunner().invoke(
        app, ["export", str(target), "--out", str(out), "--token-maps", str(maps)]
    )
    assert_one_line_error(r, "'../outside.pt' must be a plain file name")
    nothing_written(out)


def _as_hub_cache(artifact: Path, cache: Path) -> Path:
    """The artifact laid out as huggingface_hub caches it: snapshot files link to blobs."""
    repo = cache / "models--acme--draft"
    snapshot = repo / "snapshots" / ("a" * 40)
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in artifact.iterdir():
        blob = repo / "blobs" / f"blob-{f.name}"
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(Path("../../blobs") / blob.name)
    return snapshot


def test_a_hub_cache_snapshot_linking_to_its_blobs_is_fine(artifact: Path, tmp_path: Path) -> None:
    """`hf download` without --local-dir, and the plugin's own fetch, leave this layout."""
    snapshot = _as_hub_cache(artifact, tmp_path / "hub")
    r = CliRunner().invoke(app, ["inspect", str(snapshot), "--json"])
    assert r.exit_code == 0, r.output
    maps = artifact_maps(snapshot)
    assert maps is not None
    assert maps.maps["en"] == EN


def test_a_hub_cache_snapshot_linking_out_of_its_repo_is_refused(
    artifact: Path, tmp_path: Path
) -> None:
    snapshot = _as_hub_cache(artifact, tmp_path / "hub")
    outside = tmp_path / "secret.pt"
    shutil.copyfile(artifact / "freq_en_128.pt", outside)
    (snapshot / "freq_en_128.pt").unlink()
    (snapshot / "freq_en_128.pt").symlink_to(outside)
    _refusals(snapshot, "freq_en_128.pt", "links outside")
