"""One family's MTP head as a PyTorch module built from the installed transformers.

The decoder layer is the family's own transformers class (attention, MoE routing,
rotary and norms exactly as transformers implements the base model); this module adds
the MTP wiring that transformers does not ship (:class:`~.spec.HeadSpec`). The same
module serves ``eval`` (no grad, with a KV cache, :meth:`FamilyHead.trunk`) and
``train`` (autograd over padded batches, :meth:`FamilyHead.step`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ..checkpoints.checkpoint import language_config
from .experts import fuse_experts, split_experts
from .spec import HeadSpec, single_layer

#: module parameter names of the four fusion pieces
_FUSION = ("embed_norm.weight", "hidden_norm.weight", "proj.weight", "final_norm.weight")


def hf_config(config: Mapping[str, Any], family: str) -> Any:
    """The transformers config of the one-layer MTP model (see :func:`single_layer`), from
    the config transformers loads the family's target with (the reader's
    ``target_config``: no remote-code or quantization keys, LongCat's rotary width)."""
    from transformers import AutoConfig

    from ..checkpoints.readers import READERS

    cfg = single_layer(language_config(READERS[family].target_config(config)))
    cfg.pop("architectures", None)
    model_type = cfg.pop("model_type")
    out = AutoConfig.for_model(model_type, **cfg)
    out._attn_implementation = "sdpa"
    out._experts_implementation = "eager"
    return out


