"""Stage 5, publish: the artifact to the Hugging Face Hub.

Kept import-free: the CLI and the SGLang plugin import single modules from here.
"""
