"""Serving an artifact by its Hub repo id: ``--speculative-draft-model-path ORG/NAME``.

The oracle artifact is published on the local Hub (tests/hub/fake_hub.py, real HTTP);
a real SGLang lane server gets the repo id with ``HF_ENDPOINT`` pointing there and an
empty ``HF_HOME``. SGLang downloads the draft's config and weights itself; the plugin
fetches the same repository's manifest, config and maps into its own cache, at the
commit it resolved, pins SGLang's weights to that commit, and activates. Then the same
again with ``HF_HUB_OFFLINE=1`` on the warm cache: not one request reaches the Hub.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastmtp_export.checkpoints.oracle import EN, greedy_chain, text_of

from ..hub.fake_hub import FakeHub
from ..sglang_lane.server import CHAIN_FLAGS, Server
from .conftest import Case, Lane, _full_length, _refused, _spec

pytestmark = pytest.mark.slow

REPO = "bob/oracle-draft"


@pytest.fixture(scope="module")
def hub(lane: Lane) -> Iterator[FakeHub]:
    with FakeHub() as h:
        h.add_model(REPO, {p.name: p.read_bytes() for p in lane.oracle_draft.iterdir()})
        yield h


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-home")


def _by_repo_id(lane: Lane, hub: FakeHub, home: Path, **env: str) -> Iterator[Server]:
    yield from _spec(
        lane, lane.oracle, Path(REPO), "--tokenizer-path", str(lane.root / "oracle-tokenizer"),
        env={"HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
             **env},
        tokenizer=True,
    )  # fmt: skip


def _check_serving(lane: Lane, server: Server, plain: dict[Case, dict[str, Any]]) -> None:
    """Both languages at own-language acceptance with ``draft_lang``; text requests without
    it detected and answered exactly; the server healthy afterwards."""
    cases = _full_length(plain, 32)
    assert {c[0][0] in EN for c in cases} == {True, False}
    for prompt, n in cases:
        lang = "en" if prompt[0] in EN else "zh"
        tagged = server.generate(list(prompt), n, custom_params={"draft_lang": lang})
        assert tagged["output_ids"] == plain[(prompt, n)]["output_ids"]
        assert tagged["meta_info"]["spec_accept_length"] >= 3.5, (lang, prompt)
        other = "zh" if lang == "en" else "en"
        wrong = server.generate(list(prompt), n, custom_params={"draft_lang": other})
        assert wrong["meta_info"]["spec_accept_length"] <= 1.5  # the maps are really in use
        untagged = server.post(
            "/generate",
            {"text": text_of(prompt), "sampling_params": {"max_new_tokens": n, "temperature": 0}},
        )
        assert untagged["output_ids"] == greedy_chain(prompt[-1], n, lane.perm)
        assert untagged["meta_info"]["spec_accept_length"] >= 3.5, (lang, prompt)
        ids = server.generate(list(prompt), n)  # no draft_lang, ids: detected when decoded
        assert ids["output_ids"] == plain[(prompt, n)]["output_ids"]
        assert ids["meta_info"]["spec_accept_length"] >= 3.5, (lang, prompt)
    assert server.get("/health")[0] == 200


def test_a_repo_id_draft_activates_the_plugin(
    lane: Lane, hub: FakeHub, home: Path, oracle_plain: dict[Case, dict[str, Any]]
) -> None:
    oid = hub.repos[REPO].commits[-1].oid
    for server in _by_repo_id(lane, hub, home):
        _check_serving(lane, server, oracle_plain)
        # the scheduler pinned SGLang's draft revision to the commit the maps came from
        status, body = server.get("/server_info")
        assert status == 200
        [state] = json.loads(body)["internal_states"]
        assert state["speculative_draft_model_revision"] == oid
    fetched = {
        tuple(r.path.split("/resolve/", 1)[1].split("/", 1))
        for r in hub.requests
        if "/resolve/" in r.path and r.method == "GET"
    }
    wanted = {"fastmtp.json", "freq_en_128.pt", "freq_zh_128.pt", "model.safetensors"}
    assert {(oid, name) for name in wanted} <= fetched  # weights and maps by one commit
    assert not {name for rev, name in fetched if rev != oid} & wanted
    # SGLang's weights in the shared cache, the plugin's maps in its own (see the next file)
    [shared] = (home / "hub" / "models--bob--oracle-draft" / "snapshots").iterdir()
    assert sorted(p.name for p in shared.glob("*.pt")) == []
    assert (shared / "model.safetensors").is_file()
    assert list((home / "fastmtp-artifacts").rglob("freq_en_128.pt"))


def test_a_shared_snapshot_with_maps_but_no_weights_is_refused_with_the_reason(
    lane: Lane, hub: FakeHub, tmp_path: Path
) -> None:
    """The failure behind resolving repo ids naively (fetching the maps into the shared
    cache): SGLang's weight loader takes a cached snapshot with any ``*.pt`` as complete
    and loads the maps as weights, a start-up crash (``'list' object has no attribute
    'items'`` in ``MiMoMTP.load_weights``). The plugin never writes there; when something
    else did, it stops the server with the cause and the fix."""
    home = tmp_path / "hf"
    code = (
        "from huggingface_hub import snapshot_download; "
        f"snapshot_download({REPO!r}, allow_patterns=['fastmtp.json', 'config.json', '*.pt'])"
    )
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1"}
    subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=True)
    lines = _refused(
        tmp_path / "logs", lane.oracle, *CHAIN_FLAGS, "--speculative-draft-model-path", REPO,
        env=env,
    )  # fmt: skip
    assert lines, "no refusal line in the log"
    assert "incomplete snapshot of bob/oracle-draft" in lines[0]
    assert f"hf download {REPO}" in lines[0]


def test_offline_on_a_warm_cache(
    lane: Lane, hub: FakeHub, home: Path, oracle_plain: dict[Case, dict[str, Any]]
) -> None:
    before = len(hub.requests)
    for server in _by_repo_id(lane, hub, home, HF_HUB_OFFLINE="1"):
        _check_serving(lane, server, oracle_plain)
    assert len(hub.requests) == before
