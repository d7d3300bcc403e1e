"""Collapse-aware evaluation on held-out sequences.

The seed's own metric, the cosine between predicted and actual target representations, cannot
see collapse: a constant encoder scores 1.0. So beside it this module measures whether the
representation keeps information (retrieval among 256 windows, against an oracle that knows the
noise-free future; linear probes for the generating parameters) and whether it spreads over its
dimensions (RankMe, per-dimension std). RECIPE.md in the seed's folder defines them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from jepa_model.data import SequenceDataset, ToySequenceDataset, batch_sequences
from jepa_model.jepa import JEPA
from jepa_model.train import sample_windows
from jepa_model.vectors import unit_rows

BLOCK = 256


@dataclass(frozen=True)
class Windows:
    """One (context, target) window per held-out sequence, and the target's noise-free points."""

    context: torch.Tensor  # (N, C, D)
    target: torch.Tensor  # (N, K, D)
    clean_target: np.ndarray | None  # (N, K, D), toy data only


HeldOut = ToySequenceDataset | SequenceDataset


def held_out_windows(
    dataset: HeldOut, context_len: int, target_len: int, seed: int = 0, start: int | None = None
) -> Windows:
    """One window per sequence: at a random start (seeded), or at `start` for every sequence."""
    generator = torch.Generator().manual_seed(seed)

    def windows(x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if start is None:
            return sample_windows(x, lengths, context_len, target_len, generator)
        return x[:, start : start + context_len], x[:, start + context_len : start + context_len + target_len]

    if dataset.clean is None:  # users' data: ragged, and no noise-free version
        context, target = windows(*batch_sequences(dataset.data))  # from (N, T_max, D)
        return Windows(context, target, None)
    x = dataset.data  # (N, T, D)
    # Sampling the index windows over [x, clean] together keeps noisy and clean targets aligned.
    clean = torch.from_numpy(dataset.clean)
    both = torch.cat([x, clean], dim=-1)  # (N, T, 2D)
    context, target = windows(both, None)
    d = x.shape[-1]
    return Windows(context[..., :d], target[..., :d], target[..., d:].numpy())


def retrieval_hits(queries: np.ndarray, keys: np.ndarray, metric: str = "cosine", block: int = BLOCK) -> np.ndarray:
    """For each query, whether its nearest key among the `block` keys of its block is its own.

    queries, keys: (N, F), row i of each belonging together. Chance is 1 / block.
    """
    n = len(queries) // block * block or len(queries)
    hits = []
    for start in range(0, n, min(block, n)):
        q, k = queries[start : start + block], keys[start : start + block]
        if metric == "cosine":
            q, k = unit_rows(q), unit_rows(k)
            nearest = (q @ k.T).argmax(axis=1)
        else:
            nearest = ((q[:, None, :] - k[None, :, :]) ** 2).sum(-1).argmin(axis=1)
        hits.append(nearest == np.arange(len(q)))
    return np.concatenate(hits)


def retrieval_top1(queries: np.ndarray, keys: np.ndarray, metric: str = "cosine", block: int = BLOCK) -> float:
    """The fraction of retrieval_hits."""
    return float(retrieval_hits(queries, keys, metric, block).mean())


def rankme(z: np.ndarray) -> float:
    """exp of the entropy of the normalised singular values of the centred (N, R) embeddings."""
    s = np.linalg.svd(z - z.mean(0), compute_uv=False)
    p = s / max(s.sum(), 1e-12) + 1e-12
    return float(np.exp(-(p * np.log(p)).sum()))


def normalized_std(z: np.ndarray) -> float:
    """Mean per-dimension std of L2-normalised embeddings: 0 when collapsed, ~1/sqrt(R) when spread."""
    unit = unit_rows(z)
    return float(unit.std(axis=0).mean())


def _split(n: int, seed: int, train_frac: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = int(n * train_frac)
    return order[:cut], order[cut:]


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(0), train.std(0) + 1e-8
    ones = np.ones
    return (
        np.hstack([(train - mean) / std, ones((len(train), 1))]),
        np.hstack([(test - mean) / std, ones((len(test), 1))]),
    )


def probe_r2(features: np.ndarray, targets: np.ndarray, seed: int = 0, ridge: float = 1e-3) -> np.ndarray:
    """R² per target column of a ridge-regression probe fitted on 75% of rows, scored on the rest."""
    train, test = _split(len(features), seed)
    a, b = _standardize(features[train], features[test])
    w = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ targets[train])
    residual = ((targets[test] - b @ w) ** 2).sum(0)
    total = ((targets[test] - targets[test].mean(0)) ** 2).sum(0)
    return 1.0 - residual / np.maximum(total, 1e-12)


def probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0, ridge: float = 1e-3) -> float:
    """Accuracy of a linear least-squares classifier for a binary label, fitted and scored like probe_r2."""
    train, test = _split(len(features), seed)
    a, b = _standardize(features[train], features[test])
    y = np.where(labels[train], 1.0, -1.0)
    w = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ y)
    return float(((b @ w > 0) == labels[test]).mean())


