"""``fastmtp-export export ORG/NAME[@REV]`` against a local Hub over real HTTP.

The CLI runs as a real subprocess with ``HF_ENDPOINT`` pointing at tests/hub/fake_hub.py
and its own ``HF_HOME`` (cache), so huggingface_hub's real client resolves the revision,
downloads the small files into its cache and fetches the MTP tensors by byte range.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastmtp_export.checkpoints.checkpoint import SourceCheckpoint
from fastmtp_export.checkpoints.hub_source import _bounded_metadata_retry
from fastmtp_export.checkpoints.hub_transfer import RANGE_RETRIES
from fastmtp_export.checkpoints.readers import resolve_reader
from fastmtp_export.checkpoints.synthetic import (
    TINY,
    mimo_config,
    write_synthetic,
    write_synthetic_mimo,
)

from ..checkpoints.families import DEEPSEEK_V3_FP8, FP8_BLOCK
from ..conftest import export_cli, nothing_written, tree_digest
from .fake_hub import GOOD_TOKEN, FakeHub

REPO = "bob/mimo-tiny"


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as h:
        yield h


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A 4-shard tiny MiMo release with two MTP layers, its card and generation config."""
    src = write_synthetic_mimo(
        tmp_path / "release", mimo_config(TINY, num_mtp_layers=2), num_shards=4
    )
    (src / "generation_config.json").write_text(json.dumps({"eos_token_id": 255}))
    (src / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    return src


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def _export(hub_url: str, home: Path, *args: str, **env: str) -> Any:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "FASTMTP_"))}
    clean.update(HF_ENDPOINT=hub_url, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1")
    clean.update(FASTMTP_HUB_RETRY_WAIT="0.01")  # resume at once (tests stay fast)
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "fastmtp_export", "export", *args],
        env=clean, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _one_line_error(r: Any, *needles: str) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: "), r.stderr
    assert [x for x in lines if x.startswith("error: ")] == lines[-1:]
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]


def _mtp_bytes(release: Path) -> int:
    ckpt = SourceCheckpoint.open(release)
    plan = resolve_reader(ckpt).plan(ckpt, None)
    return sum(i.nbytes for i in plan.tensors.values())


def test_reads_only_the_mtp_ranges_and_matches_a_local_export(
    hub: FakeHub, release: Path, tmp_path: Path
) -> None:
    sha = hub.add_model(REPO, _files(release))
    out = tmp_path / "from-hub"
    r = _export(hub.url, tmp_path / "hf", REPO, "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    local = export_cli(release, tmp_path / "local")
    # the same draft, byte for byte (the manifest and card say where it came from)
    same = {k: v for k, v in tree_digest(out).items() if k not in ("fastmtp.json", "README.md")}
    assert same == {
        k: v for k, v in tree_digest(local).items() if k not in ("fastmtp.json", "README.md")
    }
    manifest = json.loads((out / "fastmtp.json").read_text())
    assert manifest["source"]["repo_id"] == REPO
    assert manifest["source"]["revision"] == sha
    card = (out / "README.md").read_text()
    assert f"base_model: {REPO}" in card
    assert f"- Source: `{REPO}` at `{sha}`" in card
    # bytes served: the MTP tensors, plus 8 bytes and a header per shard holding them
    shards = _files(release)
    weights = {k: v for k, v in shards.items() if k.endswith(".safetensors")}
    small = {"config.json", "model.safetensors.index.json", "generation_config.json", "README.md"}
    served = dict.fromkeys(shards, 0)
    for path, n in hub.served:
        served[path.removeprefix(REPO + "/")] += n
    assert {k for k, v in served.items() if v} <= set(weights) | small
    headers = sum(8 + int.from_bytes(weights[s][:8], "little") for s in weights)
    ranged = sum(served[s] for s in weights)
    assert _mtp_bytes(release) <= ranged <= _mtp_bytes(release) + headers
    assert ranged < sum(len(b) for b in weights.values()) / 2
    assert doc["bytes_read"] == ranged
    assert doc["source_bytes"] == sum(len(b) for b in weights.values())
    assert doc["repo_id"] == REPO


def test_a_revision_pins_the_commit_and_a_missing_one_is_refused(
    hub: FakeHub, release: Path, tmp_path: Path
) -> None:
    sha = hub.add_model(REPO, _files(release))
    out = tmp_path / "pinned"
    r = _export(hub.url, tmp_path / "hf", f"{REPO}@{sha}", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "fastmtp.json").read_text())["source"]["revision"] == sha
    missing = tmp_path / "missing"
    r = _export(hub.url, tmp_path / "hf", REPO, "--revision", "v9", "--out", str(missing))
    _one_line_error(r, "revision 'v9' does not exist in bob/mimo-tiny")
    nothing_written(missing)


