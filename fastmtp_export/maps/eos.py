"""EOS ids a model can generate, read from its ``config.json`` and ``generation_config.json``.

Every hot-token map must contain them: a draft that cannot propose EOS never lets
speculation end an answer early. The token-map builder and the exporter both ask.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..checkpoints.checkpoint import language_config
from ..errors import FastMTPError


def int_ids(value: Any) -> list[int]:
    """``151645`` or ``[151645, 151643]`` -> list of ints (anything else is ignored)."""
    items = value if isinstance(value, list) else [value]
    return [i for i in items if isinstance(i, int) and not isinstance(i, bool)]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, ``{}`` when absent.

    Raises:
        FastMTPError: present but unreadable or not JSON.
    """
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise FastMTPError(f"{path} is unreadable ({exc}); fix or remove it") from exc
    return doc if isinstance(doc, dict) else {}


def model_eos_ids(directory: Path, config: dict[str, Any] | None = None) -> list[int]:
    """``eos_token_id`` of ``generation_config.json`` then ``config.json``, deduplicated."""
    if config is None:
        config = read_json(directory / "config.json")
    gen = read_json(directory / "generation_config.json")
    return list(
        dict.fromkeys(
            int_ids(gen.get("eos_token_id"))
            + int_ids(config.get("eos_token_id"))
            + int_ids(language_config(config).get("eos_token_id"))
        )
    )
