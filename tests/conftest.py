"""Shared fixtures: tiny synthetic MiMo checkpoints built in tmp_path (no downloads)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from fastmtp_export.synthetic import TINY, mimo_config, write_synthetic_mimo


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
