"""The base of every JSON document other tools read (manifest, token-map summary)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class StrictModel(BaseModel):
    """Unknown keys are errors and instances are immutable: a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: optional fields written only when set: a document without them is exactly the
    #: older format version that predates them, so older readers keep reading it
    omit_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self.omit_when_none:
                if data.get(name) is None:
                    data.pop(name, None)
        return data

    def canonical_json(self) -> str:
        """Sorted keys, 2-space indent, trailing newline: reruns are byte-identical."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