class LayerCache:
    """The draft's KV cache: a transformers ``DynamicCache`` that :meth:`crop` rolls back."""

    def __init__(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache()

    def __len__(self) -> int:
        return int(self.cache.get_seq_length())

    def crop(self, length: int) -> None:
        extra = len(self) - length
        if extra > 0:
            self.cache.crop(-extra)

    def save(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's cached keys and values, to :meth:`restore` after speculation."""
        layers: list[Any] = self.cache.layers  # attention layers: keys [B, nkv, S, hd]
        return [(layer.keys.clone(), layer.values.clone()) for layer in layers]

    def restore(self, saved: list[tuple[torch.Tensor, torch.Tensor]], dirty: slice) -> None:
        """Back to :meth:`save`'s state (``dirty``: unused, the whole state is put back)."""
        layers: list[Any] = self.cache.layers
        for layer, (keys, values) in zip(layers, saved, strict=True):
            layer.keys, layer.values = keys.clone(), values.clone()


class FamilyHead(nn.Module):
    """The MTP layer (trainable, in its dtype) over the target's frozen embedding and head."""

    def __init__(
        self,
        spec: HeadSpec,
        weights: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        embed: torch.Tensor,
        lm_head: torch.Tensor,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Args:
        weights: the draft's tensors under their draft names (the artifact's, or a
            source layer's after the reader's renaming).
        embed, lm_head: the target's [V, H] tensors, kept frozen.
        dtype: parameter dtype; default: the dtype of the projection.
        """
        super().__init__()
        self.spec = spec
        self.config = hf_config(config, spec.family)
        mod = importlib.import_module(spec.module)
        norm = getattr(mod, spec.prefix + "RMSNorm")
        h, eps = self.config.hidden_size, self.config.rms_norm_eps
        dtype = dtype or weights[spec.proj].dtype
        with torch.device("meta"):  # filled by load_state_dict(assign=True): no random init
            self.embed_norm = norm(h, eps=eps)
            self.hidden_norm = norm(h, eps=eps)
            self.proj = nn.Linear(2 * h, h, bias=False)
            self.final_norm = norm(h, eps=eps)
            if spec.build_layer is not None:
                self.layer = spec.build_layer(mod, self.config)
            else:
                self.layer = getattr(mod, spec.prefix + "DecoderLayer")(self.config, 0)
        self.rotary = getattr(mod, spec.rotary or spec.prefix + "RotaryEmbedding")(self.config)
        self._source = set(weights)
        given = self._module_weights(weights, dtype)
        self._check_names(given)
        self.load_state_dict(given, strict=True, assign=True)
        if meta := [n for n, b in self.named_buffers() if b.is_meta]:  # non-persistent ones
            raise ValueError(f"{spec.family} head: buffer {meta[0]} is not initialised")
        self.embed: torch.Tensor
        self.lm_head: torch.Tensor
        self.register_buffer("embed", embed.detach().to(dtype), persistent=False)  # [V, H]
        self.register_buffer("lm_head", lm_head.detach().to(dtype), persistent=False)  # [V, H]
        self.rotary.to(embed.device)
        self.dtype = dtype

    @classmethod
    def of(
        cls,
        family: str,
        weights: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        embed: torch.Tensor,
        lm_head: torch.Tensor,
        dtype: torch.dtype | None = None,
    ) -> FamilyHead:
        """``family``'s registered head (:data:`~.registry.HEADS`) over these tensors."""
        from .registry import HEADS

        return cls(HEADS[family](config), weights, config, embed, lm_head, dtype)

    def _module_weights(
        self, weights: Mapping[str, torch.Tensor], dtype: torch.dtype
    ) -> dict[str, torch.Tensor]:
        """Draft names -> this module's state-dict names (experts fused)."""
        s = self.spec
        fusion = dict(zip(s.fusion_names, _FUSION, strict=True))
        out: dict[str, torch.Tensor] = {}
        layer: dict[str, torch.Tensor] = {}
        for name, t in weights.items():
            if name in fusion:
                out[fusion[name]] = t
            elif (sub := s.layer_name(name)) is not None:
                layer[sub] = t
            else:
                raise ValueError(f"{s.family} head: tensor {name} has no place in the MTP layer")
        out |= {"layer." + k: v for k, v in fuse_experts(layer).items()}
        return {k: v.detach().to(dtype).clone() for k, v in out.items()}

    def _check_names(self, given: Mapping[str, torch.Tensor]) -> None:
        """The draft fills every tensor of the layer and nothing else (one-line errors
        under draft names; transformers' own message lists module names)."""
        s, want = self.spec, set(self.state_dict())
        names = dict(zip(_FUSION, s.fusion_names, strict=True))
        if extra := sorted(set(given) - want):
            name = extra[0].removeprefix("layer.")
            raise ValueError(
                f"{s.family} head: the draft's {s.draft_name(name)} has no place in the "
                f"{s.prefix} MTP layer; the draft is not this family's layout"
            )
        if missing := sorted(want - set(given)):
            name = names.get(missing[0]) or s.draft_name(missing[0].removeprefix("layer."))
            raise ValueError(
                f"{s.family} head: the draft lacks {name} ({len(missing)} tensor(s) missing); "
                "re-export it from the full checkpoint"
            )

    def weights(self, state: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The head's tensors under their draft names and layout (experts split back), from
        the module or from a full ``state`` dict of it (a sharded head's, gathered)."""
        s = self.spec
        names = dict(zip(_FUSION, s.fusion_names, strict=True))
        state = self.state_dict() if state is None else state
        layer = {k.removeprefix("layer."): v for k, v in state.items() if k.startswith("layer.")}
        like = {sub for n in self._source if (sub := s.layer_name(n)) is not None}
        out = {names[k]: v for k, v in state.items() if k in names}
        out |= {s.draft_name(k): v for k, v in split_experts(layer, like).items()}
        return {k: v.detach() for k, v in out.items()}

    def new_cache(self) -> LayerCache:
        return LayerCache()

    def step(
        self,
        hidden: torch.Tensor,
        next_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """One MTP step: hidden [..., T, H], next_ids [..., T] -> out [..., T, H].

        ``positions`` [T] (shared by a padded batch) follow the cached positions; with
        ``cache`` the T positions attend to the cached ones and are appended.
        """
        lead = hidden.shape[:-2]
        hidden = hidden.reshape(-1, *hidden.shape[-2:])  # [B, T, H]
        ids = next_ids.reshape(-1, next_ids.shape[-1])  # [B, T]
        e = self.embed[ids]  # [B, T, H]
        if self.spec.zero_first:
            e = e.masked_fill((positions == 0)[:, None], 0.0)
        parts = (self.hidden_norm(hidden.to(self.dtype)), self.embed_norm(e))
        x = self.proj(
            torch.cat(parts if self.spec.hidden_first else parts[::-1], dim=-1)
        )  # [B, T, H]
        pos = positions[None].expand(x.shape[0], -1)  # [B, T]
        t, past = x.shape[1], len(cache) if cache is not None else 0
        mask = None
        if t > 1 and past:  # T new positions after cached ones: causal with an offset
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)[None, None]
        out = self.layer(
            hidden_states=x,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache.cache if cache is not None else None,
            use_cache=cache is not None,
            position_embeddings=self.rotary(x, pos),
        )
        out = out[0] if isinstance(out, tuple) else out
        return self.final_norm(out).reshape(*lead, t, -1)  # [..., T, H]

    @torch.no_grad()
    def trunk(
        self,
        hidden: torch.Tensor,
        next_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """Eval's step: hidden [T, H], next_ids [T], positions [T] -> out [T, H]."""
        return self.step(hidden, next_ids, positions, cache)

    @torch.no_grad()
    def forward(
        self,
        hidden: torch.Tensor,
        next_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: LayerCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [T, V] float32, out [T, H]) of one teacher-forced step."""
        out = self.trunk(hidden, next_ids, positions, cache)
        return F.linear(out, self.lm_head).float(), out

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits of final-normed rows, out [N, H] -> [N, V]."""
        return F.linear(out, self.lm_head)
