"""Stage 4, evaluate: acceptance of an artifact's draft against its base model, per
language and vocabulary mode, with a reference PyTorch chain speculative decoder.

Kept import-free: the CLI and the SGLang plugin import single modules from here.
"""
