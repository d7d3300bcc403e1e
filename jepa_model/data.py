"""Toy trajectories (the seed's data, exactly) and helpers for ragged batches."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

PATTERNS = ("circle", "linear", "mixed")


# Each generator returns (noisy points, noise-free points, params), all (N, ...).
Generated = tuple[np.ndarray, np.ndarray, np.ndarray]


def _circles(n: int, seq_len: int, noise: float, rng: np.random.Generator) -> Generated:
    t = np.linspace(0.0, 2.0 * math.pi, seq_len)  # one full turn from phase 0
    radius = rng.uniform(0.5, 2.0, size=n)
    centre = rng.uniform(-1.0, 1.0, size=(n, 2))
    unit = np.stack([np.cos(t), np.sin(t)], axis=-1)  # (T, 2)
    clean = centre[:, None, :] + radius[:, None, None] * unit[None]  # (N, T, 2)
    params = np.concatenate([radius[:, None], centre, np.full((n, 4), np.nan)], axis=1)
    return clean + rng.normal(0.0, noise, size=clean.shape), clean, params


def _lines(n: int, seq_len: int, noise: float, rng: np.random.Generator) -> Generated:
    t = np.arange(seq_len, dtype=np.float64)
    start = rng.uniform(-2.0, 2.0, size=(n, 2))
    velocity = rng.uniform(-1.0, 1.0, size=(n, 2))
    clean = start[:, None, :] + velocity[:, None, :] * t[None, :, None]  # (N, T, 2)
    params = np.concatenate([np.full((n, 3), np.nan), start, velocity], axis=1)
    return clean + rng.normal(0.0, noise, size=clean.shape), clean, params


class ToySequenceDataset(Dataset):
    """2-D trajectories as in the seed: noisy circles, noisy lines, or half of each, shuffled.

    Items are float32 tensors of shape (seq_len, 2). The generating parameters are kept for
    evaluation: `kinds[i]` is "circle" or "linear"; `params[i]` holds
    (radius, centre_x, centre_y, start_x, start_y, velocity_x, velocity_y), NaN where a
    parameter does not apply to that kind.
    """

    def __init__(
        self,
        num_samples: int = 1000,
        seq_len: int = 20,
        pattern_type: str = "circle",
        noise: float = 0.1,
        seed: int | None = None,
    ) -> None:
        if pattern_type not in PATTERNS:
            raise ValueError(f"pattern_type must be one of {PATTERNS}, got {pattern_type!r}")
        if num_samples < 1 or seq_len < 2:
            raise ValueError("num_samples must be >= 1 and seq_len >= 2")
        rng = np.random.default_rng(seed)
        self.num_samples, self.seq_len, self.pattern_type, self.noise = num_samples, seq_len, pattern_type, noise

        if pattern_type == "circle":
            points, clean, params = _circles(num_samples, seq_len, noise, rng)
            kinds = np.array(["circle"] * num_samples)
        elif pattern_type == "linear":
            points, clean, params = _lines(num_samples, seq_len, noise, rng)
            kinds = np.array(["linear"] * num_samples)
        else:
            n_circle = num_samples // 2
            circles = _circles(n_circle, seq_len, noise, rng)
            lines = _lines(num_samples - n_circle, seq_len, noise, rng)
            order = rng.permutation(num_samples)
            points, clean, params = (np.concatenate(pair)[order] for pair in zip(circles, lines, strict=True))
            kinds = np.array(["circle"] * n_circle + ["linear"] * (num_samples - n_circle))[order]

        self.data = torch.from_numpy(points.astype(np.float32))  # (N, T, 2)
        self.clean = clean.astype(np.float32)  # (N, T, 2): the points before noise, for oracle metrics
        self.params = params
        self.kinds = kinds

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, idx: int) -> torch.Tensor:
        return self.data[idx]


class SequenceDataset(Dataset):
    """Users' sequences: N float32 arrays (T_i, D) that may differ in length, with no labels."""

    def __init__(self, sequences: Sequence[np.ndarray | torch.Tensor]) -> None:
        if not sequences:
            raise ValueError("a dataset needs at least one sequence")
        self.data = [torch.as_tensor(s, dtype=torch.float32) for s in sequences]
        dims = {s.shape[-1] for s in self.data}
        if len(dims) != 1 or any(s.ndim != 2 for s in self.data):
            raise ValueError("every sequence must be a (T, D) array with the same D")
        self.input_dim = dims.pop()
        self.clean = None  # no noise-free version to compare against, unlike toy data
        self.kinds = None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: int) -> torch.Tensor:
        return self.data[idx]


def pad_sequences(sequences: Sequence[torch.Tensor | np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ragged (T_i, D) sequences into (B, T_max, D) plus their lengths (B,).

    The padding value is irrelevant: encoders pack by length, so padding never reaches them.
    """
    tensors = [torch.as_tensor(s, dtype=torch.float32) for s in sequences]
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.long)
    padded = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)  # (B, T_max, D)
    return padded, lengths


def batch_sequences(sequences: Sequence[torch.Tensor | np.ndarray]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Like pad_sequences, but lengths are None when all are equal: packing then is skipped,
    which matters because it costs more than the LSTM itself on short sequences."""
    x, lengths = pad_sequences(sequences)
    return x, lengths if bool((lengths != lengths[0]).any()) else None


def collate_ragged(batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """DataLoader collate_fn for datasets whose sequences differ in length."""
    return pad_sequences(batch)
