"""Stage 2, maps: corpora, tokenizers, language detection, token counting, and the
per-language and union hot-token maps built from them (``token-map build``).

Kept import-free: the CLI and the SGLang plugin import single modules from here.
"""
