"""torch.distributed for the runtime: the same command under `torchrun` trains with DDP.

gloo on CPU, nccl on CUDA. Every rank decodes the (cached) dataset and takes its shard of each epoch's
order (DistributedSampler's rule: rank::world_size); only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["Env", "all_sum", "any_true", "cleanup", "setup", "wrap"]


@dataclass(frozen=True)
class Env:
    rank: int
    world_size: int
    device: torch.device
    initialized: bool


def setup() -> Env:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single process."""
    import torch
    import torch.distributed as dist

    from .._builder import pick_device

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Env(0, 1, pick_device(None), False)
    rank = int(os.environ["RANK"])
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Env(rank, world_size, device, True)


def wrap(model: torch.nn.Module, env: Env) -> torch.nn.Module:
    if not env.initialized:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def average_gradients(params: list, env: Env) -> None:
    """Average `params`' gradients over the ranks, in one flat all-reduce: what DDP does inside its forward and
    backward, for a task that calls its modules directly and steps its optimizers one by one (a GAN's
    discriminator, then its generator), where DDP's hooks would not fire."""
    if not env.initialized or env.world_size < 2:
        return
    import torch
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= env.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_sum(values: list[float], env: Env) -> list[float]:
    """Sum numbers over all ranks (epoch statistics)."""
    if not env.initialized:
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def any_true(flag: bool, env: Env) -> bool:
    """True on every rank when any rank's flag is: all ranks stop at the same batch, or DDP would hang."""
    if not env.initialized:
        return flag
    return all_sum([float(flag)], env)[0] > 0


def cleanup(env: Env) -> None:
    if env.initialized:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
