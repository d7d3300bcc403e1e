"""The training loop: short named steps, and a callback so callers can show progress or stop."""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from jepa_model.config import ModelConfig, TrainConfig
from jepa_model.data import batch_sequences, collate_ragged
from jepa_model.encoders import step_features
from jepa_model.jepa import JEPA
from jepa_model.losses import prediction_loss, variance_covariance
from jepa_model.masking import block_mask, random_crops, uniform_int
from jepa_model.memory import build_memory
from jepa_model.parallel import WHOLE, Shard
from jepa_model.step_encoders import normalize_each, pool_steps, step_statistics, valid_steps


@dataclass(frozen=True)
class EpochReport:
    epoch: int  # 0-based
    epochs: int
    loss: float  # mean over the epoch's steps
    metrics: dict[str, float]  # from the monitor, if one was given


# Called after every epoch. It may raise to stop training.
EpochCallback = Callable[[EpochReport], None]
# Measures the model after every epoch (e.g. collapse metrics on a fixed held-out batch).
Monitor = Callable[[JEPA], dict[str, float]]

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor]


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def to_device(x: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if x is None else x.to(device)


def split_batch(batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A DataLoader batch as (padded (B, T, D), lengths (B,) or None when all rows are full)."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    padded, lengths = batch[0], batch[1] if len(batch) > 1 else None
    return padded, lengths


def _gather(x: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    # x: (B, T, D), starts: (B, K) -> windows (B, K, length, D). Steps past the end of x repeat its
    # last step; callers only ever read them as padding.
    B, T, D = x.shape
    idx = (starts[:, :, None] + torch.arange(length)).clamp(max=T - 1)  # (B, K, L)
    flat = x.gather(1, idx.reshape(B, -1, 1).expand(-1, -1, D))  # (B, K*L, D)
    return flat.reshape(B, starts.shape[1], length, D)


@dataclass(frozen=True)
class Spans:
    context: torch.Tensor  # (B, C_max, D)
    context_lengths: torch.Tensor | None  # (B,), None when every context has C_max steps
    targets: torch.Tensor  # (B, K, L, D)
    offsets: torch.Tensor  # (B, K): span k starts offsets[:, k] steps after the context ends

    def to(self, device: torch.device) -> Spans:
        return Spans(
            self.context.to(device),
            to_device(self.context_lengths, device),
            self.targets.to(device),
            self.offsets.to(device),
        )

    def select(self, rows: slice) -> Spans:
        """The spans of some rows only (a data-parallel process's share)."""
        lengths = None if self.context_lengths is None else self.context_lengths[rows]
        return Spans(self.context[rows], lengths, self.targets[rows], self.offsets[rows])


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
    spans = sample_spans(x, lengths, context_len, target_len, 1, 0, generator=generator)
    return spans.context, spans.targets[:, 0]


def sample_spans(
    x: torch.Tensor,
    lengths: torch.Tensor | None,
    context_len: int,
    target_len: int,
    num_targets: int,
    max_offset: int,
    min_context_len: int | None = None,
    generator: torch.Generator | None = None,
) -> Spans:
    """A context and `num_targets` future spans per sequence.

    Contexts have `context_len` steps, or, with `min_context_len`, a length drawn per sequence
    from min_context_len up to all that leaves room for a target. Offsets are uniform in
    [0, max_offset], shrunk where a sequence is too short; the start is uniform over what fits.
    """
    B, T, _ = x.shape
    lengths = torch.full((B,), T, dtype=torch.long) if lengths is None else lengths
    needed = (min_context_len or context_len) + target_len
    if int(lengths.min()) < needed:
        raise ValueError(f"every sequence needs at least context_len + target_len = {needed} steps")
    if min_context_len is None:
        context_lengths = torch.full((B,), context_len, dtype=torch.long)
    else:
        context_lengths = uniform_int(min_context_len, lengths - target_len, generator)  # (B,)
    room = lengths - context_lengths - target_len  # (B,) free steps for offsets and the start
    offsets = uniform_int(0, torch.clamp(room, max=max_offset)[:, None].expand(B, num_targets), generator)
    starts = uniform_int(0, room - offsets.max(dim=1).values, generator)  # (B,)
    c_max = int(context_lengths.max())
    context = _gather(x, starts[:, None], c_max)[:, 0]  # (B, C_max, D)
    targets = _gather(x, (starts + context_lengths)[:, None] + offsets, target_len)  # (B, K, L, D)
    ragged = bool((context_lengths != c_max).any())
    return Spans(context, context_lengths if ragged else None, targets, offsets)


def masked_steps_loss(
    model: JEPA, batch: Batch, config: TrainConfig, generator: torch.Generator | None, shard: Shard = WHOLE
) -> torch.Tensor:
    """Step models: hide blocks of a random crop from the context encoder; the predictor regresses
    the target encoder's representations of the hidden steps from what the context encoder saw.

    Crops and masks are drawn on the CPU, with its generator, whatever the model's device: a
    seeded run draws the same ones anywhere. They are drawn for the whole batch, and `shard`
    keeps this process's rows of them."""
    x, lengths = split_batch(batch)
    crops, crop_lengths = random_crops(x, lengths, config.max_crop_len, generator)  # (B, C, D)
    B, C, _ = crops.shape
    hidden = block_mask(
        torch.full((B,), C) if crop_lengths is None else crop_lengths,
        C,
        config.mask_ratio,
        config.mask_block_len,
        generator,
    )  # (B, C)
    crops, hidden = crops[shard.rows], hidden[shard.rows]
    crop_lengths = None if crop_lengths is None else crop_lengths[shard.rows]
    device = model_device(model)
    crops, crop_lengths, hidden = crops.to(device), to_device(crop_lengths, device), hidden.to(device)
    with torch.no_grad():
        target, target_pooled = model.target_encoder.features(crops, crop_lengths)  # (B, C, S), (B, C, P)
        if model.target_encoder.tracks_steps:  # PPV pooling's thresholds, the same in every process
            mean, std = step_statistics(target_pooled, valid_steps(crop_lengths, C))
            model.target_encoder.track_step_statistics(shard.average(mean), shard.average(std))
    context, context_pooled = model.context_encoder.features(crops, crop_lengths, hidden)  # (B, C, S), (B, C, P)
    loss = prediction_loss(model.predictor(context)[hidden], target[hidden], config)  # over (M, S) hidden steps
    if config.var_weight or config.cov_weight:
        # Spread over the batch's sequences: each one's mean step must differ from the others'.
        thresholds = model.target_encoder.ppv_thresholds()
        keep = valid_steps(crop_lengths, C)
        pooled = pool_steps(context_pooled, keep, model.config.pooling, thresholds, model.config.step_dim)  # (B, R)
        variance, covariance = variance_covariance(pooled)
        loss = loss + config.var_weight * variance + config.cov_weight * covariance
    return loss * shard.weight(B) + forecast_loss(model, batch, config, generator, shard)


def forecast_loss(
    model: JEPA, batch: Batch, config: TrainConfig, generator: torch.Generator | None, shard: Shard = WHOLE
) -> torch.Tensor:
    """Step models: train the forecaster behind /predict, from a context window to the pooled
    representation of the target window after it, each encoded on its own.

    It learns on the context encoder's steps without changing them: the representation is the
    masked objective's alone, and forecasting gets no say in what it keeps.
    """
    x, lengths = split_batch(batch)
    spans = sample_spans(x, lengths, config.context_len, config.target_len, 1, 0, generator=generator)
    spans = spans.select(shard.rows).to(model_device(model))
    with torch.no_grad():
        context = model.context_encoder.pooled_features(spans.context)  # (B, C, P)
        target = model.target_encoder.pool_raw(
            model.target_encoder.pooled_features(spans.targets[:, 0]), None
        )  # (B, R)
        # Served embeddings are standardised per dimension, so errors count relative to each
        # dimension's spread over the batch, not in raw units where a few dimensions dominate;
        # the floor keeps a dimension that barely varies from dominating instead.
        mean, std = target.mean(0), target.std(0).clamp_min(0.05)
    predicted = model.forecaster(context, None, model.config.pooling, model.target_encoder.ppv_thresholds())  # (B, R)
    loss = prediction_loss((predicted - mean) / std, (target - mean) / std, config)
    return loss * shard.weight(x.shape[0])


def window_loss(
    model: JEPA, batch: Batch, config: TrainConfig, generator: torch.Generator | None, shard: Shard = WHOLE
) -> torch.Tensor:
    """Window models: predict the pooled representation of spans that follow a context (drawn on
    the CPU, as step models' crops are, for the whole batch; `shard` keeps this process's rows)."""
    x, lengths = split_batch(batch)
    if config.num_contexts > 1:  # every copy of a sequence draws its own windows
        x = x.repeat(config.num_contexts, 1, 1)
        lengths = None if lengths is None else lengths.repeat(config.num_contexts)
    spans = sample_spans(
        x,
        lengths,
        config.context_len,
        config.target_len,
        config.num_targets,
        config.max_offset,
        config.min_context_len,
        generator,
    )
    rows = spans.context.shape[0]
    spans = spans.select(shard.rows).to(model_device(model))
    B, K, L, D = spans.targets.shape
    z = model.context_encoder(spans.context, spans.context_lengths)  # (B, R)
    predicted = model.predictor(z.repeat_interleave(K, 0), spans.offsets.reshape(-1))  # (B*K, R)
    with torch.no_grad():
        target_repr = model.target_encoder(spans.targets.reshape(B * K, L, D))  # (B*K, R)
    loss = prediction_loss(predicted, target_repr, config)
    if config.var_weight or config.cov_weight:
        variance, covariance = variance_covariance(z)
        loss = loss + config.var_weight * variance + config.cov_weight * covariance
    return loss * shard.weight(rows)


class Objective(nn.Module):
    """A model's training loss as a module: the unit DistributedDataParallel wraps, so that the
    backward pass averages gradients over the processes of a data-parallel run."""

    def __init__(self, model: JEPA, config: TrainConfig, shard: Shard = WHOLE) -> None:
        super().__init__()
        self.model, self.config, self.shard = model, config, shard
        self.loss = masked_steps_loss if model.steps_objective else window_loss

    def forward(self, batch: Batch, generator: torch.Generator | None) -> torch.Tensor:
        return self.loss(self.model, batch, self.config, generator, self.shard)


def data_parallel(objective: Objective) -> nn.Module:
    """`objective` as DDP over the initialised process group; as it is for a single process."""
    if objective.shard.world == 1:
        return objective
    device = model_device(objective.model)
    return nn.parallel.DistributedDataParallel(objective, device_ids=[device] if device.type == "cuda" else None)


def train_step(
    model: JEPA,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    config: TrainConfig,
    momentum: float | None = None,
    generator: torch.Generator | None = None,
    objective: nn.Module | None = None,
) -> float:
    """One optimizer step and EMA update. `objective` (an Objective, or its DDP) defaults to the
    model's own loss on the whole batch."""
    loss = (objective or Objective(model, config))(batch, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.update_target(config.momentum if momentum is None else momentum)
    return loss.item()


def momentum_at(config: TrainConfig, step: int, total_steps: int) -> float:
    """The EMA momentum for `step`: constant, or ramped linearly to momentum_end (I-JEPA)."""
    if config.momentum_end is None:
        return config.momentum
    return config.momentum + (config.momentum_end - config.momentum) * step / max(total_steps, 1)


def make_optimizer(model: JEPA, config: TrainConfig) -> torch.optim.Optimizer:
    params = model.trainable_parameters()
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


class StepSchedule:
    """Per-step schedules: the EMA momentum (constant or ramped) and the learning rate."""

    def __init__(self, config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        self.config, self.total_steps, self.step = config, total_steps, 0
        self.lr = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
            if config.lr_schedule == "cosine"
            else None
        )

    def momentum(self) -> float:
        return momentum_at(self.config, self.step, self.total_steps)

    def advance(self) -> None:
        """Call after each optimizer step."""
        self.step += 1
        if self.lr is not None:
            self.lr.step()


def train_epoch(
    model: JEPA,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    config: TrainConfig,
    generator: torch.Generator | None = None,
    schedule: StepSchedule | None = None,
    objective: nn.Module | None = None,
) -> float:
    """One pass over `batches` (or one round of a step budget); returns the mean loss."""
    model.train()
    losses = []
    for batch in batches:
        momentum = schedule.momentum() if schedule else None
        losses.append(train_step(model, optimizer, batch, config, momentum, generator, objective))
        if schedule is not None:
            schedule.advance()
    return sum(losses) / max(len(losses), 1)


# A step budget is reported in this many rounds (the "epochs" of progress), or one per step if fewer.
BUDGET_ROUNDS = 50
# With a step budget the monitor runs on about this many rounds (and the last): on long series it
# costs a forward pass over a whole held-out block, which 50 times over would rival the training.
MONITORED_ROUNDS = 10


def plan_rounds(config: TrainConfig, batches_per_epoch: int) -> list[int]:
    """How many optimizer steps each reported round takes: one pass each for `epochs`, or the
    step budget split into BUDGET_ROUNDS nearly equal rounds."""
    if config.steps is None:
        return [batches_per_epoch] * config.epochs
    rounds = min(BUDGET_ROUNDS, config.steps)
    return [config.steps // rounds + (1 if r < config.steps % rounds else 0) for r in range(rounds)]


def cycle(batches: Iterable[Batch]) -> Iterator[Batch]:
    """Endless batches: a DataLoader reshuffles on every pass."""
    while True:
        yield from batches


def train_jepa(
    model: JEPA,
    dataloader: Iterable[Batch],
    num_epochs: int = 50,
    lr: float = 1e-3,
    context_len: int = 8,
    target_len: int = 4,
    momentum: float = 0.99,
    *,
    config: TrainConfig | None = None,
    on_epoch: EpochCallback | None = None,
    monitor: Monitor | None = None,
    log_every: int = 10,
    generator: torch.Generator | None = None,
    shard: Shard = WHOLE,
) -> list[float]:
    """The seed's training entry point. Returns the mean loss of every epoch (or budget round).

    The positional arguments are the seed's recipe; `config` replaces them all with a full
    TrainConfig (any preset). Prints `Epoch N, Loss: X` every `log_every` epochs as the seed did.
    With a `shard` of a data-parallel run (jepa_model.parallel), the process trains on its rows of
    each batch and the losses it returns are every process's mean.
    """
    if config is None:
        config = TrainConfig(
            epochs=num_epochs, lr=lr, context_len=context_len, target_len=target_len, momentum=momentum
        )
    optimizer = make_optimizer(model, config)
    rounds = plan_rounds(config, len(dataloader) if hasattr(dataloader, "__len__") else 1)
    schedule = StepSchedule(config, optimizer, sum(rounds))
    batches = cycle(dataloader)
    objective = data_parallel(Objective(model, config, shard))
    monitor_every = 1 if config.steps is None else max(1, math.ceil(len(rounds) / MONITORED_ROUNDS))
    losses: list[float] = []
    metrics: dict[str, float] = {}
    for epoch, steps in enumerate(rounds):
        round_batches = dataloader if config.steps is None else itertools.islice(batches, steps)
        loss = shard.mean(train_epoch(model, optimizer, round_batches, config, generator, schedule, objective))
        losses.append(loss)
        if log_every and epoch % log_every == 0:
            print(f"Epoch {epoch}, Loss: {loss:.4f}")
        if on_epoch is not None:
            last = epoch == len(rounds) - 1
            if monitor is not None and (epoch % monitor_every == 0 or last):
                metrics = monitor(model)  # between runs the last measurement stands
            model.train()
            on_epoch(EpochReport(epoch, len(rounds), loss, dict(metrics)))
    return losses


def input_statistics(dataset: Dataset, config: ModelConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature mean and std of the encoder's step features over every step of every sequence,
    after each sequence's own standardisation where the model does that first."""

    def seen(i: int) -> torch.Tensor:
        x = torch.as_tensor(dataset[i])[None]  # (1, T, D)
        return normalize_each(x, None) if config.series_norm else x

    features = [step_features(seen(i), config.input_deltas)[0] for i in range(len(dataset))]
    points = torch.cat(features)  # (P, F)
    return tuple(points.mean(0).tolist()), tuple(points.std(0).clamp_min(1e-6).tolist())


@torch.inference_mode()
def raw_embeddings(model: JEPA, dataset: Dataset, batch_size: int = 256) -> torch.Tensor:
    """Step models: the target encoder's pooled, not yet standardised, embeddings (N, R)."""
    encoder, device, out = model.target_encoder, model_device(model), []
    for start in range(0, len(dataset), batch_size):
        x, lengths = batch_sequences([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        x, lengths = x.to(device), to_device(lengths, device)
        out.append(encoder.pool_raw(encoder.pooled_features(x, lengths), valid_steps(lengths, x.shape[1])))
    return torch.cat(out)  # on the model's device


def on_cpu_copy(monitor: Monitor) -> Monitor:
    """`monitor` run on a CPU copy of the model: measuring code builds its inputs on the CPU and
    reads outputs with .numpy(), and a copy leaves the training model where it is."""
    return lambda model: monitor(copy.deepcopy(model).cpu())


@dataclass
class TrainResult:
    model: JEPA
    losses: list[float]
    seconds: float


def whole_series(dataset: Dataset) -> list[np.ndarray]:
    """The series (T_i, D) a dataset holds, each once: a SequenceDataset of pieces knows them."""
    if hasattr(dataset, "series"):
        return dataset.series()
    return [np.asarray(dataset[i]) for i in range(len(dataset))]  # type: ignore[arg-type]


def fit(
    dataset: Dataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    monitor: Monitor | None = None,
    log_every: int = 0,
    device: torch.device | str = "cpu",
    shard: Shard = WHOLE,
) -> TrainResult:
    """Build a model from configs and train it on `dataset`; seeded runs are reproducible.

    It trains on `device` and comes back on the CPU, where checkpoints and metrics are made. In a
    data-parallel run every process calls this with its `shard` and the same seed, which makes
    them all load the same batches (jepa_model.parallel)."""
    device = torch.device(device)
    if shard.world > 1 and train_config.seed is None:
        raise ValueError("data-parallel training needs a seed, the same in every process")
    if train_config.seed is not None:
        torch.manual_seed(train_config.seed)
    generator = torch.Generator().manual_seed(train_config.seed) if train_config.seed is not None else None
    if train_config.normalize_inputs:
        mean, std = input_statistics(dataset, model_config)
        model_config = replace(model_config, input_mean=mean, input_std=std)
    model = JEPA.from_config(model_config).to(device)  # initialised on the CPU: the same weights anywhere
    loader = DataLoader(
        dataset,
        batch_size=train_config.batch_size,
        shuffle=True,
        collate_fn=collate_ragged,
        generator=generator,
        # Batch statistics need two rows, in each process; a last batch with fewer would stop a
        # batch-normed encoder (and leave a process of a data-parallel run with no rows at all).
        drop_last=0 < len(dataset) % train_config.batch_size < 2 * shard.world,
    )
    started = time.perf_counter()
    losses = train_jepa(
        model,
        loader,
        config=train_config,
        on_epoch=on_epoch,
        monitor=monitor if monitor is None or device.type == "cpu" else on_cpu_copy(monitor),
        log_every=log_every,
        generator=generator,
        shard=shard,
    )
    model.eval()
    if model.steps_objective:
        model.set_embedding_statistics(raw_embeddings(model, dataset))
    if model.memory is not None:
        build_memory(model.target_encoder, model.memory, whole_series(dataset), train_config.seed or 0)
    return TrainResult(model=model.cpu(), losses=losses, seconds=time.perf_counter() - started)
