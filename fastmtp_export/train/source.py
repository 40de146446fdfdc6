"""What training reads from the source checkpoint: the MTP layer, the frozen target, the
tokenizer, and the files a head checkpoint carries over unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._util.atomic import atomic_write
from ..checkpoints.checkpoint import SourceCheckpoint
from ..checkpoints.readers import resolve_reader
from ..checkpoints.readers.base import HeadPlan
from ..errors import TrainError
from ..heads.registry import has_head, no_head

#: files a head checkpoint copies byte for byte, so ``eval --base SOURCE`` matches it
#: (config sha256) and ``train`` / ``token-map build`` find the tokenizer next to it
CARRIED = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
)


@dataclass
class Source:
    """An opened source checkpoint and its chosen MTP layer."""

    ckpt: SourceCheckpoint
    plan: HeadPlan

    @classmethod
    def open(cls, path: Path, layer: int | None = None) -> Source:
        """Open ``path`` and pick its MTP layer (raises the exporter's errors)."""
        ckpt = SourceCheckpoint.open(path)
        reader = resolve_reader(ckpt)
        if not has_head(reader.family):
            raise TrainError(no_head(reader.family))
        return cls(ckpt, reader.plan(ckpt, layer))

    def _read(self, names: Mapping[str, str]) -> dict[str, torch.Tensor]:
        """``{key: tensor}`` for ``names`` ``{key: source tensor name}``: each shard opened
        once, a name asked for twice read once."""
        from safetensors import safe_open

        by_shard: dict[str, set[str]] = {}
        for src in set(names.values()):
            by_shard.setdefault(self.ckpt.weight_map[src], set()).add(src)
        got: dict[str, torch.Tensor] = {}
        for shard, srcs in sorted(by_shard.items()):
            with safe_open(str(self.ckpt.path / shard), framework="pt") as fh:
                for src in sorted(srcs):
                    got[src] = fh.get_tensor(src)
        return {key: got[src] for key, src in names.items()}

    def head_weights(self) -> dict[str, torch.Tensor]:
        """The chosen layer's tensors under draft names (``model.mtp_layers.0.*``)."""
        return self._read({dst: info.name for dst, info in self.plan.tensors.items()})

    def embed_and_head(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The target's embedding and ``lm_head`` [V, H], read alone from the checkpoint (no
        trunk): what the head shares when the trunk's states were recorded elsewhere. A
        checkpoint without ``lm_head.weight`` ties it to the embedding.

        Raises:
            TrainError: the checkpoint lacks the embedding.
        """
        from ..checkpoints.readers import READERS

        names = {"embed": READERS[self.plan.family].TRUNK_EMBED, "head": "lm_head.weight"}
        if names["embed"] not in self.ckpt.weight_map:
            raise TrainError(
                f"{self.ckpt.path} lacks {names['embed']}: training from recorded states still "
                "reads the target's embedding and lm_head; pass the full checkpoint"
            )
        if names["head"] not in self.ckpt.weight_map:
            names["head"] = names["embed"]  # tied embeddings
        got = self._read(names)  # [V, H] each
        return got["embed"].to(device), got["head"].to(device)

    def load_target(self, device: torch.device, dtype: torch.dtype) -> Any:
        """The frozen trunk as a transformers causal LM (no remote code), eval mode."""
        from ..evaluate.target import load_target_model

        model = load_target_model(self.ckpt.path, self.ckpt.config, self.plan.family, device, dtype)
        model.requires_grad_(False)
        return model

    def carry(self, out: Path) -> list[str]:
        """Copy :data:`CARRIED` files that exist into ``out`` (atomically each)."""
        copied = []
        for name in CARRIED:
            src = self.ckpt.path / name
            if src.is_file():
                atomic_write(out / name, src.read_bytes())
                copied.append(name)
        return copied


def refuse_overlap(out: Path, inputs: list[Path]) -> None:
    """Refuse an ``--out`` that is, holds or sits inside an input, or is a file."""
    real = out.resolve()
    for path in inputs:
        p = path.resolve()
        if real == p or p.is_relative_to(real) or real.is_relative_to(p):
            raise TrainError(
                f"--out {out} overlaps the input {path}; inputs are never modified, "
                "choose another --out"
            )
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file; pass a directory")


def check_out(out: Path, source: Path, data: list[Path], *, resume: bool, overwrite: bool) -> None:
    """Refuse an ``--out`` that would touch inputs or silently mix two runs."""
    refuse_overlap(out, [source, *data])
    from .state import STATE_NAME

    if resume or overwrite or not out.is_dir():
        return
    if (out / STATE_NAME).exists():
        raise TrainError(
            f"--out {out} holds a stopped run ({STATE_NAME}); pass --resume to continue it, "
            "or --overwrite to start over"
        )
    if any(out.iterdir()):
        raise TrainError(f"--out {out} is not empty; pass --overwrite or another --out")


def clear_out(out: Path) -> None:
    """``--overwrite``: remove a previous run's files (only those this tool writes)."""
    from .state import OUTPUT_FILES, STATE_NAME

    for name in (*OUTPUT_FILES, STATE_NAME, *CARRIED):
        (out / name).unlink(missing_ok=True)
