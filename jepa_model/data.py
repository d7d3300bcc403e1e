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
    """Users' sequences: N float32 arrays (T_i, D) that may differ in length, with no labels.

    `whole`: when the sequences are pieces of longer ones (`training_pieces`), those, for what
    must read each series once and end to end (the anomaly memory)."""

    def __init__(
        self, sequences: Sequence[np.ndarray | torch.Tensor], whole: Sequence[np.ndarray] | None = None
    ) -> None:
        if not sequences:
            raise ValueError("a dataset needs at least one sequence")
        self.data = [torch.as_tensor(s, dtype=torch.float32) for s in sequences]
        dims = {s.shape[-1] for s in self.data}
        if len(dims) != 1 or any(s.ndim != 2 for s in self.data):
            raise ValueError("every sequence must be a (T, D) array with the same D")
        self.input_dim = dims.pop()
        self.clean = None  # no noise-free version to compare against, unlike toy data
        self.kinds = None
        self.whole = None if whole is None else [np.asarray(x, dtype=np.float32) for x in whole]

    def series(self) -> list[np.ndarray]:
        """The whole series (T_i, D) these sequences hold, each once."""
        return self.whole if self.whole is not None else [x.numpy() for x in self.data]

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


# Training reads long series as pieces: a batch of 32 rows needs 32 sequences, and a 100,000-step
# series padded into a batch would cost memory for steps no crop reaches. Pieces are at most
# PIECE_STEPS long (half a sequence, down to SHORTEST_PIECE, for shorter ones) and overlap by
# half, more of them (down to a stride of one step) when a dataset would make fewer than
# MIN_PIECES, so that a single recording still fills batches.
PIECE_STEPS, SHORTEST_PIECE, MIN_PIECES = 512, 64, 64
# Datasets of at least FEW_SEQUENCES sequences, none longer than LONGEST_WHOLE steps, train on
# their sequences whole, as they always have.
FEW_SEQUENCES, LONGEST_WHOLE = 8, 4096


def needs_pieces(lengths: Sequence[int]) -> bool:
    """Whether training reads this dataset as pieces (`training_pieces`)."""
    return max(lengths) > LONGEST_WHOLE or (len(lengths) < FEW_SEQUENCES and max(lengths) >= 2 * SHORTEST_PIECE)


def training_pieces(sequences: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Sequences (T_i, D) -> pieces (views, no copies) and each piece's source sequence (P,).

    A sequence of under 2 * SHORTEST_PIECE steps stays whole. A longer one is cut into pieces of
    min(PIECE_STEPS, T // 2) steps starting every half piece, or closer together when the whole
    dataset would make fewer than MIN_PIECES; the last piece ends where the sequence ends."""
    cut = [len(x) >= 2 * SHORTEST_PIECE for x in sequences]
    total_cut = sum(len(x) for x, c in zip(sequences, cut, strict=True) if c)
    wanted = max(MIN_PIECES - (len(sequences) - sum(cut)), 1)
    pieces, sources = [], []
    for i, (x, c) in enumerate(zip(sequences, cut, strict=True)):
        if not c:
            pieces.append(x)
            sources.append(i)
            continue
        length = min(PIECE_STEPS, len(x) // 2)
        share = max(1, round(wanted * len(x) / total_cut))  # this sequence's part of the pieces wanted
        room = len(x) - length
        stride = max(1, min(length // 2, room // share))
        starts = list(range(0, room + 1, stride))
        if starts[-1] != room:
            starts.append(room)
        pieces.extend(x[s : s + length] for s in starts)
        sources.extend([i] * len(starts))
    return pieces, np.asarray(sources, dtype=np.int64)
