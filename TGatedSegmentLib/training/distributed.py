"""Multi-process training through PyTorch's own launcher.

``torchrun --nproc_per_node N -m TGatedSegmentLib train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK;
then every process joins one process group (nccl on CUDA, gloo on CPU), wraps the model in
DistributedDataParallel and trains on its shard of each epoch. Rank 0 alone logs and writes
checkpoints. Without those variables (a plain ``tgated train``) everything here is a no-op.
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")  # where collective tensors live

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_gather(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def any_of(self, flags: list[bool]) -> list[bool]:
        """Each flag OR-ed over the ranks, in one collective."""
        if not self.enabled:
            return [bool(f) for f in flags]
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v > 0) for v in t.tolist()]

    def mean(self, value: float) -> float:
        if not self.enabled:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item()) / self.world_size

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group when launched by torchrun; returns the context and this rank's device."""
    if not launched_by_torchrun():
        return DistContext(device=device), device
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        # generous timeout: rank 0 may spend a while building the cache while the others wait
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=2))
    ctx = DistContext(rank, world, local_rank, backend, device)
    quiet_unless_main()
    if ctx.is_main:
        log.info("distributed training: %d processes, backend %s", world, backend)
    return ctx, device


def process_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def quiet_unless_main() -> None:
    """Rank-0-only logging: the other ranks report errors only."""
    if process_rank() != 0:
        logging.getLogger("TGatedSegmentLib").setLevel(logging.ERROR)


def wrap(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when distributed, else ``model`` itself.

    ``find_unused_parameters``: with the adapter, CLIPSeg's decoder skips two of its three
    reduce/layer blocks and the vision pooler never reaches the loss (authors' forward).
    """
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def teardown(ctx: DistContext) -> None:
    """Leave the process group while the interpreter is fully alive.

    The DDP reducer holds the group; if the wrapped model survives in a reference cycle, the
    group's gloo threads are torn down during interpreter finalisation, which aborts the
    process now and then ("terminate called without an active exception", 1 run in about 15
    on a 2-core CPU). Collecting first releases the reducer before the group is destroyed.
    """
    if ctx.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
