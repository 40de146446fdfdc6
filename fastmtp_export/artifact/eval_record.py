"""The evaluation record: ``eval --json`` output and the manifest's ``evaluation``.

Kept apart from the evaluator so the manifest (read by ``inspect`` and the SGLang
plugin) imports only pydantic.
"""

from __future__ import annotations

from pydantic import Field

from .._util.schema import StrictModel


class AcceptanceStats(StrictModel):
    prompts: int = Field(description="Prompts in this group.")
    output_tokens: int = Field(description="Tokens generated (the prefill's first included).")
    verify_steps: int = Field(description="Target verify forwards.")
    accept_length: float | None = Field(
        description="tau: output tokens / verify steps (SGLang's spec_accept_length)."
    )
    histogram: list[int] = Field(description="[j]: verify steps that accepted j drafts, 0..K.")
    position_acceptance: list[float | None] = Field(
        description="[p-1]: share of verify steps accepting at least p drafts (unconditional)."
    )
    conditional_acceptance: list[float | None] = Field(
        description="[p-1]: share accepting at least p drafts among those accepting p - 1."
    )
    draft_tokens_per_s: float | None = Field(
        description="Draft tokens proposed per second of draft compute on this device."
    )
    speedup: float | None = Field(
        description="Greedy seconds / speculative seconds of this reference decoder "
        "(not SGLang's speedup)."
    )


class ModeResult(StrictModel):
    all: AcceptanceStats = Field(description="Every prompt.")
    languages: dict[str, AcceptanceStats] = Field(description="Per prompt language.")


class Mismatch(StrictModel):
    line: int = Field(description="Line of the prompt file.")
    vocab: str = Field(description="Vocabulary mode whose output differed.")
    position: int = Field(description="First differing output token index.")


class EvaluationInfo(StrictModel):
    base_model: str = Field(description="The base model directory evaluated against.")
    base_config_sha256: str = Field(description="sha256 of the base config.json bytes.")
    device: str = Field(description="Where the decoder ran, e.g. cpu or cuda (GPU name).")
    dtype: str = Field(description="Compute dtype of target and draft.")
    k: int = Field(description="Draft steps per verify (K).")
    max_new_tokens: int = Field(description="Generation limit per prompt.")
    prompts_file: str = Field(description="Name of the prompt file.")
    prompts_sha256: str = Field(description="sha256 of the prompt file bytes.")
    prompts: int = Field(description="Prompts evaluated.")
    lossless: bool = Field(description="Every speculative output equals greedy decoding.")
    mismatches: list[Mismatch] = Field(description="Outputs that differed from greedy.")
    modes: dict[str, ModeResult] = Field(description="Results per vocabulary mode.")
    tool_version: str = Field(description="fastmtp-export version that measured.")
