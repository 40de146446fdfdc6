"""``fastmtp-export push`` and the model card, against a local Hub over real HTTP.

The CLI runs as a real subprocess with ``HF_ENDPOINT`` pointing at tests/hub/fake_hub.py
on 127.0.0.1, so the real huggingface_hub client does every request.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import ModelCard, ModelCardData
from typer.testing import CliRunner

from fastmtp_export.artifact import manifest as mf
from fastmtp_export.artifact.eval_record import AcceptanceStats, EvaluationInfo, ModeResult
from fastmtp_export.artifact.manifest import cache_snapshot
from fastmtp_export.artifact.model_card import CardOptions, render_card
from fastmtp_export.cli import app
from fastmtp_export.maps.token_map import save_token_map

from ..conftest import assert_one_line_error, tree_digest
from .fake_hub import GOOD_TOKEN, SENTINEL_TOKEN, FakeHub


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


@pytest.fixture
def artifact(tiny_source: Path, tmp_path: Path) -> Path:
    """An exported tiny draft with en/zh maps and an evaluation in its manifest."""
    eos = json.loads((tiny_source / "config.json").read_text())["eos_token_id"]  # 255
    save_token_map(tmp_path / "en.pt", [*range(0, 127), eos])  # K = 128, EOS in both
    save_token_map(tmp_path / "zh.pt", [*range(128, 255), eos])
    out = tmp_path / "draft"
    r = CliRunner().invoke(
        app,
        ["export", str(tiny_source), "--out", str(out), "-q",
         "--token-map", f"en={tmp_path / 'en.pt'}", "--token-map", f"zh={tmp_path / 'zh.pt'}",
         "--default-lang", "en"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


def _stats(tau: float) -> AcceptanceStats:
    return AcceptanceStats(
        prompts=4, output_tokens=int(40 * tau), verify_steps=40, accept_length=tau,
        histogram=[1, 2, 3, 34], position_acceptance=[0.97, 0.92, 0.85],
        conditional_acceptance=[0.97, 0.95, 0.92], draft_tokens_per_s=None, speedup=None,
    )  # fmt: skip


def _with_evaluation(artifact: Path) -> None:
    info = EvaluationInfo(
        base_model="/models/base", base_config_sha256="0" * 64, device="cpu", dtype="float32",
        k=3, max_new_tokens=64, prompts_file="p.jsonl", prompts_sha256="1" * 64, prompts=8,
        lossless=True, mismatches=[], tool_version="0",
        modes={"auto": ModeResult(all=_stats(3.1), languages={"en": _stats(3.4),
                                                               "zh": _stats(2.8)})},
    )  # fmt: skip
    mf.write_evaluation(artifact, info)


def _push(
    hub_url: str,
    artifact: Path,
    *args: str,
    token: str | None = GOOD_TOKEN,
    extra_env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=hub_url,
        HF_HOME=str(artifact.parent / "hf-home"),  # no stored login
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    if token is not None:
        env["HF_TOKEN"] = token
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "fastmtp_export", "push", str(artifact), *args],
        env=env, capture_output=True, text=True, timeout=120, check=False, input=stdin,
    )  # fmt: skip


def _one_line_error(r: Any, *needles: str) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines, r.stderr
    assert lines[-1].startswith("error: "), r.stderr
    assert [x for x in lines if x.startswith("error: ")] == lines[-1:]
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]


class TestPush:
    def test_one_commit_with_every_file_and_byte(self, hub: FakeHub, artifact: Path) -> None:
        _with_evaluation(artifact)
        r = _push(hub.url, artifact, "--repo-id", "alice/mimo-draft", "--json",
                  "--commit-message", "First draft", "--base-model", "XiaomiMiMo/MiMo-7B-RL",
                  "--license", "mit")  # fmt: skip
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        repo = hub.repos["alice/mimo-draft"]
        assert len(repo.commits) == 1  # one commit, however many files
        commit = repo.commits[0]
        assert commit.summary == "First draft"
        assert commit.revision == "main"
        assert doc["commit_url"] == f"{hub.url}/alice/mimo-draft/commit/{commit.oid}"
        local = {p.name: p.read_bytes() for p in artifact.iterdir() if p.is_file()}
        assert set(local) == {"README.md", "config.json", "fastmtp.json", "model.safetensors",
                              "freq_en_128.pt", "freq_zh_128.pt"}  # fmt: skip
        assert repo.branches["main"] == local  # every byte, the refreshed card included
        card = ModelCard(local["README.md"].decode())
        assert card.data.to_dict()["base_model"] == "XiaomiMiMo/MiMo-7B-RL"
        assert "alice/mimo-draft" in card.text  # the refreshed launch commands
        assert {f["path"] for f in doc["files"]} == set(local)
        # the request sequence: create, YAML check, preupload, one commit
        posts = [q.path for q in hub.requests if q.method == "POST"]
        assert posts == ["/api/repos/create", "/api/validate-yaml",
                         "/api/models/alice/mimo-draft/preupload/main",
                         "/api/models/alice/mimo-draft/commit/main"]  # fmt: skip
        assert all(q.authorization == f"Bearer {GOOD_TOKEN}" for q in hub.requests)

    def test_plain_output_is_the_commit_url_and_a_second_push_reuses_the_repo(
        self, hub: FakeHub, artifact: Path
    ) -> None:
        r1 = _push(hub.url, artifact, "--repo-id", "alice/d", "--private")
        r2 = _push(hub.url, artifact, "--repo-id", "alice/d", "--token", GOOD_TOKEN, token=None)
        assert r1.returncode == 0, r1.stderr
        assert r2.returncode == 0, r2.stderr
        repo = hub.repos["alice/d"]
        assert repo.private
        assert [c.oid for c in repo.commits] == [
            r.stdout.strip().rsplit("/", 1)[1] for r in (r1, r2)
        ]

    def test_revision_creates_the_branch(self, hub: FakeHub, artifact: Path) -> None:
        r = _push(hub.url, artifact, "--repo-id", "alice/d", "--revision", "v2")
        assert r.returncode == 0, r.stderr
        repo = hub.repos["alice/d"]
        assert repo.branches["main"] == {}
        assert "model.safetensors" in repo.branches["v2"]
        assert repo.commits[0].revision == "v2"

    def test_create_pr(self, hub: FakeHub, artifact: Path) -> None:
        _push(hub.url, artifact, "--repo-id", "alice/d")
        r = _push(hub.url, artifact, "--repo-id", "alice/d", "--create-pr", "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        repo = hub.repos["alice/d"]
        assert doc["pr_url"] == f"{hub.url}/alice/d/discussions/1"
        assert repo.commits[-1].pr == 1
        assert hub.requests[-1].query.get("create_pr") == ["1"]


class TestPushFailures:
    def test_bad_token(self, hub: FakeHub, artifact: Path) -> None:
        r = _push(hub.url, artifact, "--repo-id", "alice/d", token="hf_wrong")
        _one_line_error(r, "rejected the token (401", "--token", "nothing was published")
        assert "alice/d" not in hub.repos

    def test_no_token(self, hub: FakeHub, artifact: Path) -> None:
        _one_line_error(_push(hub.url, artifact, "--repo-id", "alice/d", token=None), "(401")

    def test_someone_elses_repo(self, hub: FakeHub, artifact: Path) -> None:
        r = _push(hub.url, artifact, "--repo-id", "bob/taken")
        _one_line_error(r, "no write access to bob/taken (403", "nothing was published")
        assert hub.repos["bob/taken"].commits == []

    def test_failed_commit_leaves_no_new_repo_and_an_unchanged_artifact(
        self, hub: FakeHub, artifact: Path
    ) -> None:
        before = tree_digest(artifact)
        hub.fail_commit_with = 500
        r = _push(hub.url, artifact, "--repo-id", "alice/d", "--base-model", "acme/base")
        _one_line_error(r, "server error (500", "nothing was published", "retry later")
        assert "alice/d" not in hub.repos  # this push created it, so it deleted it
        assert [q.method for q in hub.requests if q.path == "/api/repos/delete"] == ["DELETE"]
        commits = [q for q in hub.requests if q.path.endswith("/commit/main")]
        assert len(commits) == 1  # huggingface_hub's policy: a commit is not retried
        assert tree_digest(artifact) == before  # the card is written only after success

    def test_failed_commit_keeps_an_existing_repo_and_drops_a_new_branch(
        self, hub: FakeHub, artifact: Path
    ) -> None:
        assert _push(hub.url, artifact, "--repo-id", "alice/d").returncode == 0
        first = list(hub.repos["alice/d"].commits)
        before = tree_digest(artifact)
        hub.fail_commit_with = 500
        r = _push(hub.url, artifact, "--repo-id", "alice/d", "--revision", "dev",
                  "--base-model", "acme/other")  # fmt: skip
        _one_line_error(r, "server error (500")
        repo = hub.repos["alice/d"]  # it existed before this push: kept
        assert repo.commits == first
        assert set(repo.branches) == {"main"}  # "dev" was this push's: deleted
        assert tree_digest(artifact) == before

    def test_connection_refused(self, artifact: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed when the block ends: nothing listens
        r = _push(f"http://127.0.0.1:{port}", artifact, "--repo-id", "alice/d")
        _one_line_error(r, "cannot reach the Hub at http://127.0.0.1:", "HF_ENDPOINT")

    def test_invalid_artifact_is_refused_before_any_request(
        self, hub: FakeHub, artifact: Path
    ) -> None:
        (artifact / "config.json").write_text("{}")
        r = _push(hub.url, artifact, "--repo-id", "alice/d")
        _one_line_error(r, "is invalid")
        assert hub.requests == []

    def test_bad_repo_id(self, hub: FakeHub, artifact: Path) -> None:
        _one_line_error(_push(hub.url, artifact, "--repo-id", "no-slash"), "is not ORG/NAME")
        assert hub.requests == []


class TestDryRun:
    def test_lists_files_and_card_without_any_connection(
        self, artifact: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def no_network(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("the dry run opened a connection")

        monkeypatch.setattr(socket.socket, "connect", no_network)
        monkeypatch.setattr(socket, "create_connection", no_network)
        before = tree_digest(artifact)
        r = CliRunner().invoke(
            app, ["push", str(artifact), "--repo-id", "alice/d", "--dry-run", "--json"]
        )
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        want = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in artifact.iterdir()
            if p.name != "README.md"
        }
        got = {f["path"]: f["sha256"] for f in doc["files"]}
        assert {k: v for k, v in got.items() if k != "README.md"} == want
        assert got["README.md"] == hashlib.sha256(doc["card"].encode()).hexdigest()
        assert tree_digest(artifact) == before  # a dry run writes nothing

    def test_text_dry_run_over_a_live_hub_sends_nothing(self, hub: FakeHub, artifact: Path) -> None:
        r = _push(hub.url, artifact, "--repo-id", "alice/d", "--dry-run")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("would upload to alice/d in one commit:")
        assert "model.safetensors" in r.stdout
        assert "sha256" in r.stdout
        assert hub.requests == []


class TestModelCard:
    def test_renders_and_parses_back(self, artifact: Path) -> None:
        _with_evaluation(artifact)
        manifest = mf.load(artifact)
        text = render_card(
            manifest, CardOptions(repo_id="alice/d", base_model="org/base", license="mit")
        )
        card = ModelCard(text)
        data = card.data.to_dict()
        assert data["base_model"] == "org/base"
        assert data["license"] == "mit"
        assert data["language"] == ["en", "zh"]
        assert data["library_name"] not in (None, "transformers")  # no "serve alone" snippet
        assert "pipeline_tag" not in data
        assert {"speculative-decoding", "draft-model", "mtp", "fastmtp", "eagle", "sglang"} <= set(
            data["tags"]
        )
        assert isinstance(card.data, ModelCardData)
        results = {(r.dataset_config, r.metric_value) for r in card.data.eval_results or []}
        assert results == {("en", 3.4), ("zh", 2.8)}
        body = card.text
        # plain, and with the plugin: both straight from the repo id (no download step)
        assert body.count("--speculative-draft-model-path alice/d \\") == 3
        assert "hf download" not in body
        assert "--speculative-token-map alice/d/freq_en_128.pt" in body
        assert '"custom_params": {"draft_lang"' in body
        assert "| en (default) | 128 | `freq_en_128.pt`" in body
        assert "| auto | zh | 4 | 2.80 |" in body
        assert manifest.files["model.safetensors"].sha256 in body
        assert "arXiv:2509.18362" in body

    def test_export_writes_a_card_and_inherits_the_base_licence(
        self, tiny_source: Path, tmp_path: Path
    ) -> None:
        (tiny_source / "README.md").write_text("---\nlicense: apache-2.0\n---\n# base\n")
        before = tree_digest(tiny_source)
        out = tmp_path / "d"
        r = CliRunner().invoke(app, ["export", str(tiny_source), "--out", str(out), "-q"])
        assert r.exit_code == 0, r.output
        card = ModelCard.load(out / "README.md")
        assert card.data.license == "apache-2.0"
        # a public card never carries the exporting machine's paths
        text = (out / "README.md").read_text()
        assert str(tiny_source.parent) not in text
        assert f"- Source: a local checkpoint `{tiny_source.name}` (" in text
        assert tree_digest(tiny_source) == before
        inspect = CliRunner().invoke(app, ["inspect", str(out)])
        assert inspect.exit_code == 0
        assert "README.md is not listed" not in inspect.stdout

    def test_base_from_a_hub_cache_path(self) -> None:
        path = "/home/u/.cache/huggingface/hub/models--XiaomiMiMo--MiMo-7B-RL/snapshots/" + (
            "a" * 40
        )
        assert cache_snapshot(path) == ("XiaomiMiMo/MiMo-7B-RL", "a" * 40)
        assert cache_snapshot("/models/MiMo-7B-RL") == (None, None)


class TestNoLocalPathIsPublished:
    """The manifest names a local source by its directory name; push uploads no path."""

    @staticmethod
    def _spy(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
        """Every request body the local Hub receives (the files travel in the commit)."""
        bodies: list[bytes] = []
        route = hub._route

        def spy(method: str, path: str, query: Any, body: bytes, auth: str | None) -> Any:
            bodies.append(path.encode() + b"\n" + body)
            return route(method, path, query, body, auth)

        monkeypatch.setattr(hub, "_route", spy)
        return bodies

    def test_export_records_the_directory_name_only(
        self, tiny_source: Path, artifact: Path
    ) -> None:
        raw = (artifact / "fastmtp.json").read_text()
        assert str(tiny_source.parent) not in raw
        source = json.loads(raw)["source"]
        assert source["path"] == tiny_source.name
        assert "repo_id" not in source
        assert "revision" not in source

    def test_push_uploads_no_local_path(
        self, hub: FakeHub, tiny_source: Path, artifact: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        bodies = self._spy(hub, monkeypatch)
        r = _push(hub.url, artifact, "--repo-id", "alice/d")
        assert r.returncode == 0, r.stderr
        uploaded = hub.repos["alice/d"].branches["main"]
        for needle in (str(tiny_source.parent), str(artifact.parent)):
            assert not [n for n, data in uploaded.items() if needle.encode() in data]
            assert not [b for b in bodies if needle.encode() in b]

    @pytest.mark.parametrize("cached", [False, True])
    def test_an_older_manifests_absolute_path_is_reduced(
        self, hub: FakeHub, artifact: Path, monkeypatch: pytest.MonkeyPatch, cached: bool
    ) -> None:
        """An artifact written before the manifest dropped paths is published without it,
        still valid (fastmtp.json lists no hash of itself), and the local copy matches."""
        sha = "c" * 40
        old = (
            f"/home/alice/.cache/huggingface/hub/models--acme--secret-base/snapshots/{sha}"
            if cached
            else "/home/alice/private/acme-secret-model"
        )
        doc = json.loads((artifact / "fastmtp.json").read_text())
        doc["source"]["path"] = old
        (artifact / "fastmtp.json").write_text(json.dumps(doc, indent=2))
        bodies = self._spy(hub, monkeypatch)
        r = _push(hub.url, artifact, "--repo-id", "alice/d")
        assert r.returncode == 0, r.stderr
        uploaded = hub.repos["alice/d"].branches["main"]
        for needle in (b"/home/alice", old.encode()):
            assert not [n for n, data in uploaded.items() if needle in data]
            assert not [b for b in bodies if needle in b]
        source = json.loads(uploaded["fastmtp.json"])["source"]
        card = ModelCard(uploaded["README.md"].decode())
        if cached:  # the cache layout names the base: kept as the Hub id and commit
            assert source["path"] == source["repo_id"] == "acme/secret-base"
            assert source["revision"] == sha
            assert card.data.to_dict()["base_model"] == "acme/secret-base"
        else:
            assert source["path"] == "acme-secret-model"
            assert "repo_id" not in source
            assert "a local checkpoint `acme-secret-model`" in card.text
        assert (artifact / "fastmtp.json").read_bytes() == uploaded["fastmtp.json"]
        inspect = CliRunner().invoke(app, ["inspect", str(artifact)])
        assert inspect.exit_code == 0, inspect.output

    def test_the_dry_run_plans_the_cleaned_manifest_and_writes_nothing(
        self, artifact: Path
    ) -> None:
        doc = json.loads((artifact / "fastmtp.json").read_text())
        doc["source"]["path"] = "/srv/models/acme-secret-model"
        (artifact / "fastmtp.json").write_text(json.dumps(doc))
        before = tree_digest(artifact)
        r = CliRunner().invoke(
            app, ["push", str(artifact), "--repo-id", "alice/d", "--dry-run", "--json"]
        )
        assert r.exit_code == 0, r.output
        assert "/srv/models" not in r.stdout
        assert tree_digest(artifact) == before


def test_bad_repo_id_in_process(artifact: Path) -> None:
    r = CliRunner().invoke(app, ["push", str(artifact), "--repo-id", "a/b/c", "--dry-run"])
    assert_one_line_error(r, "is not ORG/NAME")


class TestTokenNeverShown:
    """The token appears in no output on any path: success, every failure, --json, debug."""

    @pytest.mark.parametrize(
        ("case", "how", "debug"),
        [
            *((c, "env", "1") for c in ("ok-json", "ok", "401", "403", "500", "500-json",
                                        "unreachable")),
            ("ok", "stdin", "0"), ("500", "stdin", "1"), ("ok", "argv", "0"),
            ("401", "argv", "1"),
        ],
    )  # fmt: skip
    def test_sentinel(self, hub: FakeHub, artifact: Path, case: str, how: str, debug: str) -> None:
        token = SENTINEL_TOKEN + ("-revoked" if case == "401" else "")
        url = hub.url
        if case == "unreachable":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                url = f"http://127.0.0.1:{s.getsockname()[1]}"
        hub.fail_commit_with = 500 if case.startswith("500") else None
        args = ["--repo-id", "bob/taken" if case == "403" else "alice/s"]
        args += ["--json"] if case.endswith("json") else []
        env_token = token if how == "env" else None
        stdin: str | None = None
        if how == "stdin":
            args += ["--token", "-"]
            stdin = token + "\n"
        if how == "argv":
            args += ["--token", token]
        r = _push(url, artifact, *args, token=env_token, stdin=stdin,
                  extra_env={"FASTMTP_DEBUG": debug})  # fmt: skip
        assert r.returncode == (0 if case.startswith("ok") else 1), r.stderr
        assert "SENTINEL" not in r.stdout + r.stderr
        if how == "argv":
            assert "lands in shell history" in r.stderr
        if debug == "1" and not case.startswith("ok"):
            assert "Traceback" in r.stderr  # the debug path ran, and still hid the token

    def test_empty_stdin_token_is_a_one_line_error(self, hub: FakeHub, artifact: Path) -> None:
        r = _push(hub.url, artifact, "--repo-id", "alice/s", "--token", "-", token=None,
                  stdin="\n")  # fmt: skip
        _one_line_error(r, "--token - read an empty line from stdin")
        assert hub.requests == []
