"""Heads larger than one device: FSDP2 (``fully_shard``) over the ranks of a ``torchrun`` job.

DeepSeek-V3's MTP layer is a full MoE layer of about 14 billion parameters: trained in
float32 with AdamW it needs 16 bytes per parameter (weight, gradient, two moments),
about 210 GiB, which no single GPU holds. Sharded over N ranks each holds 1/N of the
parameters, gradients and optimizer state; a rank gathers a module's parameters only
while that module runs (PyTorch's own FSDP2, nothing of ours in the collectives).

- The decoder layer and then the whole head are ``fully_shard``-ed; ``step`` is
  registered as a forward method, so the recursive steps gather and free as a forward.
- FSDP2 averages gradients over ranks; the trainer's loss is a share of the global
  mean (targets counted over all ranks), so each rank's loss is scaled by the world
  size: the update equals the unsharded one, up to float summation order.
- Every rank runs the same number of forward/backward passes (FSDP's collectives are
  matched call for call): ranks with fewer micro-batches run empty ones.
- Saved states hold full tensors in the unsharded layout (the optimizer keyed by
  parameter index), so a run resumes with or without sharding, on any world size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import TrainError

log = logging.getLogger(__name__)

#: float32 weight, gradient and AdamW's two moments, per trained parameter
BYTES_PER_PARAM = 16
#: the share of a device's memory the head's training state may take unsharded (the
#: frozen embedding, ``lm_head``, activations and the trunk need the rest)
FIT_SHARE = 0.5
MODES = ("auto", "on", "off")


def device_bytes(device: torch.device) -> int:
    """Memory of ``device``: the GPU's total, or the machine's physical memory."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def should_shard(mode: str, params: int, device: torch.device, world: int) -> bool:
    """Whether to shard a head of ``params`` trained parameters (``--shard-head``).

    ``auto`` shards when the head's training state does not fit :data:`FIT_SHARE` of
    the device and the job has several ranks.

    Raises:
        TrainError: sharding asked for (or needed) in a job of one process.
    """
    need = params * BYTES_PER_PARAM
    have = device_bytes(device) * FIT_SHARE
    gib = 2**30
    if mode == "on" or (mode == "auto" and need > have):
        if world < 2:
            why = (
                "--shard-head on"
                if mode == "on"
                else (
                    f"the MTP head's training state ({need / gib:.1f} GiB: {params:,} float32 "
                    f"parameters, gradients and AdamW moments) exceeds half of {device}'s "
                    f"{have / FIT_SHARE / gib:.1f} GiB"
                )
            )
            raise TrainError(
                f"{why}: sharding needs several processes; run under "
                "torchrun --nproc-per-node N -m fastmtp_export train ... (each rank then "
                "holds 1/N), or pass --shard-head off to try unsharded"
            )
        return True
    return False


def shard(head: nn.Module, device: torch.device, world: int) -> None:
    """``fully_shard`` ``head`` (its decoder layer first) over all ranks, in place."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    mesh = init_device_mesh(device.type, (world,))
    layer = getattr(head, "layer", None)
    if isinstance(layer, nn.Module):
        fully_shard(layer, mesh=mesh)
    fully_shard(head, mesh=mesh)
    register_fsdp_forward_method(head, "step")
    log.info("head sharded over %d ranks (FSDP2)", world)


def full_state(
    head: nn.Module, opt: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Full head and optimizer state on CPU, in the unsharded layout (collective: every
    rank calls it; only rank 0 receives the tensors, the others get empty dicts)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    got: tuple[Any, Any] = get_state_dict(
        head, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    model, optim = got
    if not optim:
        return dict(model), {}
    index = {name: i for i, (name, _) in enumerate(head.named_parameters())}
    by_index = {
        "state": {index[name]: dict(v) for name, v in optim["state"].items()},
        "param_groups": [
            {**g, "params": [index[name] for name in g["params"]]} for g in optim["param_groups"]
        ],
    }
    return dict(model), by_index


def full_model(head: nn.Module) -> dict[str, torch.Tensor]:
    """The head's full state on CPU (collective; the tensors reach rank 0 only): what the
    trained checkpoint needs, without gathering the optimizer's moments."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model: dict[str, Any] = get_model_state_dict(head, options=options)
    return model


def load_full(
    head: nn.Module,
    opt: torch.optim.Optimizer,
    model: Mapping[str, torch.Tensor],
    optim: Mapping[str, Any],
) -> None:
    """Inverse of :func:`full_state`: every rank loads the full state and keeps its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    names = [name for name, _ in head.named_parameters()]
    by_name: Any = {
        "state": {names[i]: v for i, v in optim["state"].items()},
        "param_groups": [
            {**g, "params": [names[i] for i in g["params"]]} for g in optim["param_groups"]
        ],
    }
    set_state_dict(
        head, opt, model_state_dict=dict(model), optim_state_dict=by_name,
        options=StateDictOptions(full_state_dict=True),
    )  # fmt: skip
