"""Every way of reading a checkpoint gives the same draft, for every ``--dtype``.

Source {local directory, ranged Hub (nothing cached), snapshot complete in the cache,
``HF_HUB_OFFLINE=1`` on that snapshot} x ``--dtype`` {keep, bf16, fp32}, on a float16
checkpoint (so bf16 and fp32 both convert, reading whole tensors) whose tensors are
larger than the read buffer (shrunk to 4 KiB in the exporting process). Each Hub export
equals the local export of the same dtype byte for byte (issue 25: a converted export
from a complete cached snapshot repeated the last 16 MiB chunk of every larger tensor).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from fastmtp_export.checkpoints.synthetic import TINY, mimo_config, write_synthetic_mimo

from ..conftest import export_cli, tree_digest
from .fake_hub import FakeHub

REPO = "bob/mimo-f16"
#: the exporting process's read buffer: smaller than every MTP weight matrix (16 KiB)
SMALL_CHUNK = 4096
#: runs ``export`` once per argument list (argv[1], JSON) in one process, with the read
#: buffer shrunk (the module constant, set before anything reads); exits 1 on a failure
CLI = f"""
import json, sys
import fastmtp_export.checkpoints.safetensors_io as s
s.CHUNK_BYTES = {SMALL_CHUNK}
from typer.testing import CliRunner
from fastmtp_export.cli import app
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(app, args)
    if r.exit_code:
        sys.exit(f"{{args}}: {{r.output}}")
"""
DTYPES = {"keep": (), "bf16": ("--dtype", "bf16"), "fp32": ("--dtype", "fp32")}
#: the manifest and card say where the draft came from; everything else must match
PROVENANCE = ("fastmtp.json", "README.md")


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("matrix") / "release"
    return write_synthetic_mimo(root, mimo_config(TINY), num_shards=2, dtype="float16")


@pytest.fixture(scope="module")
def hub(release: Path) -> Iterator[FakeHub]:
    with FakeHub() as h:
        h.add_model(REPO, {p.name: p.read_bytes() for p in release.iterdir() if p.is_file()})
        yield h


def _env(hub: FakeHub, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "FASTMTP_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return env


def _export_all(hub: FakeHub, home: Path, outs: dict[str, Path], **extra: str) -> None:
    """``export REPO --out OUT --dtype D`` for every ``D -> OUT``, in one process."""
    runs = [["export", REPO, "--out", str(out), "-q", *DTYPES[d]] for d, out in outs.items()]
    r = subprocess.run(
        [sys.executable, "-c", CLI, json.dumps(runs)],
        env=_env(hub, home, **extra), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def _weights(root: Path) -> dict[str, str]:
    return {k: v for k, v in tree_digest(root).items() if k not in PROVENANCE}


@pytest.fixture(scope="module")
def local(release: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("local")
    return {d: export_cli(release, root / d, *args) for d, args in DTYPES.items()}


def test_the_local_conversions_are_what_torch_gives(local: dict[str, Path]) -> None:
    """The reference itself, checked through safetensors: converting the kept tensors."""
    with safe_open(str(local["keep"] / "model.safetensors"), framework="pt") as keep:
        kept = {n: keep.get_tensor(n) for n in keep.keys()}  # noqa: SIM118
    assert max(t.numel() * t.element_size() for t in kept.values()) > SMALL_CHUNK
    for dtype, torch_dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        with safe_open(str(local[dtype] / "model.safetensors"), framework="pt") as fh:
            assert set(fh.keys()) == set(kept)
            for name, t in kept.items():
                assert torch.equal(fh.get_tensor(name), t.to(torch_dtype)), (dtype, name)


def test_every_source_gives_the_local_draft_for_every_dtype(
    hub: FakeHub, local: dict[str, Path], tmp_path: Path
) -> None:
    ranged, full = tmp_path / "hf-ranged", tmp_path / "hf-full"
    # the whole snapshot in the cache, as `hf download` leaves it
    code = f"from huggingface_hub import snapshot_download; snapshot_download({REPO!r})"
    subprocess.run([sys.executable, "-c", code], env=_env(hub, full), check=True, timeout=120)
    for source, home, extra in (
        ("ranged", ranged, {}),
        ("cached", full, {}),
        ("offline", full, {"HF_HUB_OFFLINE": "1"}),
    ):
        before = len(hub.served)
        outs = {dtype: tmp_path / f"{source}-{dtype}" for dtype in DTYPES}
        _export_all(hub, home, outs, **extra)
        for dtype, out in outs.items():
            assert _weights(out) == _weights(local[dtype]), (source, dtype)
        served = [p for p, n in hub.served[before:] if p.endswith(".safetensors") and n]
        if source == "ranged":
            assert served, "the ranged export read no byte range"
        else:
            assert served == [], (source, "read shard bytes from the Hub")
