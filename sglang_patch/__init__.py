"""sglang_patch: the SGLang plugin that swaps in a per-language draft vocabulary.

SGLang loads it through the ``sglang.srt.plugins`` entry point (:mod:`.plugin`), which
registers the hooks of :mod:`.hooks` (the only module importing sglang besides the
plugin). The logic lives in SGLang-free modules: :mod:`.bank` (per-language head rows,
pointer-stable active buffers, index remapping), :mod:`.choice` (request and batch
language) and :mod:`.settings` (version guard, kill switch, the artifact's maps).
See docs/sglang_patch.md.
"""
