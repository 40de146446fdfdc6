"""A second family on the CPU lane: GLM-4.5 (MoE, NextN) served by real SGLang 0.5.23.

The target (tests/sglang_lane/glm_fixture.py) is a tiny GLM-4.5 release with trunk and
NextN layer; ``fastmtp-export export`` writes its draft (``Glm4MoeForCausalLMNextN``:
the layer renamed ``model.layers.0.*``, ``num_hidden_layers: 1``). SGLang serves it with
EAGLE K=3 on CPU (its MoE runs the torch-native path there; one lane hook,
``fastmtp_cpu_lane/models.py``, drops the CUDA calls from GLM's ``set_embed_and_head``).
Checked: speculative output equals plain output, the exported head drafts the target's
tokens (acceptance well above 1), and the plugin drives the GLM draft's vocabulary per
request: a map holding the target's tokens keeps that acceptance, one without them
drops it to about 1, with the same output.
"""

from __future__ import annotations

import json
import random
import statistics
from typing import Any

import pytest

from fastmtp_export.maps.token_map import save_token_map

from ..conftest import export_cli
from ..sglang_lane.glm_fixture import CONFIG, write_glm_release
from ..sglang_lane.server import CHAIN_FLAGS, sglang_import_problem, sglang_server
from .conftest import STOCK, Case, _assert_parity, _run

pytestmark = pytest.mark.slow

V = CONFIG["vocab_size"]
EOS = list(CONFIG["eos_token_id"])


@pytest.fixture(scope="module")
def glm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    problem = sglang_import_problem()
    if problem is not None:
        pytest.fail(f"the CPU lane needs SGLang 0.5.23: {problem}")
    root = tmp_path_factory.mktemp("glm")
    release = write_glm_release(root / "release")
    rng = random.Random(7)
    cases: list[Case] = [
        (tuple(rng.choice(range(3, V)) for _ in range(rng.randint(3, 8))), 32) for _ in range(6)
    ]
    with sglang_server(release, root / "logs") as server:
        plain = _run(server, cases)
    out = {t for doc in plain.values() for t in doc["output_ids"]}
    hit = sorted(out | set(EOS))
    miss = EOS + [t for t in range(V) if t not in hit][: len(hit) - len(EOS)]
    assert len(miss) == len(hit), f"{len(hit)} output ids leave too few others in {V}"
    save_token_map(root / "hit.pt", hit)
    save_token_map(root / "miss.pt", miss)
    draft = export_cli(
        release, root / "draft", "--token-map", f"en={root / 'hit.pt'}",
        "--token-map", f"zh={root / 'miss.pt'}", "--default-lang", "en",
    )  # fmt: skip
    return {"root": root, "release": release, "draft": draft, "cases": cases, "plain": plain}


def _tau(docs: list[dict[str, Any]]) -> float:
    return statistics.mean(d["meta_info"]["spec_accept_length"] for d in docs)


def test_the_export_is_a_glm_nextn_draft(glm: dict[str, Any]) -> None:
    manifest = json.loads((glm["draft"] / "fastmtp.json").read_text())
    assert manifest["family"] == "glm4_moe"
    assert manifest["sglang"]["draft_class"] == "Glm4MoeForCausalLMNextN"
    config = json.loads((glm["draft"] / "config.json").read_text())
    assert config["num_hidden_layers"] == 1


def test_stock_sglang_serves_the_glm_draft_exactly_and_drafts_well(glm: dict[str, Any]) -> None:
    with sglang_server(
        glm["release"], glm["root"] / "logs", *CHAIN_FLAGS, "--speculative-draft-model-path",
        str(glm["draft"]), env=STOCK,
    ) as server:  # fmt: skip
        got = _run(server, glm["cases"])
        events = set().union(*server.events().values())
    _assert_parity(got, glm["plain"])
    assert _tau(list(got.values())) >= 2.0
    assert "hook:glm_set_embed_and_head" in events


def test_the_plugin_drives_the_glm_drafts_vocabulary_per_request(glm: dict[str, Any]) -> None:
    with sglang_server(
        glm["release"], glm["root"] / "logs", *CHAIN_FLAGS, "--speculative-draft-model-path",
        str(glm["draft"]),
    ) as server:  # fmt: skip
        hit = {c: server.generate(list(c[0]), c[1], custom_params={"draft_lang": "en"})
               for c in glm["cases"]}  # fmt: skip
        miss = {c: server.generate(list(c[0]), c[1], custom_params={"draft_lang": "zh"})
                for c in glm["cases"]}  # fmt: skip
    _assert_parity(hit, glm["plain"])
    _assert_parity(miss, glm["plain"])
    assert _tau(list(hit.values())) >= 2.0
    assert _tau(list(miss.values())) <= 1.2
