"""``train``'s options: FastMTP's recipe and the run's mechanics, checked before any work."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import TrainError
from .filters import DataFilter
from .kd import DIRECTIONS, REVERSE, KDConfig
from .shard import MODES


@dataclass(frozen=True)
class TrainOptions:
    """The recipe (FastMTP's defaults) and the run's mechanics."""

    steps: int = 3  #: K, recursive applications of the head
    beta: float = 0.6  #: step k weighs beta^(k-1), normalised
    epochs: int = 1
    lr: float = 5e-5
    batch: int = 8  #: sequences per optimizer step, across all ranks
    warmup: float = 0.05  #: share of the steps with a linear warm-up, then cosine to 0
    max_length: int = 2048
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int = 50  #: optimizer steps between resumable states
    device: str = "auto"
    dtype: str = "auto"  #: the frozen trunk's dtype; the head trains in float32
    mtp_layer: int | None = None
    kd_weight: float = 0.0  #: MTP-D self-distillation: weight of the KL term, 0 = off
    kd_top_n: int = 10_000  #: the KL runs over the main head's top N tokens of each row
    kd_direction: str = REVERSE  #: reverse = KL(step || main head), forward = KL(main || step)
    micro_batch_tokens: int = 4096  #: padded tokens per forward; 0 = one sequence at a time
    cache_gb: float = 4.0  #: host memory for the trunk's states across epochs; 0 = recompute
    drop_cut: bool = False  #: leave out answers cut at the length limit
    max_repeat: float = 1.0  #: leave out answers with a larger repeated-4-gram share; 1 = off
    shard_head: str = "auto"  #: FSDP2 over the torchrun ranks: auto (when it cannot fit), on, off
    hidden: Path | None = None  #: trunk states recorded by ``record-hidden``: no trunk is loaded

    def data_filter(self) -> DataFilter:
        """The filters applied while reading --data."""
        return DataFilter(drop_cut=self.drop_cut, max_repeat=self.max_repeat)

    def kd(self) -> KDConfig | None:
        """The self-distillation term, or None when its weight is 0 (the plain loss)."""
        if self.kd_weight == 0:
            return None
        return KDConfig(self.kd_weight, self.kd_top_n, self.kd_direction)

    def check(self) -> None:
        """One line per impossible option, before anything is loaded."""
        problems = [
            (self.steps < 1, "--steps must be at least 1"),
            (not (math.isfinite(self.beta) and self.beta > 0), "--beta must be positive"),
            (self.epochs < 1, "--epochs must be at least 1"),
            (not (math.isfinite(self.lr) and self.lr > 0), "--lr must be positive"),
            (self.batch < 1, "--batch must be at least 1"),
            (not 0 <= self.warmup < 1, "--warmup must be in [0, 1)"),
            (self.max_length < 3, "--max-length must be at least 3"),
            (self.save_every < 1, "--save-every must be at least 1"),
            (
                not (math.isfinite(self.kd_weight) and self.kd_weight >= 0),
                "--kd-weight must be 0 (off) or a positive number",
            ),
            (self.kd_top_n < 1, "--kd-top-n must be at least 1"),
            (
                self.kd_direction not in DIRECTIONS,
                f"--kd-direction must be one of {', '.join(DIRECTIONS)}",
            ),
            (self.micro_batch_tokens < 0, "--micro-batch-tokens must be 0 or more"),
            (
                not (math.isfinite(self.cache_gb) and self.cache_gb >= 0),
                "--cache-gb must be 0 (off) or a positive number",
            ),
            (
                not (math.isfinite(self.max_repeat) and 0 <= self.max_repeat <= 1),
                "--max-repeat must be in [0, 1] (1: off)",
            ),
            (self.shard_head not in MODES, f"--shard-head must be one of {', '.join(MODES)}"),
        ]
        for bad, message in problems:
            if bad:
                raise TrainError(message)
