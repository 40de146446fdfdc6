"""sglang_patch: the SGLang plugin that swaps in a per-language draft vocabulary.

Empty for now; the runtime lands with the sglang_patch issue. It must never import
sglang at import time.
"""
