"""Stage 1, read: a source checkpoint (sharded safetensors), its MTP head per family
(:mod:`.readers`), SGLang's loader contract, and synthetic checkpoints for tests and
the demo.

Kept import-free: the CLI and the SGLang plugin import single modules from here.
"""
