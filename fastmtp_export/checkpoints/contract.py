"""The consumer's contract: exactly which tensors SGLang's MTP draft loader reads.

SGLang 0.5.23's ``MiMoMTP.load_weights`` (``sglang/srt/models/mimo_mtp.py``) maps
``model.mtp_layers.<i>.*`` names onto its parameters and *silently skips* anything it
does not recognise; a misnamed tensor leaves its parameter uninitialised with no error.
The draft writer and ``inspect`` therefore check the written key set against this data,
not against what the reader happened to produce.

Shapes are symbolic and resolved from the draft ``config.json``:

    H  = hidden_size                Q  = num_attention_heads * head_dim
    KV = num_key_value_heads * head_dim   I = intermediate_size
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ContractError

#: K=3 chain speculation, the FastMTP setting: 3 draft steps, top-1, 4 verified tokens.
SGLANG_CHAIN_FLAGS: tuple[tuple[str, str], ...] = (
    ("--speculative-algorithm", "EAGLE"),
    ("--speculative-num-steps", "3"),
    ("--speculative-eagle-topk", "1"),
    ("--speculative-num-draft-tokens", "4"),
)


@dataclass(frozen=True)
class DraftContract:
    """What one checkpoint family's SGLang MTP draft class loads."""

    family: str
    #: ``architectures[0]`` kept in the draft config (SGLang rewrites it for the draft).
    architecture: str
    #: the class SGLang instantiates for the draft.
    sglang_class: str
    #: draft tensor name -> symbolic shape.
    tensors: Mapping[str, tuple[str, ...]]


_MIMO = "model.mtp_layers.0."
MIMO_CONTRACT = DraftContract(
    family="mimo",
    architecture="MiMoForCausalLM",
    sglang_class="MiMoMTP",
    tensors={
        _MIMO + "token_layernorm.weight": ("H",),
        _MIMO + "hidden_layernorm.weight": ("H",),
        # concat order is [hidden, embed]: input_proj(cat(hidden_ln(h), token_ln(e)))
        _MIMO + "input_proj.weight": ("H", "2H"),
        _MIMO + "input_layernorm.weight": ("H",),
        _MIMO + "self_attn.q_proj.weight": ("Q", "H"),
        _MIMO + "self_attn.q_proj.bias": ("Q",),
        _MIMO + "self_attn.k_proj.weight": ("KV", "H"),
        _MIMO + "self_attn.k_proj.bias": ("KV",),
        _MIMO + "self_attn.v_proj.weight": ("KV", "H"),
        _MIMO + "self_attn.v_proj.bias": ("KV",),
        _MIMO + "self_attn.o_proj.weight": ("H", "Q"),
        _MIMO + "post_attention_layernorm.weight": ("H",),
        _MIMO + "mlp.gate_proj.weight": ("I", "H"),
        _MIMO + "mlp.up_proj.weight": ("I", "H"),
        _MIMO + "mlp.down_proj.weight": ("H", "I"),
        _MIMO + "final_layernorm.weight": ("H",),
    },
)

CONTRACTS: dict[str, DraftContract] = {MIMO_CONTRACT.family: MIMO_CONTRACT}


def config_dims(config: Mapping[str, Any]) -> dict[str, int]:
    """Resolve the shape symbols from a Hugging Face config dict.

    Raises:
        ContractError: a field needed to size the head is missing or not an integer.
    """
    try:
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads", heads))
        head_dim = int(config.get("head_dim") or hidden // heads)
        inter = int(config["intermediate_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ContractError(
            f"config.json lacks a usable {exc} field needed to size the MTP head; "
            "pass the checkpoint's original config.json"
        ) from exc
    return {
        "H": hidden,
        "2H": 2 * hidden,
        "Q": heads * head_dim,
        "KV": kv_heads * head_dim,
        "I": inter,
    }


def expected_shapes(
    contract: DraftContract, config: Mapping[str, Any]
) -> dict[str, tuple[int, ...]]:
    """Concrete shape of every contract tensor for this config."""
    dims = config_dims(config)
    return {name: tuple(dims[s] for s in sym) for name, sym in contract.tensors.items()}


def contract_problems(
    contract: DraftContract,
    config: Mapping[str, Any],
    actual: Mapping[str, tuple[int, ...]],
) -> list[str]:
    """Every way ``actual`` (name -> shape) differs from the contract, sorted.

    Empty means SGLang's loader will fill every MTP parameter from these tensors.
    """
    expected = expected_shapes(contract, config)
    problems = [f"missing {k}" for k in sorted(expected.keys() - actual.keys())]
    problems += [f"unexpected {k}" for k in sorted(actual.keys() - expected.keys())]
    for name in sorted(expected.keys() & actual.keys()):
        if tuple(actual[name]) != expected[name]:
            problems.append(
                f"{name} has shape {list(actual[name])}, config implies {list(expected[name])}"
            )
    return problems


def require_contract(
    contract: DraftContract,
    config: Mapping[str, Any],
    actual: Mapping[str, tuple[int, ...]],
) -> None:
    """Raise :class:`ContractError` listing every problem, or return if there are none."""
    problems = contract_problems(contract, config, actual)
    if problems:
        raise ContractError(
            f"draft tensors do not match what SGLang's {contract.sglang_class} loads "
            f"({'; '.join(problems)}); refusing to write a draft SGLang would load "
            "with uninitialised weights"
        )
