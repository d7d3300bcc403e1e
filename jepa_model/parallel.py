"""Data-parallel training over a torch.distributed process group: gloo on CPUs, nccl on GPUs.

Every process loads the same global batch (the same seed shuffles the same way everywhere), draws
the whole batch's windows with the same generator, and then trains on its own rows of it. So N
processes see exactly the windows one process would, the global batch and the learning rate keep
their meaning whatever N is, and DistributedDataParallel's gradient average equals the whole
batch's gradient wherever the loss is a mean over rows (the prediction losses; VICReg terms and
batch-norm statistics are each process's own, over its rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    """This process's part of every batch: rows rank, rank + world, rank + 2 * world, ..."""

    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank must be in [0, {self.world}), got {self.rank}")

    @property
    def rows(self) -> slice:
        return slice(self.rank, None, self.world)

    def count(self, n: int) -> int:
        """How many of a batch's `n` rows are this process's."""
        return len(range(self.rank, n, self.world))

    def weight(self, n: int) -> float:
        """What this process's mean loss over its rows is scaled by, so that the average over
        processes (DDP's all-reduce of gradients) is the mean over all `n` rows, even when `n`
        does not divide evenly."""
        return self.world * self.count(n) / n

    def mean(self, value: float) -> float:
        """The mean of `value` over every process (a collective: all of them must call it)."""
        if self.world == 1:
            return value
        # nccl reduces only tensors on the GPU; gloo, CPU tensors.
        device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
        total = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return float(total.item()) / self.world

    def average(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise mean of `tensor` over every process (a collective, like `mean`): the
        same result in each, so statistics tracked from each process's rows stay identical."""
        if self.world == 1:
            return tensor
        total = tensor.clone()
        dist.all_reduce(total)
        return total / self.world


WHOLE = Shard()