def test_a_missing_repo_and_a_gated_one_without_a_token_are_one_line(
    hub: FakeHub, release: Path, tmp_path: Path
) -> None:
    hub.add_model("bob/gated", _files(release), gated=True)
    out = tmp_path / "d"
    r = _export(hub.url, tmp_path / "hf", "bob/nope", "--out", str(out))
    _one_line_error(r, "bob/nope was not found on the Hub", "HF_TOKEN")
    nothing_written(out)
    r = _export(hub.url, tmp_path / "hf", "bob/gated", "--out", str(out))
    _one_line_error(r, "bob/gated is gated", "HF_TOKEN")
    nothing_written(out)
    r = _export(hub.url, tmp_path / "hf", "bob/gated", "--out", str(out), HF_TOKEN=GOOD_TOKEN)
    assert r.returncode == 0, r.stderr


def test_a_transfer_cut_every_time_gives_up_and_writes_nothing(
    hub: FakeHub, release: Path, tmp_path: Path
) -> None:
    hub.add_model(REPO, _files(release))
    hub.cut_ranges_after = 100  # every ranged GET stops after 100 bytes
    out = tmp_path / "d"
    r = _export(hub.url, tmp_path / "hf", REPO, "--out", str(out))
    _one_line_error(r, f"failed {RANGE_RETRIES + 1} times", "nothing was written",
                    "run the export again")  # fmt: skip
    nothing_written(out)


def _ranges(hub: FakeHub) -> list[tuple[str, int, int]]:
    """(file, first, last) of every ranged GET, in order."""
    out = []
    for q in hub.requests:
        if q.method == "GET" and q.range:
            first, last = q.range.removeprefix("bytes=").split("-")
            out.append((q.path.rsplit("/", 1)[-1], int(first), int(last)))
    return out


