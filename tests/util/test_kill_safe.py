"""An export killed with SIGKILL at any instant leaves a complete artifact at ``--out``.

``--out`` always names the previous artifact or the new one, never nothing and never
a partial tree; the next run removes what the killed one left behind. The kills are
real (``kill -9`` of an export subprocess at several points of a multi-shard export);
the fallback swap's repair is driven directly, since the kernel here has the atomic
exchange and a kill cannot be aimed between two renames.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastmtp_export._util import atomic
from fastmtp_export._util.atomic import atomic_directory
from fastmtp_export.checkpoints.synthetic import TINY, mimo_config, write_synthetic_mimo
from fastmtp_export.errors import OutputError

from ..conftest import tree_digest


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MiMo checkpoint whose MTP head is ~100 MB (fp32), so an export takes a while."""
    shape = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 8,
             "num_key_value_heads": 2, "head_dim": 128}  # fmt: skip
    cfg = mimo_config({**TINY, **shape})
    cfg["torch_dtype"] = "float32"
    return write_synthetic_mimo(tmp_path_factory.mktemp("big") / "src", cfg, seed=0, num_shards=3)


def _export(src: Path, out: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fastmtp_export", "export", str(src), "--out", str(out), "-q",
         "--max-shard-size", "20MB", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_kill_9_at_any_point_leaves_the_old_or_the_new_artifact(
    big_source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "draft"
    assert _export(big_source, out, "--dtype", "bf16").wait(timeout=300) == 0
    old = tree_digest(out)
    proc = _export(big_source, tmp_path / "reference", "--dtype", "fp32")
    start = time.monotonic()
    assert proc.wait(timeout=300) == 0
    full = time.monotonic() - start
    new = tree_digest(tmp_path / "reference")
    new.pop("fastmtp.json")  # it records the output path, which differs here
    new.pop("README.md")
    seen = set()
    for share in (0.15, 0.35, 0.55, 0.7, 0.8, 0.9, 0.97):
        proc = _export(big_source, out, "--dtype", "fp32", "--overwrite")
        time.sleep(full * share)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert out.is_dir(), share  # never a moment without an artifact
        now = tree_digest(out)
        if now == old:
            seen.add("old")
        else:
            assert {k: v for k, v in now.items() if k in new} == new, share
            assert set(now) == set(new) | {"fastmtp.json", "README.md"}, share
            seen.add("new")
            out_doc = json.loads((out / "fastmtp.json").read_text())
            assert out_doc["dtype"] == "float32"
            break  # the new one is in place: later kills would only see it again
    assert "old" in seen  # the kills did land before the publish
    # the next run cleans up what the killed runs left behind
    assert _export(big_source, out, "--dtype", "bf16", "--overwrite").wait(timeout=300) == 0
    assert tree_digest(out) == old
    assert _leftovers(out) == []


def test_a_kill_between_the_fallback_renames_is_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the exchange is missing, the swap is two renames; the state a kill between
    them leaves (the old tree aside, no --out) is put back by the next run."""
    out = tmp_path / "draft"
    with atomic_directory(out, overwrite=False) as tmp:
        (tmp / "a.txt").write_text("old")
    aside = tmp_path / f".{out.name}.old-killed"
    aside.mkdir()
    out.rename(aside / out.name)  # where the first rename put it; the kill came next
    (tmp_path / f".{out.name}.tmp-killed").mkdir()  # the new tree, never published
    with pytest.raises(RuntimeError), atomic_directory(out, overwrite=True):
        raise RuntimeError("the next run fails too: the old tree must still be back")
    assert (out / "a.txt").read_text() == "old"
    assert _leftovers(out) == []
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # force the fallback swap
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("new")
    assert (out / "a.txt").read_text() == "new"
    assert _leftovers(out) == []


def test_a_running_export_is_never_cleaned_up_by_another(tmp_path: Path) -> None:
    """A second run into the same place while one is live is refused (the run lock), and
    the live run's directory survives it."""
    out = tmp_path / "draft"
    with atomic_directory(out, overwrite=False) as first:
        (first / "x").write_text("1")
        with (
            pytest.raises(OutputError, match="another run is writing --out"),
            atomic_directory(tmp_path / "draft", overwrite=True),
        ):
            pass
        assert (first / "x").exists()  # held by the outer run: not removed
    assert (out / "x").read_text() == "1"
    assert _leftovers(out) == []
