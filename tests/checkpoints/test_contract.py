"""SGLang's MiMoMTP loader contract, one row per tensor."""

from __future__ import annotations

import math

import pytest

from fastmtp_export.checkpoints.contract import (
    contract_problems,
    expected_shapes,
    require_contract,
)
from fastmtp_export.checkpoints.readers.mimo import MIMO_CONTRACT
from fastmtp_export.checkpoints.synthetic import MIMO_7B, mimo_config
from fastmtp_export.errors import ContractError

CFG = mimo_config(MIMO_7B)
ROWS = sorted(MIMO_CONTRACT.tensors)


def test_mimo_7b_head_is_210_8m_parameters() -> None:
    # fastmtp-method.md §4.3: the MTP layer is 210,790,400 parameters (paper: "210.8M").
    shapes = expected_shapes(MIMO_CONTRACT, CFG)
    assert len(shapes) == 16
    assert sum(math.prod(s) for s in shapes.values()) == 210_790_400
    assert shapes["model.mtp_layers.0.input_proj.weight"] == (4096, 8192)
    assert shapes["model.mtp_layers.0.self_attn.k_proj.weight"] == (1024, 4096)
    assert shapes["model.mtp_layers.0.mlp.down_proj.weight"] == (4096, 11008)


@pytest.mark.parametrize("name", ROWS, ids=[r.removeprefix("model.mtp_layers.0.") for r in ROWS])
def test_each_missing_tensor_is_reported(name: str) -> None:
    shapes = expected_shapes(MIMO_CONTRACT, CFG)
    del shapes[name]
    assert contract_problems(MIMO_CONTRACT, CFG, shapes) == [f"missing {name}"]


@pytest.mark.parametrize("name", ROWS, ids=[r.removeprefix("model.mtp_layers.0.") for r in ROWS])
def test_each_wrong_shape_is_reported(name: str) -> None:
    shapes = expected_shapes(MIMO_CONTRACT, CFG)
    shapes[name] = (*shapes[name][:-1], shapes[name][-1] + 1)
    [problem] = contract_problems(MIMO_CONTRACT, CFG, shapes)
    assert problem.startswith(f"{name} has shape")


def test_unexpected_tensor_refuses_to_write() -> None:
    shapes = expected_shapes(MIMO_CONTRACT, CFG)
    shapes["model.mtp_layers.0.self_attn.q_norm.weight"] = (128,)
    with pytest.raises(
        ContractError, match="unexpected model.mtp_layers.0.self_attn.q_norm.weight"
    ):
        require_contract(MIMO_CONTRACT, CFG, shapes)


def test_explicit_head_dim_is_honoured() -> None:
    cfg = {**CFG, "head_dim": 64}  # q_proj then maps H -> heads * 64
    shapes = expected_shapes(MIMO_CONTRACT, cfg)
    assert shapes["model.mtp_layers.0.self_attn.q_proj.weight"] == (32 * 64, 4096)
    assert shapes["model.mtp_layers.0.self_attn.o_proj.weight"] == (4096, 32 * 64)
