"""Every bad input: one-line error naming the cause, exit code 1, nothing written."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fastmtp_export.checkpoints.safetensors_io as sio
from fastmtp_export.checkpoints.synthetic import TINY, mimo_config, write_synthetic_mimo
from fastmtp_export.cli import app

from ..conftest import assert_one_line_error, nothing_written, tree_digest


def _run(runner: CliRunner, *args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env)


def test_missing_source(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "draft"
    r = _run(runner, "export", str(tmp_path / "nope"), "--out", str(out))
    assert_one_line_error(r, "does not exist", "nope")
    nothing_written(out)


def test_source_without_mtp_tensors_names_arch_and_families(
    runner: CliRunner, tmp_path: Path
) -> None:
    cfg = mimo_config(TINY)
    cfg["architectures"] = ["Qwen2ForCausalLM"]
    cfg["model_type"] = "qwen2"
    src = write_synthetic_mimo(tmp_path / "qwen", cfg)
    for shard in src.glob("*.safetensors"):  # rewrite without the MTP layer
        from safetensors.torch import load_file, save_file

        kept = {k: v for k, v in load_file(str(shard)).items() if "mtp_layers" not in k}
        save_file(kept, str(shard), metadata={"format": "pt"})
    index = json.loads((src / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if "mtp_layers" not in k}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    out = tmp_path / "draft"
    r = _run(runner, "export", str(src), "--out", str(out))
    assert_one_line_error(r, "Qwen2ForCausalLM", "mimo (MiMoForCausalLM)")
    nothing_written(out)


def test_mimo_without_mtp_tensors(runner: CliRunner, tmp_path: Path) -> None:
    src = write_synthetic_mimo(tmp_path / "src", mimo_config(TINY, num_mtp_layers=0))
    r = _run(runner, "export", str(src), "--out", str(tmp_path / "d"))
    assert_one_line_error(r, "MiMoForCausalLM", "no model.mtp_layers.* tensors")


def test_missing_layer(runner: CliRunner, tiny_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "draft"
    r = _run(runner, "export", str(tiny_source), "--out", str(out), "--mtp-layer", "3")
    assert_one_line_error(r, "--mtp-layer 3 does not exist", "available MTP layers: 0")
    nothing_written(out)


def test_truncated_shard_is_named(runner: CliRunner, tiny_source: Path, tmp_path: Path) -> None:
    shard = tiny_source / "model-00002-of-00002.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    out = tmp_path / "draft"
    r = _run(runner, "export", str(tiny_source), "--out", str(out))
    assert_one_line_error(r, "model-00002-of-00002.safetensors", "truncated")
    nothing_written(out)


def test_corrupt_header_is_named(runner: CliRunner, tiny_source: Path, tmp_path: Path) -> None:
    shard = tiny_source / "model-00001-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[8:20] = b"#garbage####"
    shard.write_bytes(bytes(data))
    r = _run(runner, "export", str(tiny_source), "--out", str(tmp_path / "d"))
    assert_one_line_error(r, "model-00001-of-00002.safetensors", "unreadable header")


def test_index_points_at_missing_shard(
    runner: CliRunner, tiny_source: Path, tmp_path: Path
) -> None:
    (tiny_source / "model-00002-of-00002.safetensors").unlink()
    out = tmp_path / "draft"
    r = _run(runner, "export", str(tiny_source), "--out", str(out))
    assert_one_line_error(r, "missing shard", "model-00002-of-00002.safetensors")
    nothing_written(out)


def test_shape_disagrees_with_config(runner: CliRunner, tiny_source: Path, tmp_path: Path) -> None:
    cfg_path = tiny_source / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["intermediate_size"] = 96
    cfg_path.write_text(json.dumps(cfg))
    out = tmp_path / "draft"
    r = _run(runner, "export", str(tiny_source), "--out", str(out))
    assert_one_line_error(r, "down_proj.weight", "[64, 128]", "config.json implies [64, 96]")
    nothing_written(out)


def test_nonempty_out_without_overwrite(
    runner: CliRunner, tiny_source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "draft"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = _run(runner, "export", str(tiny_source), "--out", str(out))
    assert_one_line_error(r, "not empty", "--overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_unwritable_out_location(runner: CliRunner, tiny_source: Path, tmp_path: Path) -> None:
    # Tests run as root, where permission bits do not stop writes; a regular file
    # in the parent chain is unwritable for everyone.
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = _run(runner, "export", str(tiny_source), "--out", str(blocker / "draft"))
    assert_one_line_error(r, "cannot create --out", "writable location")


def test_out_inside_source_is_refused(runner: CliRunner, tiny_source: Path, tmp_path: Path) -> None:
    before = tree_digest(tiny_source)
    r = _run(runner, "export", str(tiny_source), "--out", str(tiny_source), "--overwrite")
    assert_one_line_error(r, "overlaps the input")
    assert tree_digest(tiny_source) == before


def test_disk_full_mid_write_leaves_nothing(
    runner: CliRunner, tiny_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC after the first tensor: no artifact, no temp dir, no previous damage."""
    out = tmp_path / "draft"
    out.mkdir()
    (out / "old.txt").write_text("previous artifact")
    real = sio.file_range_chunks
    calls = {"n": 0}

    def failing(path: Path, begin: int, nbytes: int):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, begin, nbytes)

    monkeypatch.setattr("fastmtp_export.checkpoints.checkpoint.file_range_chunks", failing)
    r = _run(runner, "export", str(tiny_source), "--out", str(out), "--overwrite")
    assert_one_line_error(r, "No space left on device", "nothing was written")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["draft", "src"]


def test_debug_variable_shows_traceback(runner: CliRunner, tmp_path: Path) -> None:
    r = _run(
        runner,
        "export",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "d"),
        env={"FASTMTP_DEBUG": "1"},
    )
    assert r.exit_code == 1
    assert "Traceback" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")


def test_bad_shard_size_is_a_usage_error(
    runner: CliRunner, tiny_source: Path, tmp_path: Path
) -> None:
    r = _run(
        runner, "export", str(tiny_source), "--out", str(tmp_path / "d"), "--max-shard-size", "lots"
    )
    assert r.exit_code == 2
    assert "not a size" in r.stderr
