"""The consumer's contract: exactly which tensors SGLang's MTP draft loader reads.

Every SGLang 0.5.23 MTP draft class (``MiMoMTP.load_weights`` in
``sglang/srt/models/mimo_mtp.py``, ``DeepseekV3ForCausalLMNextN``, ...) maps draft
tensor names onto its parameters and *silently skips* anything it does not recognise;
a misnamed tensor leaves its parameter uninitialised with no error. The draft writer
and ``inspect`` therefore check the written key set against this data, not against
what the reader happened to produce, and ``tests/checkpoints/test_sglang_contract.py``
checks this data against SGLang's own classes.

Shapes are symbolic and resolved from the draft ``config.json`` by the contract's
``dims`` function. For the dense families (:func:`config_dims`):

    H  = hidden_size                Q  = num_attention_heads * head_dim
    KV = num_key_value_heads * head_dim   I = intermediate_size

A name template containing ``{e}`` stands for one tensor per routed expert
(``e`` in ``range(E)``), one containing ``{layer}`` for one per exported MTP layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ContractError

#: K=3 chain speculation, the FastMTP setting: 3 draft steps, top-1, 4 verified tokens.
SGLANG_CHAIN_FLAGS: tuple[tuple[str, str], ...] = (
    ("--speculative-algorithm", "EAGLE"),
    ("--speculative-num-steps", "3"),
    ("--speculative-eagle-topk", "1"),
    ("--speculative-num-draft-tokens", "4"),
)


#: the legend of :func:`config_dims`' symbols, for docs.
DENSE_LEGEND = (
    "H = hidden_size, Q = num_attention_heads x head_dim, "
    "KV = num_key_value_heads x head_dim, I = intermediate_size."
)


@dataclass(frozen=True)
class DraftContract:
    """What one checkpoint family's SGLang MTP draft class loads."""

    family: str
    #: ``architectures[0]`` kept in the draft config (SGLang rewrites it for the draft).
    architecture: str
    #: the class SGLang instantiates for the draft.
    sglang_class: str
    #: draft tensor name template -> symbolic shape (``{e}``: one per routed expert).
    tensors: Mapping[str, tuple[str, ...]]
    #: which layout of the family, where it has several (docs).
    variant: str = ""
    #: config -> value of every shape symbol (and ``E``, the routed-expert count).
    dims: Callable[[Mapping[str, Any]], dict[str, int]] = field(
        default=lambda config: config_dims(config)
    )
    #: what the symbols mean, for docs.
    legend: str = DENSE_LEGEND
    #: config -> the draft's MTP layer indices, for templates with ``{layer}``
    #: (multi-layer families export every MTP layer).
    layers: Callable[[Mapping[str, Any]], range] = field(default=lambda config: range(1))


def int_field(config: Mapping[str, Any], key: str, default: int | None = None) -> int:
    """``config[key]`` as an int (``default`` when absent).

    Raises:
        ContractError: the field is missing (with no default) or not an integer.
    """
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(
            f"config.json lacks a usable {key!r} field needed to size the MTP head "
            f"(found {value!r}); pass the checkpoint's original config.json"
        )
    return value


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
    dims = contract.dims(config)
    out: dict[str, tuple[int, ...]] = {}
    for template, sym in contract.tensors.items():
        shape = tuple(int(s) if s.isdigit() else dims[s] for s in sym)
        experts = range(dims["E"]) if "{e}" in template else range(1)
        layers = contract.layers(config) if "{layer}" in template else range(1)
        for layer in layers:
            for e in experts:
                out[template.format(e=e, layer=layer)] = shape
    return out


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
