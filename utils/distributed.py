"""Running under torchrun: process group, devices and the collective helpers. Without torchrun
(no WORLD_SIZE) a process is rank 0 of a world of 1, and the helpers return their input."""
import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from utils.errors import UserError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs: its rank among `world_size` processes and its device."""
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, validates into files and saves checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def setup_distributed() -> DistributedContext:
    """Join the torchrun process group, if launched by it (NCCL on GPUs, gloo on CPUs); the device
    is cuda:<local rank> when GPUs exist, else the CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return DistributedContext(rank, world_size, local_rank, device)


def teardown_distributed() -> None:
    if is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, context: DistributedContext) -> nn.Module:
    """DistributedDataParallel under torchrun, the model itself otherwise. find_unused_parameters:
    some parameters never get a gradient (`sep_embeddings`, `q_dense`; the LM and region heads in dense mode)."""
    if not context.is_distributed:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """`model.no_sync()` (gradients accumulate locally) unless `sync` or the model has no DDP."""
    if sync or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def all_ranks_agree(flag: bool) -> bool:
    """True when `flag` is true on every rank (a logical AND across processes)."""
    if not is_initialized():
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        value = value.cuda()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of a CPU tensor over every rank, on the CPU."""
    if not is_initialized():
        return values
    total = values.cuda() if dist.get_backend() == "nccl" else values.clone()
    dist.all_reduce(total)
    return total.cpu()


def any_rank(flag: bool) -> bool:
    """True when `flag` is true on at least one rank."""
    return not all_ranks_agree(not flag)


def broadcast_from_main(value):
    """Rank 0's `value` on every rank (any picklable object)."""
    if not is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def check_on_main(check: Callable[[], object], is_main: bool) -> None:
    """Run `check` on rank 0 only (`is_main`); a UserError it raises is raised on every rank, so
    that no rank goes on alone into work whose collectives would then fail with a traceback."""
    problem = None
    if is_main:
        try:
            check()
        except UserError as error:
            problem = str(error)
    problem = broadcast_from_main(problem)
    if problem:
        raise UserError(problem)


def gather_to_main(value) -> list:
    """Every rank's `value` (any picklable object), in rank order, on rank 0; [] on other ranks."""
    if not is_initialized():
        return [value]
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered or []


def barrier() -> None:
    if is_initialized():
        dist.barrier()
