"""Shared fixtures: tiny synthetic MiMo checkpoints built in tmp_path (no downloads)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner, Result

from fastmtp_export.checkpoints.synthetic import TINY, mimo_config, write_synthetic_mimo
from fastmtp_export.cli import app
from fastmtp_export.maps.synthetic_corpus import records, train_tokenizer, write_jsonl


@pytest.fixture
def tiny_source(tmp_path: Path) -> Path:
    """A 2-shard tiny MiMo checkpoint with FastMTP's training-only config keys."""
    return write_synthetic_mimo(
        tmp_path / "src", mimo_config(TINY, training_keys=True), seed=0, num_shards=2
    )


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def tree_digest(root: Path) -> dict[str, str]:
    """relative path -> sha256 for every file under ``root`` (to prove nothing changed)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def source_tensors(src: Path, select: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    """Tensors of a sharded source chosen by name, read with safetensors directly
    (an independent path from the exporter's own reader)."""
    weight_map = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    out = {}
    for name, shard in weight_map.items():
        if select(name):
            with safe_open(str(src / shard), framework="pt") as fh:
                out[name] = fh.get_tensor(name)
    return out


def assert_one_line_error(result: Result, *needles: str) -> None:
    """Exit 1, exactly one final ``error:`` line on stderr naming ``needles``, no traceback."""
    assert result.exit_code == 1, result.output
    # progress/log lines may precede it; the error itself is exactly one final line
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:], result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


def export_cli(source: Path, out: Path, *args: str) -> Path:
    """``fastmtp-export export SOURCE --out OUT -q ARGS`` that must succeed; returns OUT."""
    r = CliRunner().invoke(app, ["export", str(source), "--out", str(out), "-q", *args])
    assert r.exit_code == 0, r.output
    return out


def nothing_written(out: Path) -> None:
    """``out`` does not exist and no temporary sibling was left behind."""
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []


#: model vocab of the BPE fixture: padded past the tokenizer, like MiMo's 151680 > 151665
BPE_MODEL_VOCAB = 2048


def write_bpe_source(root: Path, bpe_tokenizer: Path) -> Path:
    """A tiny MiMo checkpoint sharing the BPE fixture's vocab and EOS ids."""
    gen = json.loads((bpe_tokenizer / "generation_config.json").read_text())
    cfg = mimo_config({**TINY, "vocab_size": BPE_MODEL_VOCAB})
    cfg["eos_token_id"] = gen["eos_token_id"][0]
    src = write_synthetic_mimo(root, cfg, seed=0, num_shards=2)
    (src / "generation_config.json").write_text(json.dumps(gen))
    return src


@pytest.fixture(scope="session")
def bpe_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real byte-level BPE tokenizer (Qwen2 pipeline and chat specials), trained here."""
    return train_tokenizer(
        tmp_path_factory.mktemp("tok") / "tokenizer", model_vocab_size=BPE_MODEL_VOCAB
    )


@pytest.fixture(scope="session")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """en / zh / ru JSONL corpora with a ``lang`` field, 400 records each."""
    root = tmp_path_factory.mktemp("corpora")
    return {
        lang: write_jsonl(root / f"{lang}.jsonl", records(lang, 400, seed=1))
        for lang in ("en", "zh", "ru")
    }
