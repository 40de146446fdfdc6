"""sglang_patch: the SGLang plugin that swaps in a per-language draft vocabulary.

In progress (see README status). Landed so far, all without importing SGLang:
:mod:`.bank` (per-language head rows and pointer-stable active buffers, in-place
switching, remapping carried draft indices), :mod:`.choice` (request and batch
language) and :mod:`.settings` (version guard, kill switch, the artifact's maps).
The hook module and the ``sglang.srt.plugins`` entry point come next; only
``hooks.py`` / ``plugin.py`` may import sglang (tests/test_architecture.py).
"""
