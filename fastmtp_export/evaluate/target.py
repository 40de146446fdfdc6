"""Load the base (target) model and the artifact's draft for ``eval``, checked first.

The target goes through transformers as its stock trunk class (MiMo: Qwen2), so no
remote code runs; its MTP tensors are skipped. The draft is the artifact's MTP layer in
:class:`~.reference.MiMoMTPReference`, sharing the target's embedding and ``lm_head``
as SGLang's ``MiMoMTP`` does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._util.hashing import sha256_bytes
from ..artifact.manifest import Manifest
from ..checkpoints.checkpoint import language_config
from ..errors import EvalError, SourceError
from ..maps.eos import read_json

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class BaseInfo:
    """What ``eval`` checks about the base before loading anything."""

    path: Path
    config: dict[str, Any]
    config_sha256: str


def check_pair(base: Path, artifact: Path, manifest: Manifest) -> BaseInfo:
    """Refuse a base whose shapes cannot serve this draft, before any compute.

    Raises:
        EvalError: no base config, or hidden size / vocab size / family mismatch.
    """
    cfg_file = base / "config.json"
    if not cfg_file.is_file():
        raise EvalError(f"{base} has no config.json; --base must be the local base model directory")
    raw = cfg_file.read_bytes()
    config = read_json(cfg_file)
    draft = read_json(artifact / "config.json")
    for key in ("hidden_size", "vocab_size"):
        if language_config(config).get(key) != language_config(draft).get(key):
            raise EvalError(
                f"base {key} is {language_config(config).get(key)} but the draft's is "
                f"{language_config(draft).get(key)}: "
                f"{base} is not the model {artifact} was exported from "
                f"({manifest.source.path}); pass that base with --base"
            )
    if manifest.source.config_sha256 != sha256_bytes(raw):
        log.warning(
            "%s/config.json differs from the exported source's (%s); evaluating anyway",
            base,
            manifest.source.path,
        )
    return BaseInfo(base, config, sha256_bytes(raw))


def pick_device(device: str) -> torch.device:
    """``auto`` is ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvalError(f"--device {device}: no CUDA device is available; use --device cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on CUDA and fp32 on CPU (exact, and what the CPU lane runs)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def load_target_model(
    path: Path, config: dict[str, Any], family: str, device: torch.device, dtype: torch.dtype
) -> Any:
    """The checkpoint at ``path`` (``config``, of ``family``) as a transformers causal LM on
    ``device``, eval mode, no remote code: the target ``eval`` verifies with and the trunk
    ``train`` keeps frozen.

    Raises:
        SourceError: transformers is not installed, or the weights cannot be loaded.
    """
    try:
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        raise SourceError(
            "loading the target model needs transformers: pip install 'fastmtp-export[eval]'"
        ) from None
    from ..checkpoints.readers import READERS

    cfg = READERS[family].target_config(config)
    model_type = cfg.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **cfg)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the skipped MTP tensors are expected
    transformers.logging.disable_progress_bar()  # ours runs over the prompts
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(path, config=hf_config, dtype=dtype)
    except OSError as exc:
        raise SourceError(f"cannot load the target weights from {path} ({exc})") from exc
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()
    model.to(device)
    return model.eval()
