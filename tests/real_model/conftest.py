"""Shared real-model fixtures: SmolLM2 converted once per session, served plainly per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fastmtp_export.checkpoints.gguf_llama import convert_llama_gguf, smollm2_gguf
from fastmtp_export.errors import SourceError

from ..sglang_lane.server import REAL_MODEL_FLAGS, Server, sglang_import_problem, sglang_server


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    problem = sglang_import_problem()
    if problem is not None:
        pytest.fail(
            f"the SGLang CPU lane cannot import SGLang ({problem}); `make test` installs it"
        )
    try:
        gguf = smollm2_gguf()
    except SourceError as exc:
        pytest.fail(f"{exc} (`make test` installs it)")
    return convert_llama_gguf(gguf, tmp_path_factory.mktemp("smollm2") / "model")


@pytest.fixture(scope="module")
def plain(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """SmolLM2 served without speculation, with its tokenizer (chat completions)."""
    work = tmp_path_factory.mktemp("plain")
    with sglang_server(
        smollm2, work, *REAL_MODEL_FLAGS, "--max-running-requests", "8", tokenizer=True
    ) as server:
        yield server
