"""The training loop: short named steps, and a callback so callers can show progress or stop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from jepa_model.config import ModelConfig, TrainConfig
from jepa_model.data import collate_ragged
from jepa_model.jepa import JEPA
from jepa_model.losses import negative_cosine

# Called after every epoch with (epoch index, epochs in all, mean loss). It may raise to stop.
EpochCallback = Callable[[int, int, float], None]

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor]


def split_batch(batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A DataLoader batch as (padded (B, T, D), lengths (B,) or None when all rows are full)."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    padded, lengths = batch[0], batch[1] if len(batch) > 1 else None
    return padded, lengths


def sample_windows(
    x: torch.Tensor,
    lengths: torch.Tensor | None,
    context_len: int,
    target_len: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random (context, target) window per sequence, as in the seed.

    x: (B, T, D), lengths: (B,) or None. Returns context (B, C, D) and the target (B, K, D)
    that immediately follows it. Starts are uniform in [0, length - C - K], inclusive.
    """
    B, T, D = x.shape
    window = context_len + target_len
    lengths = torch.full((B,), T, dtype=torch.long) if lengths is None else lengths
    if int(lengths.min()) < window:
        raise ValueError(f"every sequence needs at least context_len + target_len = {window} steps")
    num_starts = (lengths - window + 1).to(torch.float64)
    starts = (torch.rand(B, generator=generator, dtype=torch.float64) * num_starts).long()  # (B,)
    idx = starts[:, None] + torch.arange(window)[None, :]  # (B, W)
    windows = x.gather(1, idx[:, :, None].expand(B, window, D))  # (B, W, D)
    return windows[:, :context_len], windows[:, context_len:]


def train_step(
    model: JEPA,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    config: TrainConfig,
    generator: torch.Generator | None = None,
) -> float:
    x, lengths = split_batch(batch)
    context, target = sample_windows(x, lengths, config.context_len, config.target_len, generator)
    predicted, target_repr = model(context, target)
    loss = negative_cosine(predicted, target_repr)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.update_target(config.momentum)
    return loss.item()


def train_epoch(
    model: JEPA,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    config: TrainConfig,
    generator: torch.Generator | None = None,
) -> float:
    model.train()
    losses = [train_step(model, optimizer, batch, config, generator) for batch in batches]
    return sum(losses) / max(len(losses), 1)


def train_jepa(
    model: JEPA,
    dataloader: Iterable[Batch],
    num_epochs: int = 50,
    lr: float = 1e-3,
    context_len: int = 8,
    target_len: int = 4,
    momentum: float = 0.99,
    *,
    on_epoch: EpochCallback | None = None,
    log_every: int = 10,
    generator: torch.Generator | None = None,
) -> list[float]:
    """The seed's training entry point. Returns the mean loss of every epoch.

    Prints `Epoch N, Loss: X` every `log_every` epochs as the seed did (0 silences it).
    """
    config = TrainConfig(epochs=num_epochs, lr=lr, context_len=context_len, target_len=target_len, momentum=momentum)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=lr)
    losses: list[float] = []
    for epoch in range(num_epochs):
        loss = train_epoch(model, optimizer, dataloader, config, generator)
        losses.append(loss)
        if log_every and epoch % log_every == 0:
            print(f"Epoch {epoch}, Loss: {loss:.4f}")
        if on_epoch is not None:
            on_epoch(epoch, num_epochs, loss)
    return losses


@dataclass
class TrainResult:
    model: JEPA
    losses: list[float]
    seconds: float


def fit(
    dataset: Dataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    log_every: int = 0,
) -> TrainResult:
    """Build a model from configs and train it on `dataset`; seeded runs are reproducible."""
    if train_config.seed is not None:
        torch.manual_seed(train_config.seed)
    generator = torch.Generator().manual_seed(train_config.seed) if train_config.seed is not None else None
    model = JEPA.from_config(model_config)
    loader = DataLoader(
        dataset,
        batch_size=train_config.batch_size,
        shuffle=True,
        collate_fn=collate_ragged,
        generator=generator,
    )
    started = time.perf_counter()
    losses = train_jepa(
        model,
        loader,
        num_epochs=train_config.epochs,
        lr=train_config.lr,
        context_len=train_config.context_len,
        target_len=train_config.target_len,
        momentum=train_config.momentum,
        on_epoch=on_epoch,
        log_every=log_every,
        generator=generator,
    )
    model.eval()
    return TrainResult(model=model, losses=losses, seconds=time.perf_counter() - started)
