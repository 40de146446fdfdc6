"""``train --shard-head``: the head sharded with PyTorch's FSDP2 over two gloo processes.

What two sharded processes compute must be what one unsharded process computes, up to
float summation order (FSDP reduce-scatters gradients in another order than one process
sums them), for MiMo's head and for a MoE family's (GLM-4.5, experts and router); a
state saved by an unsharded run resumes sharded, on another world size.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fastmtp_export.checkpoints.checkpoint import language_config
from fastmtp_export.errors import TrainError
from fastmtp_export.train.shard import BYTES_PER_PARAM, device_bytes, should_shard
from fastmtp_export.train.state import STATE_NAME
from fastmtp_export.train.trainer import TrainOptions, train

from ..checkpoints.families import glm4_moe
from ..conftest import BPE_MODEL_VOCAB, write_bpe_source
from ..heads.family_oracle import write_family_oracle
from . import run_ranks, train_killed_after

OPTS = TrainOptions(epochs=2, batch=4, lr=3e-3, max_length=40, save_every=100, warmup=0.0)
CPU = torch.device("cpu")

_WORKER = """
import dataclasses, json, sys
from pathlib import Path
from fastmtp_export.train.trainer import TrainOptions, train
opts = TrainOptions(**json.loads(sys.argv[4]))
train(Path(sys.argv[1]), [Path(sys.argv[2])], Path(sys.argv[3]), opts,
      resume=sys.argv[5] == "resume", show_progress=False)
"""


def test_sharding_is_decided_before_anything_loads() -> None:
    big = int(device_bytes(CPU) / BYTES_PER_PARAM)  # twice what half the machine holds
    assert not should_shard("auto", 1000, CPU, 2)
    assert not should_shard("off", big, CPU, 2)
    assert should_shard("auto", big, CPU, 2)
    assert should_shard("on", 1000, CPU, 2)
    with pytest.raises(TrainError, match=r"^--shard-head on: sharding needs several processes"):
        should_shard("on", 1000, CPU, 1)
    with pytest.raises(TrainError, match=r"GiB.*torchrun --nproc-per-node N"):
        should_shard("auto", big, CPU, 1)
    with pytest.raises(TrainError, match="--shard-head must be one of auto, on, off"):
        TrainOptions(shard_head="yes").check()


def _two_ranks(source: Path, data: Path, out: Path, opts: TrainOptions, resume: bool) -> None:
    options = json.dumps(dataclasses.asdict(opts))
    run_ranks(_WORKER, str(source), str(data), str(out), options, "resume" if resume else "new")


def _same_update(one: Path, two: Path) -> None:
    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert sorted(a) == sorted(b)
    for k in a:  # the heads are saved in the source's dtype: one rounding step apart at most
        torch.testing.assert_close(b[k].float(), a[k].float(), rtol=2**-7, atol=1e-5)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fastmtp_export.maps.synthetic_corpus import records

    rows = [
        {
            "messages": [
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": r["text"]},
            ]
        }
        for i, r in enumerate([*records("en", 6, seed=1), *records("ru", 5, seed=2)])
    ]  # fmt: skip  (11 sequences: the last batch of each epoch splits 2 + 1 over the ranks)
    path = tmp_path_factory.mktemp("shard") / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_two_sharded_ranks_train_what_one_process_does(
    data: Path, bpe_tokenizer: Path, tmp_path: Path
) -> None:
    source = write_bpe_source(tmp_path / "src", bpe_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bpe_tokenizer / name, source / name)
    one = train(source, [data], tmp_path / "one", OPTS, show_progress=False)
    _two_ranks(source, data, tmp_path / "two", dataclasses.replace(OPTS, shard_head="on"), False)
    record = json.loads((tmp_path / "two" / "training.json").read_text())
    assert record["processes"] == 2
    assert [h["step"] for h in record["history"]] == [h["step"] for h in one.record["history"]]
    _same_update(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_a_sharded_moe_head_resumes_an_unsharded_state(
    data: Path, bpe_tokenizer: Path, tmp_path: Path
) -> None:
    """GLM-4.5's MoE layer (experts, router, shared expert): one process runs 3 steps and
    is stopped; two sharded ranks resume its state and finish; the result is the
    uninterrupted single-process run's."""
    cfg = glm4_moe(qk_norm=True)
    language_config(cfg)["vocab_size"] = BPE_MODEL_VOCAB
    source = write_family_oracle(tmp_path / "src", "glm4_moe", cfg, copy=False)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bpe_tokenizer / name, source / name)
    opts = dataclasses.replace(OPTS, save_every=1)
    train(source, [data], tmp_path / "one", opts, show_progress=False)
    out = tmp_path / "resumed"
    train_killed_after(3, source, [data], out, opts, show_progress=False)
    assert (out / STATE_NAME).exists()
    _two_ranks(source, data, out, dataclasses.replace(opts, shard_head="on"), True)
    record = json.loads((out / "training.json").read_text())
    assert record["resumed_from"] == 3
    assert record["processes"] == 2
    _same_update(tmp_path / "one", out)
