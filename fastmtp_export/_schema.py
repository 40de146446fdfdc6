"""The base of every JSON document other tools read (manifest, token-map summary)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors and instances are immutable: a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)
