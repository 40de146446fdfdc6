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

A draft that keeps a block-FP8 head (:mod:`.fp8`, ``--dtype keep``) also holds a
``NAME_scale_inv`` for each fp8 weight ``NAME``; which weights are fp8 is what the
source has, and each must be one that SGLang's class builds as a block-FP8 linear
layer (``fp8_weights``), with the dimensions its fused layers need whole blocks of.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ContractError
from .fp8 import scale_shapes

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
    #: templates of the weights SGLang's class builds as block-FP8 linear layers when the
    #: draft config has a block-FP8 ``quantization_config`` (empty: never kept in FP8).
    fp8_weights: frozenset[str] = frozenset()
    #: shape symbols those layers need in whole blocks of rows (fused or merged
    #: projections and the MoE experts); SGLang refuses to build them otherwise.
    fp8_aligned: tuple[str, ...] = ()
    #: the class vLLM 0.34 builds for a draft of this layout (``method: mtp``), or
    #: ``None`` where vLLM cannot load this layout (tests/checkpoints/test_vllm_contract.py).
    vllm_class: str | None = None


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


def fp8_problems(
    contract: DraftContract,
    config: Mapping[str, Any],
    fp8: Collection[str],
    block: tuple[int, int],
) -> list[str]:
    """Why SGLang's class cannot load the weights ``fp8`` as block FP8 (empty: it can).

    An fp8 weight whose layer SGLang builds unquantized would be loaded without its
    scale, i.e. wrong, and the scale skipped without a word.
    """
    built = expected_shapes(
        replace(contract, tensors={t: contract.tensors[t] for t in contract.fp8_weights}), config
    )
    problems = [
        f"{n} is fp8 but SGLang's {contract.sglang_class} builds it unquantized"
        for n in sorted(set(fp8) - built.keys())
    ]
    dims = contract.dims(config)
    problems += [
        f"{sym} = {dims[sym]} is not a multiple of the {block[0]}-row block SGLang's "
        "fused block-FP8 layers need"
        for sym in contract.fp8_aligned
        if dims[sym] % block[0]
    ]
    return problems


def contract_problems(
    contract: DraftContract,
    config: Mapping[str, Any],
    actual: Mapping[str, tuple[int, ...]],
    *,
    fp8: Collection[str] = (),
    block: tuple[int, int] = (128, 128),
) -> list[str]:
    """Every way ``actual`` (name -> shape) differs from the contract, sorted.

    ``fp8``: the weights kept in block FP8 (``block`` = ``weight_block_size``): each
    needs its ``NAME_scale_inv`` too, and SGLang must build its layer in FP8.

    Empty means SGLang's loader will fill every MTP parameter from these tensors.
    """
    expected = expected_shapes(contract, config)
    if fp8:
        expected |= scale_shapes({n: expected[n] for n in fp8 if n in expected}, block)
    problems = [f"missing {k}" for k in sorted(expected.keys() - actual.keys())]
    problems += [f"unexpected {k}" for k in sorted(actual.keys() - expected.keys())]
    for name in sorted(expected.keys() & actual.keys()):
        if tuple(actual[name]) != expected[name]:
            problems.append(
                f"{name} has shape {list(actual[name])}, config implies {list(expected[name])}"
            )
    return problems + (fp8_problems(contract, config, fp8, block) if fp8 else [])


def require_contract(
    contract: DraftContract,
    config: Mapping[str, Any],
    actual: Mapping[str, tuple[int, ...]],
    *,
    fp8: Collection[str] = (),
    block: tuple[int, int] = (128, 128),
) -> None:
    """Raise :class:`ContractError` listing every problem, or return if there are none."""
    problems = contract_problems(contract, config, actual, fp8=fp8, block=block)
    if problems:
        raise ContractError(
            f"draft tensors do not match what SGLang's {contract.sglang_class} loads "
            f"({'; '.join(problems)}); refusing to write a draft SGLang would load "
            "with uninitialised weights"
        )
