"""Export round trips on tiny synthetic MiMo checkpoints."""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from fastmtp_export.artifact.export import export_draft
from fastmtp_export.checkpoints.checkpoint import LocalShards
from fastmtp_export.checkpoints.synthetic import TINY, mimo_config, write_synthetic_mimo
from fastmtp_export.evaluate.reference import load_artifact_weights

from ..conftest import source_tensors, tree_digest

GOLDEN = Path(__file__).parents[1] / "golden"
MTP = "model.mtp_layers.0."


def _source_tensors(src: Path, prefix: str) -> dict[str, torch.Tensor]:
    return source_tensors(src, lambda name: name.startswith(prefix))


def _draft_tensors(out: Path) -> dict[str, torch.Tensor]:
    for f in sorted(out.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            assert fh.metadata() == {"format": "pt"}
    return load_artifact_weights(out)


def test_tensors_round_trip_bit_identical(tiny_source: Path, tmp_path: Path) -> None:
    before = tree_digest(tiny_source)
    export_draft(tiny_source, tmp_path / "draft")
    src = _source_tensors(tiny_source, MTP)
    dst = _draft_tensors(tmp_path / "draft")
    assert len(src) == 16
    assert dst.keys() == src.keys()
    for k, t in src.items():
        assert dst[k].dtype == t.dtype
        assert torch.equal(dst[k].view(torch.int16), t.view(torch.int16)), k  # bitwise
    assert tree_digest(tiny_source) == before  # the source is never modified


def test_config_json_matches_golden(tiny_source: Path, tmp_path: Path) -> None:
    export_draft(tiny_source, tmp_path / "draft")
    got = (tmp_path / "draft" / "config.json").read_text()
    assert got == (GOLDEN / "mimo_tiny_draft_config.json").read_text()


def test_manifest_matches_golden(tiny_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "draft"
    export_draft(tiny_source, out)
    expected = (GOLDEN / "mimo_tiny_fastmtp.json").read_text()
    for name in ("config.json", "model.safetensors"):
        data = (out / name).read_bytes()
        expected = expected.replace(f"<sha256:{name}>", hashlib.sha256(data).hexdigest())
        expected = expected.replace(f"<size:{name}>", str(len(data)))
    src_cfg = (tiny_source / "config.json").read_bytes()
    expected = expected.replace("<sha256:source/config.json>", hashlib.sha256(src_cfg).hexdigest())
    expected = expected.replace("<source>", tiny_source.name)  # the name, never the path
    expected = expected.replace("<version>", version("fastmtp-export"))
    assert (out / "fastmtp.json").read_text() == expected
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "fastmtp.json",
        "model.safetensors",
    ]


def test_reads_only_mtp_tensors(
    tiny_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spy on every byte range read: all of them must be MTP tensors."""
    read: list[tuple[str, int, int]] = []
    real = LocalShards.chunks

    def spy(self: LocalShards, shard: str, begin: int, nbytes: int):
        read.append((shard, begin, nbytes))
        return real(self, shard, begin, nbytes)

    monkeypatch.setattr(LocalShards, "chunks", spy)
    export_draft(tiny_source, tmp_path / "draft")
    from fastmtp_export.checkpoints.checkpoint import SourceCheckpoint

    ckpt = SourceCheckpoint.open(tiny_source)
    where = {}
    for name, shard in ckpt.weight_map.items():
        info = ckpt.tensor(name)
        where[(shard, info.begin, info.nbytes)] = name
    names = sorted(where[r] for r in read)
    assert len(names) == 16
    assert all(n.startswith(MTP) for n in names)
    assert {r[0] for r in read} == {
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    }  # the head really spans both shards


def test_sharded_output_has_index(tiny_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "draft"
    export_draft(tiny_source, out, max_shard_bytes=20_000)
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    tensors = _draft_tensors(out)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in tensors.values()
    )
    for name, shard in index["weight_map"].items():
        with safe_open(str(out / shard), framework="pt") as fh:
            assert name in fh.keys()  # noqa: SIM118
    assert index["weight_map"].keys() == tensors.keys()


@pytest.mark.parametrize(("flag", "dtype"), [("fp32", torch.float32), ("fp16", torch.float16)])
def test_dtype_conversion(tiny_source: Path, tmp_path: Path, flag: str, dtype: torch.dtype) -> None:
    out = tmp_path / "draft"
    result = export_draft(tiny_source, out, dtype=flag)
    src = _source_tensors(tiny_source, MTP)
    dst = _draft_tensors(out)
    for k, t in src.items():
        assert dst[k].dtype == dtype
        assert torch.equal(dst[k], t.to(dtype)), k
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["torch_dtype"] == str(dtype).removeprefix("torch.")
    assert result.manifest.dtype == cfg["torch_dtype"]


def test_selects_requested_mtp_layer(tmp_path: Path) -> None:
    src = write_synthetic_mimo(tmp_path / "src", mimo_config(TINY, num_mtp_layers=3), num_shards=3)
    export_draft(src, tmp_path / "draft", mtp_layer=2)
    layer2 = _source_tensors(src, "model.mtp_layers.2.")
    dst = _draft_tensors(tmp_path / "draft")
    assert dst.keys() == {k.replace("mtp_layers.2.", "mtp_layers.0.") for k in layer2}
    for k, t in layer2.items():
        assert torch.equal(dst[k.replace("mtp_layers.2.", "mtp_layers.0.")], t)
    manifest = json.loads((tmp_path / "draft" / "fastmtp.json").read_text())
    assert manifest["source"]["mtp_layer"] == 2
    assert manifest["source"]["available_mtp_layers"] == [0, 1, 2]


def test_single_file_source(tmp_path: Path) -> None:
    """A non-sharded source (plain model.safetensors, no index) exports the same."""
    sharded = write_synthetic_mimo(tmp_path / "sharded", mimo_config(TINY), num_shards=2)
    single = tmp_path / "single"
    single.mkdir()
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for shard in sharded.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as fh:
            tensors.update({k: fh.get_tensor(k) for k in fh.keys()})  # noqa: SIM118
    save_file(tensors, str(single / "model.safetensors"), metadata={"format": "pt"})
    (single / "config.json").write_bytes((sharded / "config.json").read_bytes())
    export_draft(single, tmp_path / "a")
    export_draft(sharded, tmp_path / "b")
    a, b = _draft_tensors(tmp_path / "a"), _draft_tensors(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_overwrite_replaces_previous_artifact(tiny_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "draft"
    export_draft(tiny_source, out, dtype="fp32")
    export_draft(tiny_source, out, overwrite=True)
    assert json.loads((out / "fastmtp.json").read_text())["dtype"] == "bfloat16"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_progress_goes_to_stderr_only(
    tiny_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export_draft(tiny_source, tmp_path / "draft", progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "writing draft" in captured.err
    assert "100%" in captured.err
