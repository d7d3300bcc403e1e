"""Pure functions that pick what a step model trains on: random crops and hidden blocks of steps."""

from __future__ import annotations

import torch


def uniform_int(low: torch.Tensor | int, high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Integers uniform in [low, high] (inclusive), elementwise."""
    u = torch.rand(high.shape, generator=generator, dtype=torch.float64)
    return low + (u * (high - low + 1).to(torch.float64)).long()


def random_crops(
    x: torch.Tensor, lengths: torch.Tensor | None, max_len: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One crop of min(length, max_len) steps per sequence, at a uniform start.

    x: (B, T, D), lengths: (B,) or None -> crops (B, C, D) with C = the longest crop, and the
    crops' lengths (B,), or None when every crop has C steps. Past a crop's end lies padding.
    """
    B, T, D = x.shape
    lengths = torch.full((B,), T, dtype=torch.long) if lengths is None else lengths
    crop_lengths = lengths.clamp(max=max_len)  # (B,)
    starts = uniform_int(0, lengths - crop_lengths, generator)  # (B,)
    C = int(crop_lengths.max())
    index = (starts[:, None] + torch.arange(C)).clamp(max=T - 1)  # (B, C)
    crops = x.gather(1, index[:, :, None].expand(-1, -1, D))  # (B, C, D)
    return crops, crop_lengths if bool((crop_lengths != C).any()) else None


def block_mask(
    lengths: torch.Tensor,
    T: int,
    ratio: float,
    block_len: int | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which steps to hide from the context encoder: (B, T) bool, True = hidden.

    lengths: (B,) valid steps per row (padding is never hidden). Blocks of `block_len` steps
    (default: a tenth of the row, at least 1) start at random so that about `ratio` of each row
    is hidden. Every row keeps its first step visible and, when it has two or more, hides at
    least one.
    """
    B = lengths.shape[0]
    steps = torch.arange(T)[None, :]  # (1, T)
    valid = steps < lengths[:, None]  # (B, T)
    block = (lengths // 10).clamp(min=1) if block_len is None else torch.full((B,), block_len)  # (B,)
    block = torch.minimum(block, (lengths - 1).clamp(min=1))
    # A step is hidden when a block starts within the `block` steps up to it; starting each
    # block with probability p hides 1 - (1 - p)^block of the steps.
    p = 1.0 - (1.0 - ratio) ** (1.0 / block.to(torch.float64))  # (B,)
    starts = (torch.rand((B, T), generator=generator, dtype=torch.float64) < p[:, None]) & valid
    started = torch.cumsum(starts.long(), dim=1)  # (B, T)
    before = torch.where(
        steps >= block[:, None], started.gather(1, (steps - block[:, None]).clamp(min=0)), torch.zeros_like(started)
    )
    hidden = (started - before) > 0
    hidden &= valid
    hidden[:, 0] = False
    # A row with nothing hidden teaches nothing: hide its last step.
    empty = ~hidden.any(dim=1) & (lengths >= 2)
    hidden[empty, (lengths[empty] - 1)] = True
    return hidden
