"""The plugin's fetch of a repo-id draft, against the local Hub over real HTTP.

In-process, with huggingface_hub pointed at tests/hub/fake_hub.py: the revision is
resolved to a commit that is checked before use, every file is fetched by that commit,
the manifest before any map and only the maps it lists, a shared snapshot is read in
place only when complete, and a Hub that never answers costs a bounded wait at start-up
and none at all on the request path.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fastmtp_export.artifact.export import export_draft
from fastmtp_export.errors import FastMTPError
from fastmtp_export.maps.token_map import save_token_map
from sglang_patch import draft_source, hooks
from sglang_patch.hooks import detect

from ..hub.fake_hub import FakeHub

REPO = "bob/draft"


class MisbehavingHub(FakeHub):
    """The local Hub, plus: ``hang`` (requests whose path starts with it accept the
    connection and answer nothing until released) and ``sha`` (the commit id
    ``model_info`` answers with)."""

    def __init__(self) -> None:
        super().__init__()
        self.hang: str | None = None
        self.release = threading.Event()
        self.sha: str | None = None

    def _serve(self, h: Any, method: str) -> None:
        if self.hang is not None and h.path.startswith(self.hang):
            self.release.wait(60)
        super()._serve(h, method)

    def _model_info(self, path: str) -> tuple[int, dict[str, Any]] | None:
        found = super()._model_info(path)
        if found is not None and self.sha is not None and "sha" in found[1]:
            found[1]["sha"] = self.sha
        return found

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        super().__exit__(*exc)


@pytest.fixture
def artifact(tmp_path: Path, tiny_source: Path) -> Path:
    """An exported draft with maps for en and zh."""
    eos = json.loads((tiny_source / "config.json").read_text())["eos_token_id"]
    save_token_map(tmp_path / "en.pt", [eos, 1, 2])
    save_token_map(tmp_path / "zh.pt", [eos, 3, 4])
    art = tmp_path / "art"
    maps = [f"en={tmp_path / 'en.pt'}", f"zh={tmp_path / 'zh.pt'}"]
    export_draft(tiny_source, art, token_map=maps, default_lang="en")
    return art


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MisbehavingHub]:
    """The local Hub, with huggingface_hub in this process pointed at it, an empty cache
    and a 1-second FASTMTP_HUB_TIMEOUT."""
    import huggingface_hub.constants as hf

    h = MisbehavingHub()
    with h:
        monkeypatch.setattr(hf, "ENDPOINT", h.url)
        monkeypatch.setattr(
            hf, "HUGGINGFACE_CO_URL_TEMPLATE", h.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hf, "HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
        monkeypatch.setenv("FASTMTP_HUB_TIMEOUT", "1")
        draft_source.forget_fetches()
        detect._detectors.clear()
        monkeypatch.setattr(detect, "_pending_said", False)
        yield h
        draft_source.forget_fetches()
        detect._detectors.clear()


def _files(art: Path, **extra: bytes) -> dict[str, bytes]:
    return {**{p.name: p.read_bytes() for p in art.iterdir()}, **extra}


def _fetched(hub: FakeHub) -> list[tuple[str, str]]:
    """(revision, file) of every GET of a file."""
    got = []
    for r in hub.requests:
        if "/resolve/" in r.path and r.method == "GET":
            rev, name = r.path.split("/resolve/", 1)[1].split("/", 1)
            got.append((rev, name))
    return got


def _maps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.pt"))


def test_files_are_fetched_by_one_checked_commit_manifest_first(
    hub: MisbehavingHub, artifact: Path
) -> None:
    oid = hub.add_model(REPO, _files(artifact, **{"stray.pt": b"not listed"}))
    folder = draft_source.resolve_draft(REPO)
    assert folder is not None
    assert folder.parent.name == "snapshots"
    assert folder.name == oid
    assert folder.is_relative_to(draft_source.private_cache())
    got = _fetched(hub)
    assert {rev for rev, _ in got} == {oid}  # never the branch name
    names = [name for _, name in got]
    assert names[:2] == ["config.json", "fastmtp.json"]
    assert sorted(names[2:]) == _maps(artifact) == ["freq_en_3.pt", "freq_zh_3.pt"]
    assert "stray.pt" not in names
    assert "model.safetensors" not in names
    assert _maps(folder) == _maps(artifact)
    # offline later (a fresh process): the branch is found in the plugin's own cache
    import huggingface_hub.constants as hf

    before = len(hub.requests)
    draft_source.forget_fetches()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(hf, "HF_HUB_OFFLINE", True)
        assert draft_source.resolve_draft(REPO) == folder
    assert len(hub.requests) == before


@pytest.mark.parametrize("sha", ["../../../../escaped", "main", "A" * 40, ""])
def test_a_commit_id_that_is_not_40_hex_digits_is_refused(
    hub: MisbehavingHub, artifact: Path, sha: str
) -> None:
    hub.add_model(REPO, _files(artifact))
    hub.sha = sha
    with pytest.raises(FastMTPError, match="not a 40-digit hex commit"):
        draft_source.resolve_draft(REPO)
    assert _fetched(hub) == []  # nothing fetched with it
    home = draft_source.private_cache().parent
    assert not (home / "escaped").exists()
    assert not list(home.rglob("escaped"))


def test_a_repo_that_is_not_an_artifact_has_no_pt_file_fetched(
    hub: MisbehavingHub, artifact: Path
) -> None:
    files = _files(artifact)
    del files["fastmtp.json"]
    hub.add_model(REPO, files)
    folder = draft_source.resolve_draft(REPO)
    assert folder is not None
    assert not (folder / "fastmtp.json").exists()
    assert [name for _, name in _fetched(hub)] == ["config.json"]
    reason = hooks.guard.idle_reason(REPO)
    assert reason is not None
    assert "has no fastmtp.json" in reason.message


def _shared(oid: str, art: Path, names: list[str]) -> Path:
    import huggingface_hub.constants as hf

    folder = Path(hf.HF_HUB_CACHE) / f"models--{REPO.replace('/', '--')}" / "snapshots" / oid
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes((art / name).read_bytes())
    refs = folder.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text(oid)
    return folder


def test_a_shared_snapshot_without_the_maps_is_not_read_in_place(
    hub: MisbehavingHub, artifact: Path
) -> None:
    """The shared snapshot holds manifest, config and weights (what SGLang downloads)
    but not the maps: the maps go to the plugin's cache, the shared one is left alone."""
    oid = hub.add_model(REPO, _files(artifact))
    shared = _shared(oid, artifact, ["config.json", "fastmtp.json", "model.safetensors"])
    folder = draft_source.resolve_draft(REPO)
    assert folder is not None
    assert folder != shared
    assert folder.is_relative_to(draft_source.private_cache())
    assert _maps(folder) == _maps(artifact)
    assert _maps(shared) == []
    assert hooks.guard.idle_reason(REPO) is None  # the maps are usable


