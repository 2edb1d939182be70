"""Sharding a run across processes with `torch.distributed` (launched by ``torchrun``).

When ``torchrun --nproc-per-node N`` starts the run (``WORLD_SIZE`` > 1 in the
environment), the process group is initialised from the environment: backend ``nccl``
when the run uses CUDA (each rank on ``cuda:LOCAL_RANK``), ``gloo`` otherwise. Rank r
takes images r, r + N, r + 2N, ... of the dataset; every rank writes to the same SQLite
store (see `salience.bench.store`), and rank 0 renders the summary after a barrier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Shard:
    """This process's rank, the number of processes, and the device it runs on."""

    rank: int = 0
    world: int = 1
    device: str | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def indices(self, n: int) -> range:
        """The dataset positions this rank evaluates."""
        return range(self.rank, n, self.world)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def total(self, counts: list[int]) -> list[int]:
        """Element-wise sum of ``counts`` over all ranks (the counts themselves when alone)."""
        if self.world == 1:
            return list(counts)
        device = self.device if torch.distributed.get_backend() == "nccl" else "cpu"
        t = torch.tensor(counts, dtype=torch.int64, device=device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init_shard(device: str | None) -> Shard:
    """The shard of this process: from an initialised process group, ``torchrun``'s env, or alone."""
    dist = torch.distributed
    if not dist.is_available():
        return Shard(device=device)
    owns = False
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return Shard(device=device)
        use_cuda = (device or "").startswith("cuda") or (device is None and torch.cuda.is_available())
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    rank, world = dist.get_rank(), dist.get_world_size()
    if dist.get_backend() == "nccl":
        local = int(os.environ.get("LOCAL_RANK", rank % max(torch.cuda.device_count(), 1)))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return Shard(rank, world, device, owns)
