"""Stage 3, artifact: the draft directory SGLang loads (``export``), its manifest, model
card and launch command, the maps it ships, and its offline validation (``inspect``).

Kept import-free: the CLI and the SGLang plugin import single modules from here.
"""