def test_a_transfer_cut_once_resumes_from_the_byte_reached(
    hub: FakeHub, release: Path, tmp_path: Path
) -> None:
    hub.add_model(REPO, _files(release))
    clean = tmp_path / "clean"
    assert _export(hub.url, tmp_path / "hf0", REPO, "--out", str(clean)).returncode == 0
    uncut = sum(n for _, n in hub.served)
    hub.served.clear()
    hub.requests.clear()
    hub.cut_ranges_after, hub.cut_times = 100, 1  # the first ranged GET stops after 100
    out = tmp_path / "resumed"
    r = _export(hub.url, tmp_path / "hf1", REPO, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert tree_digest(out) == tree_digest(clean)
    ranges = _ranges(hub)
    cut = next(i for i, (_, a, b) in enumerate(ranges) if b - a + 1 > 100)
    shard, first, last = ranges[cut]
    assert ranges[cut + 1] == (shard, first + 100, last)  # resumed, not restarted
    assert hub.cuts == 1
    assert sum(n for _, n in hub.served) == uncut  # not one byte fetched twice


def test_a_5xx_is_retried_and_a_4xx_is_not(hub: FakeHub, release: Path, tmp_path: Path) -> None:
    hub.add_model(REPO, _files(release))
    hub.fail_ranges = (503, 2)
    out = tmp_path / "after-503"
    r = _export(hub.url, tmp_path / "hf", REPO, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert hub.range_gets > 2
    hub.fail_ranges, hub.range_gets = (403, 1), 0
    out = tmp_path / "after-403"
    r = _export(hub.url, tmp_path / "hf", REPO, "--out", str(out))
    _one_line_error(r, "(403)")
    assert hub.range_gets == 1  # never retried
    nothing_written(out)


@pytest.mark.parametrize("sha", ["../../../../escape", "A" * 40, "", "0" * 39])
def test_a_commit_id_that_is_not_40_hex_is_refused_before_any_use(
    hub: FakeHub, release: Path, tmp_path: Path, sha: str
) -> None:
    hub.add_model(REPO, _files(release))
    hub.sha_override = sha
    out, home = tmp_path / "d", tmp_path / "hf"
    r = _export(hub.url, home, REPO, "--out", str(out))
    _one_line_error(r, "not a 40-digit hex commit", "HF_ENDPOINT")
    nothing_written(out)
    assert not any(p.is_file() for p in home.rglob("*")) if home.exists() else True
    assert not [p for p in tmp_path.rglob("escape*")]
    assert [q.path for q in hub.requests if "/resolve/" in q.path] == []


def _with_index(release: Path, index: object) -> dict[str, bytes]:
    files = _files(release)
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    return files


@pytest.mark.parametrize(
    ("index", "needle"),
    [
        ({"weight_map": 5}, "is not a safetensors index"),
        ({"metadata": {}}, "is not a safetensors index"),
        ({"weight_map": {"model.mtp_layers.0.norm.weight": 5}}, "is not a safetensors index"),
        ([1, 2], "is not a JSON object"),
        ({"weight_map": {"model.norm.weight": "../../../secret.safetensors"}}, "unusable file"),
        ({"weight_map": {"model.norm.weight": "/etc/passwd"}}, "unusable file"),
    ],
)
def test_a_malformed_remote_index_is_one_line(
    hub: FakeHub, release: Path, tmp_path: Path, index: object, needle: str
) -> None:
    files = _with_index(release, index)
    files["../../../secret.safetensors"] = b"x" * 64  # listed by the server, so sized
    hub.add_model(REPO, files)
    out = tmp_path / "d"
    r = _export(hub.url, tmp_path / "hf", REPO, "--out", str(out))
    _one_line_error(r, needle)
    nothing_written(out)


def test_a_reply_for_another_range_is_refused(hub: FakeHub, release: Path, tmp_path: Path) -> None:
    hub.add_model(REPO, _files(release))
    hub.range_shift = 8  # asked bytes 0-7, answered (and declared) bytes 8-15
    out = tmp_path / "d"
    r = _export(hub.url, tmp_path / "hf", REPO, "--out", str(out))
    _one_line_error(r, "Content-Range 'bytes 8-15/", "refused, nothing was written")
    nothing_written(out)
    assert hub.range_gets == 1


def test_a_reply_longer_than_asked_is_refused_as_it_arrives(
    hub: FakeHub, release: Path, tmp_path: Path
) -> None:
    hub.add_model(REPO, _files(release))
    hub.oversize_ranges = 256 << 20  # the 8-byte length of a header, then 256 MiB
    out = tmp_path / "d"
    r = _export(hub.url, tmp_path / "hf", REPO, "--out", str(out))
    _one_line_error(r, "sent more than the 8 bytes asked for", "refused, nothing was written")
    nothing_written(out)
    # the client hung up: the rest never left the server (socket buffers hold a few MiB)
    assert hub.oversize_sent < 64 << 20


@pytest.mark.parametrize("where", ["all", "ranges"])
def test_a_hub_that_never_answers_times_out_in_one_line(
    hub: FakeHub, release: Path, tmp_path: Path, where: str
) -> None:
    hub.add_model(REPO, _files(release))
    hub.hang = where
    out = tmp_path / "d"
    start = time.monotonic()
    r = _export(hub.url, tmp_path / "hf", REPO, "--out", str(out), FASTMTP_HUB_TIMEOUT="0.5")
    took = time.monotonic() - start
    if where == "all":  # model_info: one request, no retry
        _one_line_error(r, "cannot reach the Hub", "0.5 s timeout", "FASTMTP_HUB_TIMEOUT")
    else:  # every try of the first range times out, then it gives up
        _one_line_error(r, f"failed {RANGE_RETRIES + 1} times", "ReadTimeout")
        assert len(_ranges(hub)) == RANGE_RETRIES + 1
    nothing_written(out)
    assert took < 30, took  # the CLI's start-up (a few s here) + 6 x 0.5 s + backoff


@pytest.mark.parametrize("source", ["./bob/mimo-tiny", "../bob/mimo-tiny", "/bob/mimo-tiny",
                                    "~/bob/mimo-tiny"])  # fmt: skip
def test_a_source_written_as_a_path_never_reaches_the_hub(
    hub: FakeHub, release: Path, tmp_path: Path, source: str
) -> None:
    hub.add_model(REPO, _files(release))
    out = tmp_path / "d"
    r = _export(hub.url, tmp_path / "hf", source, "--out", str(out))
    _one_line_error(r, "mimo-tiny does not exist", "local checkpoint directory")
    assert hub.requests == []
    nothing_written(out)


def test_a_repo_id_shaped_source_names_both_the_directory_and_the_hub(
    hub: FakeHub, tmp_path: Path
) -> None:
    out = tmp_path / "d"
    r = _export(hub.url, tmp_path / "hf", "checkpoints/acme-model", "--out", str(out))
    _one_line_error(r, "no local directory checkpoints/acme-model, and checkpoints/acme-model "
                    f"was not found on the Hub at {hub.url}")  # fmt: skip
    nothing_written(out)


def test_offline_reads_a_fully_cached_snapshot_and_refuses_a_partial_one(
    hub: FakeHub, release: Path, tmp_path: Path
) -> None:
    sha = hub.add_model(REPO, _files(release))
    home = tmp_path / "hf"
    # a ranged export caches only the small files: offline, that is not enough
    assert _export(hub.url, home, REPO, "--out", str(tmp_path / "first")).returncode == 0
    out = tmp_path / "offline"
    r = _export(hub.url, home, REPO, "--out", str(out), HF_HUB_OFFLINE="1")
    _one_line_error(r, "HF_HUB_OFFLINE is set", "download it first")
    nothing_written(out)
    # the whole snapshot in the cache (as `hf download` leaves it): offline works
    from huggingface_hub import snapshot_download  # noqa: F401  (imported for its env below)

    code = f"from huggingface_hub import snapshot_download; snapshot_download({REPO!r})"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    served = len(hub.served)
    r = _export(hub.url, home, REPO, "--out", str(out), HF_HUB_OFFLINE="1")
    assert r.returncode == 0, r.stderr
    assert len(hub.served) == served  # not one byte from the Hub
    assert json.loads((out / "fastmtp.json").read_text())["source"]["revision"] == sha
    # a cached ref holding a path or a name instead of a commit id chooses no folder
    cache = home / "hub" / f"models--{REPO.replace('/', '--')}"
    shutil.copytree(cache / "snapshots" / sha, cache / "snapshots" / "evil", symlinks=True)
    (cache / "refs" / "main").write_text("evil")
    tampered = tmp_path / "tampered"
    r = _export(hub.url, home, REPO, "--out", str(tampered), HF_HUB_OFFLINE="1")
    _one_line_error(r, "cache's ref for bob/mimo-tiny points at", "evil'", "40-digit hex")
    nothing_written(tampered)


def test_revision_with_a_local_directory_or_twice_is_refused(release: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    r = _export("http://127.0.0.1:9", tmp_path / "hf", str(release), "--revision", "v1",
                "--out", str(out))  # fmt: skip
    _one_line_error(r, "--revision applies to a Hub repo id", "drop --revision")
    r = _export("http://127.0.0.1:9", tmp_path / "hf", f"{REPO}@v1", "--revision", "v2",
                "--out", str(out))  # fmt: skip
    _one_line_error(r, "names revision v1 and --revision says v2")
    r = _export("http://127.0.0.1:9", tmp_path / "hf", REPO, "--out", str(out))
    _one_line_error(r, "no local directory bob/mimo-tiny, and cannot reach the Hub at "
                    "http://127.0.0.1:9", "HF_ENDPOINT")  # fmt: skip
    nothing_written(out)


def test_huggingface_hubs_own_metadata_retry_is_bounded_too() -> None:
    """hf_hub_download retries a timed-out metadata request with a fixed 60 s timeout; the
    export lowers that module constant while it downloads (it must still exist)."""
    from huggingface_hub import file_download

    before = file_download._ETAG_RETRY_TIMEOUT
    assert isinstance(before, int | float)
    assert before > 0.5
    with _bounded_metadata_retry(0.5):
        inside = file_download._ETAG_RETRY_TIMEOUT
    assert inside == 0.5
    assert file_download._ETAG_RETRY_TIMEOUT is before


def test_an_fp8_release_exports_over_http_as_it_does_locally(hub: FakeHub, tmp_path: Path) -> None:
    """DeepSeek-V3 as released (block FP8): the scales come by byte range too, and the
    dequantization streams the ranged weight bytes."""
    release = write_synthetic(
        tmp_path / "fp8", "deepseek_v3", DEEPSEEK_V3_FP8, fp8_block=FP8_BLOCK, num_shards=3
    )
    hub.add_model("deepseek/tiny-fp8", _files(release))
    for dtype in ("bf16", "keep"):
        out = tmp_path / f"hub-{dtype}"
        r = _export(
            hub.url, tmp_path / "hf", "deepseek/tiny-fp8", "--out", str(out), "--dtype", dtype
        )
        assert r.returncode == 0, r.stderr
        local = export_cli(release, tmp_path / f"local-{dtype}", "--dtype", dtype)
        skip = ("fastmtp.json", "README.md")
        assert {k: v for k, v in tree_digest(out).items() if k not in skip} == {
            k: v for k, v in tree_digest(local).items() if k not in skip
        }
