"""Shared plumbing every stage uses: atomic writes, confined paths, hashing, units,
progress bars and the strict pydantic base. Imports nothing from the stages.

Kept import-free: the CLI and the SGLang plugin import single modules from here.
"""