def test_a_complete_shared_snapshot_is_read_in_place(hub: MisbehavingHub, artifact: Path) -> None:
    oid = hub.add_model(REPO, _files(artifact))
    shared = _shared(oid, artifact, sorted(p.name for p in artifact.iterdir()))
    assert draft_source.resolve_draft(REPO) == shared
    assert _fetched(hub) == []  # only model_info, for the commit


def test_the_guard_pins_sglangs_weights_to_the_commit_of_the_maps(
    hub: MisbehavingHub, artifact: Path, tiny_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    oid = hub.add_model(REPO, _files(artifact))
    pinned: list[tuple[str, str]] = []
    monkeypatch.setattr(hooks.guard, "pin_draft_revision", lambda d, c: pinned.append((d, c)))
    monkeypatch.setattr(hooks.guard, "missing_hooks", lambda: [])
    args = SimpleNamespace(
        speculative_algorithm="EAGLE", model_path=str(tiny_source),
        speculative_draft_model_path=REPO, speculative_draft_model_revision="main",
    )  # fmt: skip
    hooks.guard_before(None, args)
    assert pinned == [(REPO, oid)]
    # the scheduler's later hooks ask by the pinned commit: the same fetch, no new request
    before = len(hub.requests)
    assert draft_source.resolve_draft(REPO, oid) == draft_source.resolve_draft(REPO, "main")
    assert len(hub.requests) == before


@pytest.mark.parametrize("hang", ["/api/models/", f"/{REPO}/resolve/"])
def test_a_hanging_hub_costs_the_scheduler_a_bounded_wait(
    hub: MisbehavingHub,
    artifact: Path,
    tiny_source: Path,
    caplog: pytest.LogCaptureFixture,
    hang: str,
) -> None:
    """A hang on ``model_info`` or on a file: huggingface_hub retries a file's metadata
    request with its own 60 s timeout, so only the plugin's deadline bounds the wait."""
    hub.add_model(REPO, _files(artifact))
    hub.hang = hang
    args = SimpleNamespace(
        speculative_algorithm="EAGLE", model_path=str(tiny_source),
        speculative_draft_model_path=REPO, speculative_draft_model_revision=None,
    )  # fmt: skip
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="sglang_patch"):
        hooks.guard_before(None, args)  # plugin idle, not stopped
    assert time.monotonic() - start < 2.5  # FASTMTP_HUB_TIMEOUT=1
    [line] = [r.getMessage() for r in caplog.records if r.name == "sglang_patch"]
    assert "did not deliver the manifest and maps of bob/draft within 1 s" in line
    assert "FASTMTP_HUB_TIMEOUT" in line
    assert "drafting over the full vocabulary" in line
    # final for the process: the Hub answering later changes nothing the hooks see
    hub.hang = None
    hub.release.set()
    time.sleep(0.5)
    with pytest.raises(FastMTPError, match="did not deliver"):
        draft_source.resolve_draft(REPO)


