"""Per-expert checkpoint tensors <-> transformers' fused expert parameters.

Releases (and SGLang's loaders) name one ``gate_proj`` / ``up_proj`` / ``down_proj``
triple per routed expert; transformers 5 holds all experts in two parameters,
``experts.gate_up_proj`` [E, 2I, H] (gate rows first) and ``experts.down_proj``
[E, H, I]. Training writes the checkpoint's own layout back.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

import torch

_EXPERT = re.compile(
    r"^(?P<pre>.*experts\.)(?P<e>\d+)\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$"
)


def fuse_experts(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` with every per-expert triple replaced by the two fused tensors."""
    out: dict[str, torch.Tensor] = {}
    groups: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for name, t in weights.items():
        m = _EXPERT.match(name)
        if m is None:
            out[name] = t
            continue
        groups.setdefault(m["pre"], {}).setdefault(int(m["e"]), {})[m["proj"]] = t
    for pre, experts in groups.items():
        order = sorted(experts)
        if order != list(range(len(order))) or any(len(experts[e]) != 3 for e in order):
            raise ValueError(f"{pre}*: experts are not a complete 0..E-1 set of gate/up/down")
        out[pre + "gate_up_proj"] = torch.stack(
            [torch.cat((experts[e]["gate_proj"], experts[e]["up_proj"])) for e in order]
        )  # [E, 2I, H]
        out[pre + "down_proj"] = torch.stack([experts[e]["down_proj"] for e in order])  # [E, H, I]
    return out


def split_experts(
    weights: Mapping[str, torch.Tensor], like: Collection[str]
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`fuse_experts` for the fused tensors whose per-expert names are
    in ``like`` (the source's names); fused tensors the source also had fused stay."""
    out: dict[str, torch.Tensor] = {}
    for name, t in weights.items():
        pre = name.removesuffix("gate_up_proj").removesuffix("down_proj")
        if pre == name or not pre.endswith("experts.") or (pre + "0.gate_proj.weight") not in like:
            out[name] = t
            continue
        for e in range(t.shape[0]):
            if name.endswith("gate_up_proj"):
                gate, up = t[e].chunk(2)  # [I, H] each
                out[f"{pre}{e}.gate_proj.weight"] = gate
                out[f"{pre}{e}.up_proj.weight"] = up
            else:
                out[f"{pre}{e}.down_proj.weight"] = t[e]  # [H, I]
    return out
