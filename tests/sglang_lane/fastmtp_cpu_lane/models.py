"""Model classes on CPU (1 AROUND hook): GLM-4.5's ``set_embed_and_head``.

``Glm4MoeForCausalLM.set_embed_and_head`` (inherited by the NextN draft class,
``sglang/srt/models/glm4_moe.py``) ends with ``torch.cuda.empty_cache()`` and
``torch.cuda.synchronize()``, which stop a CPU server at start-up ("Found no NVIDIA
driver") when EAGLE binds the target's embedding and head to the draft. The hook does
the same rebinding without the CUDA calls for CPU tensors; MiMo's class already goes
through the platform layer and needs nothing.
"""

from __future__ import annotations

from typing import Any

from .status import record

GLM_SET_EMBED_AND_HEAD = "sglang.srt.models.glm4_moe.Glm4MoeForCausalLM.set_embed_and_head"


def set_embed_and_head_around(original: Any, model: Any, embed: Any, head: Any) -> None:
    """Bind ``embed`` and ``head`` as SGLang does, minus ``torch.cuda`` on a CPU model."""
    if embed.device.type != "cpu":
        return original(model, embed, head)
    record("hook:glm_set_embed_and_head")
    del model.model.embed_tokens.weight
    del model.lm_head.weight
    model.model.embed_tokens.weight = embed
    model.lm_head.weight = head
    return None


def register_hooks() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(GLM_SET_EMBED_AND_HEAD, set_embed_and_head_around, HookType.AROUND)
    record("registered:models")
