"""``fastmtp-export families``: the checkpoint families export reads, and how SGLang and
vLLM serve each."""

from __future__ import annotations

from typing import Any

import typer

from ._options import JsonOpt
from ._output import emit_json


def families(json_out: JsonOpt = False) -> None:
    """List the MTP checkpoint families export reads.

    For each: the config architectures that select it, the SGLang 0.5.23 class that
    loads its draft, whether SGLang can serve it with per-language token maps, whether
    ``eval`` and ``train`` run its head, and the vLLM 0.34 class that loads its draft
    (marked "--for vllm" where that export option is needed).
    """
    from ..checkpoints.readers import READERS
    from ..heads.registry import has_head

    def vllm_draft(family: str) -> dict[str, Any]:
        reader = READERS[family]
        classes = [c.vllm_class for c in reader.layout("vllm").contracts() if c.vllm_class]
        return {
            "vllm_class": " / ".join(dict.fromkeys(classes)) or None,
            "vllm_needs_for_vllm": not any(c.vllm_class for c in reader.contracts()),
        }

    rows: list[dict[str, Any]] = [
        {
            "family": family,
            "architectures": list(reader.architectures),
            "sglang_class": reader.contract.sglang_class,
            "mtp_tensors": reader.MARKER,
            "token_maps": reader.NO_MAPS is None,
            "multi_layer_eagle": reader.ALL_LAYERS,
            "eval_and_train": has_head(family),
            **vllm_draft(family),
            **({"no_maps_reason": reader.NO_MAPS} if reader.NO_MAPS else {}),
        }
        for family, reader in sorted(READERS.items())
    ]
    if json_out:
        emit_json(rows)
        return
    width = max(len(r["family"]) for r in rows)
    cls_width = max(len(r["sglang_class"]) for r in rows)
    for r in rows:
        maps = "per-language maps" if r["token_maps"] else "full vocabulary only"
        runs = "eval, train" if r["eval_and_train"] else "export only"
        vllm = f"vLLM {r['vllm_class']}" + (" (--for vllm)" if r["vllm_needs_for_vllm"] else "")
        typer.echo(
            f"{r['family']:<{width}}  {r['sglang_class']:<{cls_width}}  {maps:<20}  "
            f"{runs:<11}  {', '.join(r['architectures'])}  {vllm}"
        )
