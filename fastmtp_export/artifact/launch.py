"""The command lines that serve an artifact next to its base model (SGLang, vLLM)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from .manifest import Manifest


def sglang_command(
    artifact: Path, manifest: Manifest, base: str | None = None, *, static_map: bool = False
) -> list[str]:
    """argv for ``python -m sglang.launch_server`` with this draft, K=3 chain.

    ``--speculative-draft-model-path`` is always given: without it SGLang loads the
    draft from the base directory and, when that has no MTP tensors, runs with
    uninitialised draft weights and no warning (acceptance ~1.0).

    ``static_map`` adds ``--speculative-token-map``: how stock SGLang (without the
    sglang_patch plugin) serves one fixed vocabulary. It is the union map when the
    artifact ships one (every language finds its hot tokens), else the default
    language's map.
    """
    flags = manifest.sglang.recommended_flags
    argv = ["python", "-m", "sglang.launch_server", "--model-path", base or manifest.source.path]
    if manifest.sglang.base_needs_trust_remote_code:
        argv.append("--trust-remote-code")
    argv += flags[:2]  # --speculative-algorithm EAGLE
    argv += ["--speculative-draft-model-path", str(artifact)]
    argv += flags[2:]
    maps = manifest.token_maps
    if static_map and maps is not None:
        static = maps.union.file if maps.union else maps.languages[maps.default_lang].file
        argv += ["--speculative-token-map", str(artifact / static)]
    return argv


def sglang_command_text(
    artifact: Path, manifest: Manifest, base: str | None = None, *, static_map: bool = False
) -> str:
    """:func:`sglang_command` quoted for a POSIX shell."""
    return shlex.join(sglang_command(artifact, manifest, base, static_map=static_map))


#: K=3 chain speculation, FastMTP's setting: vLLM reruns the one MTP layer per step
VLLM_SPECULATIVE_TOKENS = 3


def vllm_command(artifact: Path, manifest: Manifest, base: str | None = None) -> list[str]:
    """argv for ``vllm serve`` with this draft (``speculative_config`` method ``mtp``).

    vLLM drafts over the full vocabulary: it has no MTP token map, so the artifact's maps
    are not used. Only for an artifact whose layout vLLM's MTP class loads
    (``inspect``'s engines; docs/vllm.md).
    """
    spec = {
        "method": "mtp",
        "model": str(artifact),
        "num_speculative_tokens": VLLM_SPECULATIVE_TOKENS,
    }
    argv = ["vllm", "serve", base or manifest.source.path]
    if manifest.sglang.base_needs_trust_remote_code:
        argv.append("--trust-remote-code")
    return argv + ["--speculative-config", json.dumps(spec)]
