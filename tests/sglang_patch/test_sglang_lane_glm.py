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


def _bigram(release: Any) -> list[int]:
    """The copy draft's proposal after each token, from the release's tensors alone: its
    NextN layer passes the (normed) embedding through, so it drafts
    ``argmax_v lm_head[v] . embed[t]`` (norms at 1 only rescale the row)."""
    from safetensors.torch import load_file

    w = load_file(str(release / "model.safetensors"))
    scores = w["model.embed_tokens.weight"] @ w["lm_head.weight"].T  # [V, V]
    return [int(v) for v in scores.argmax(-1)]


def _expected(output: list[int], bigram: list[int], k: int = 3) -> list[int]:
    """Accepted drafts per verify when the copy draft meets the target's ``output``: the
    first token comes from the prefill; each verify drafts k bigram steps from the last
    committed token and keeps the leading ones the target produced, plus its own token."""
    accepted, p = [], 0
    while p + 1 < len(output):
        drafts, t = [], output[p]
        for _ in range(k):
            t = bigram[t]
            drafts.append(t)
        j = 0
        while j < k and p + 1 + j < len(output) and drafts[j] == output[p + 1 + j]:
            j += 1
        accepted.append(j)
        p += j + 1
    return accepted


def test_eval_sglang_and_the_construction_agree_on_glm(glm: dict[str, Any]) -> None:
    """Three ways to the same verify counts: SGLang's EAGLE K=3 (``spec_verify_ct``),
    ``eval``'s decoder with the GLM reference head over the transformers target, and
    the copy draft's construction walked over the target's greedy output."""
    import torch

    from fastmtp_export.artifact import manifest as mf
    from fastmtp_export.evaluate.reference import artifact_head
    from fastmtp_export.evaluate.speculate import Draft, Target, speculate
    from fastmtp_export.evaluate.target import check_pair, load_target_model

    with sglang_server(
        glm["release"], glm["root"] / "logs", *CHAIN_FLAGS, "--speculative-draft-model-path",
        str(glm["draft"]), env=STOCK,
    ) as server:  # fmt: skip
        served = _run(server, glm["cases"])
    info = check_pair(glm["release"], glm["draft"], mf.load(glm["draft"]))
    model = load_target_model(info.path, info.config, "glm4_moe", torch.device("cpu"),
                              torch.float32)  # fmt: skip
    draft = Draft(artifact_head(model, glm["draft"], torch.float32, "glm4_moe"))
    bigram = _bigram(glm["release"])
    total = 0
    for (prompt, n), doc in served.items():
        gen = speculate(Target(model), draft, list(prompt), n, set(EOS))
        assert gen.output == doc["output_ids"] == glm["plain"][(prompt, n)]["output_ids"]
        assert gen.verifies == doc["meta_info"]["spec_verify_ct"], prompt
        assert gen.accepted == _expected(gen.output, bigram), prompt
        total += gen.verifies
    assert total > len(served)  # verifies happened, some with partial acceptance or not