# Sequences per forward pass in embed_sequences, so many long series never share one padded batch.
EMBED_BATCH = 256


@torch.inference_mode()
def embed_sequences(
    model: JEPA, sequences: torch.Tensor | list[torch.Tensor] | list[np.ndarray], batch: int = EMBED_BATCH
) -> np.ndarray:
    """The default embedding of whole sequences (N, R): the target encoder, as /encode serves it,
    `batch` sequences a forward pass."""
    sequences = list(sequences)
    parts = [
        model.encode(*batch_sequences(sequences[i : i + batch]), "target").numpy()
        for i in range(0, len(sequences), batch)
    ]
    return np.concatenate(parts)


def _probes(z: np.ndarray, dataset: ToySequenceDataset) -> dict[str, float]:
    metrics: dict[str, float] = {}
    circles, lines = dataset.kinds == "circle", dataset.kinds == "linear"
    if circles.sum() >= 16:
        r2 = probe_r2(z[circles], dataset.params[circles][:, 0:3])
        metrics |= {"probe_radius_r2": float(r2[0]), "probe_centre_r2": float(r2[1:3].min())}
    if lines.sum() >= 16:
        params = dataset.params[lines]
        speed = np.linalg.norm(params[:, 5:7], axis=1, keepdims=True)
        r2 = probe_r2(z[lines], np.hstack([params[:, 3:7], speed]))
        metrics |= {
            "probe_start_r2": float(r2[0:2].min()),
            "probe_velocity_r2": float(r2[2:4].min()),
            "probe_speed_r2": float(r2[4]),
        }
    if circles.any() and lines.any():
        metrics["probe_kind_acc"] = probe_accuracy(z, circles)
    return metrics


@torch.inference_mode()
def evaluate(
    model: JEPA, dataset: HeldOut, context_len: int, target_len: int, seed: int = 0, start: int | None = None
) -> dict:
    """Every metric above, on `dataset` (which the model must not have trained on).

    Windows start at random (seeded), or all at `start` (the seed's published protocol: 0, so
    context = points 0-7 and target = 8-11).
    """
    model.eval()
    windows = held_out_windows(dataset, context_len, target_len, seed, start)
    predicted = model.predict(windows.context).numpy()  # (N, R)
    actual = model.encode(windows.target, encoder="target").numpy()  # (N, R)
    hits = retrieval_hits(predicted, actual)
    metrics = {
        "cosine": float(F.cosine_similarity(torch.from_numpy(predicted), torch.from_numpy(actual)).mean()),
        "retrieval": float(hits.mean()),
    }
    kinds = dataset.kinds[: len(hits)] if dataset.kinds is not None else np.array([])
    if len(set(kinds)) > 1:  # a mix: which kind's windows are found, among keys of both kinds
        metrics |= {f"retrieval_{kind}": float(hits[kinds == kind].mean()) for kind in ("circle", "linear")}
    if windows.clean_target is not None:
        n = len(windows.target)
        oracle = retrieval_top1(windows.clean_target.reshape(n, -1), windows.target.reshape(n, -1).numpy(), "l2")
        metrics |= {"oracle_retrieval": oracle, "retrieval_ratio": metrics["retrieval"] / max(oracle, 1e-12)}
        # The oracle again, in embedding space: how far the embedding's geometry alone limits
        # retrieval, apart from the predictor's errors.
        clean = model.encode(torch.from_numpy(windows.clean_target), encoder="target").numpy()
        metrics["embedding_oracle_retrieval"] = retrieval_top1(clean, actual)
    z = embed_sequences(model, dataset.data)
    metrics |= {"rankme": rankme(z), "embedding_std": normalized_std(z)}
    if isinstance(dataset, ToySequenceDataset):
        metrics |= _probes(z, dataset)
    return metrics


class EpochMonitor:
    """Cheap collapse metrics for every epoch, on a fixed held-out batch of at most one block.

    One forward pass over BLOCK windows and sequences: a few milliseconds on 2 cores, against an
    epoch of 1000 sequences that takes a few hundred.
    """

    def __init__(self, dataset: HeldOut, context_len: int, target_len: int, seed: int = 0) -> None:
        windows = held_out_windows(dataset, context_len, target_len, seed)
        self.context, self.target = windows.context[:BLOCK], windows.target[:BLOCK]
        self.sequences = dataset.data[:BLOCK]

    @torch.inference_mode()
    def __call__(self, model: JEPA) -> dict[str, float]:
        model.eval()
        predicted = model.predict(self.context).numpy()
        actual = model.encode(self.target, encoder="target").numpy()
        z = embed_sequences(model, self.sequences)
        if model.steps_objective:
            # A step model's embeddings are centred on its training data only once training ends;
            # until then their shared offset would read as collapse, which centring cannot fake:
            # identical embeddings centre to zeros.
            z = z - z.mean(0)
        return {"retrieval": retrieval_top1(predicted, actual), "embedding_std": normalized_std(z), "rankme": rankme(z)}
