"""The base of every JSON document other tools read (manifest, token-map summary)."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors and instances are immutable: a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def canonical_json(self) -> str:
        """Sorted keys, 2-space indent, trailing newline: reruns are byte-identical."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
