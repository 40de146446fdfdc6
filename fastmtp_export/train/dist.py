"""This process's place in a ``torchrun`` job: rank, world size, collectives.

Data parallelism sums target counts and gradients across ranks (gloo on CPU, NCCL on
GPU), so N processes compute the same update as one, up to float summation order.
"""

from __future__ import annotations

import os

import torch


class Dist:
    """This process's place in a ``torchrun`` job (or a job of one)."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        #: the head is FSDP2-sharded (:mod:`.shard`): FSDP reduces its gradients
        self.sharded = False
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def sum_(self, t: torch.Tensor) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t)

    def max_(self, n: int) -> int:
        """The largest ``n`` over all ranks."""
        if self.world == 1:
            return n
        import torch.distributed as dist

        t = torch.tensor([n], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