def test_the_request_path_never_waits_on_the_hub(
    hub: MisbehavingHub, artifact: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub.add_model(REPO, _files(artifact))
    hub.hang = "/api/models/"
    args = SimpleNamespace(
        speculative_algorithm="EAGLE", speculative_draft_model_path=REPO,
        speculative_draft_model_revision=None,
    )  # fmt: skip
    manager = SimpleNamespace(server_args=args, tokenizer=None)
    with caplog.at_level(logging.WARNING, logger="sglang_patch"):
        hooks.tokenizer_manager_init_after(None, manager, args, None)  # starts the fetch
        for _ in range(3):
            obj = SimpleNamespace(sampling_params={})
            start = time.monotonic()
            hooks.detect_before(manager, obj, "hello world, how are you today?")
            assert time.monotonic() - start < 0.2
            assert obj.sampling_params == {}  # served undetected: the default language
    said = [r.getMessage() for r in caplog.records if r.name == "sglang_patch"]
    assert len(said) == 1
    assert "still being fetched" in said[0]
    assert "output unchanged" in said[0]
    # the Hub answers in time: detection turns on without any request waiting for it
    hub.hang = None
    hub.release.set()
    draft_source.draft_fetch(REPO)  # (the test waits; requests never do)
    obj = SimpleNamespace(sampling_params={})
    hooks.detect_before(manager, obj, "你好，今天过得怎么样？我们一起去吃饭吧。")
    assert obj.sampling_params == {"custom_params": {"draft_lang": "zh"}}


def test_a_bad_timeout_setting_leaves_the_plugin_idle_with_the_fix(
    hub: MisbehavingHub, artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_model(REPO, _files(artifact))
    monkeypatch.setenv("FASTMTP_HUB_TIMEOUT", "soon")
    reason = hooks.guard.idle_reason(REPO)
    assert reason is not None
    assert reason.warn
    assert "FASTMTP_HUB_TIMEOUT='soon' is not a positive number" in reason.message
    assert hub.requests == []
