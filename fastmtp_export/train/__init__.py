"""Stage 1b, train: fine-tune a checkpoint's MTP head with the FastMTP recipe on
self-distilled data, and the distillation client that produces that data.

Kept import-free: the CLI and the SGLang plugin import single modules from here.
"""
