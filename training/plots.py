"""Plots of a training run, drawn with matplotlib's Agg backend (files only, no display).

Stored beside each version's checkpoint and served by the API; `jepa demo` draws the seed's four.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_NAMES = ("loss", "embeddings")
# Where a version's plots live, inside its checkpoint directory.
PLOTS_DIR = "plots"


@cache
def _pyplot() -> ModuleType:
    """matplotlib's pyplot on the Agg backend, imported on first use: the API process, which only
    serves plots, never pays for it (a quarter of a second at each start)."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: no display, thread-safe enough for one figure at a time
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: Path) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_loss(losses: Sequence[float], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(losses) + 1), losses, marker="o", markersize=2)
    ax.set(xlabel="epoch", ylabel="mean training loss", title="Training loss")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def pca_2d(z: np.ndarray) -> np.ndarray:
    """(N, R) -> (N, 2): the embeddings on their first two principal components."""
    centred = z - z.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def plot_embeddings(z: np.ndarray, labels: Sequence[str] | None, path: Path, title: str = "Embeddings (PCA)") -> Path:
    plt = _pyplot()
    points = pca_2d(z)
    fig, ax = plt.subplots(figsize=(6, 5))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7)
    else:
        labels = np.asarray(labels)
        for label in sorted(set(labels)):
            chosen = labels == label
            ax.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.7, label=str(label))
        ax.legend()
    ax.set(xlabel="PC 1", ylabel="PC 2", title=title)
    return _save(fig, path)


def plot_sequences(sequences: Sequence[np.ndarray], labels: Sequence[str] | None, path: Path, count: int = 8) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for i, seq in enumerate(sequences[:count]):
        label = labels[i] if labels is not None else None
        ax.plot(seq[:, 0], seq[:, 1], marker=".", label=label)
    ax.set(xlabel="x", ylabel="y", title="Sample sequences")
    ax.set_aspect("equal", adjustable="datalim")
    return _save(fig, path)


def plot_predictions(
    contexts: Sequence[np.ndarray], targets: Sequence[np.ndarray], similarities: Sequence[float], path: Path
) -> Path:
    """Context and target of each example, titled with the prediction's cosine to the target."""
    plt = _pyplot()
    columns = min(len(contexts), 4)
    fig, axes = plt.subplots(1, columns, figsize=(3.5 * columns, 3.5), squeeze=False)
    for ax, context, target, sim in zip(axes[0], contexts, targets, similarities, strict=False):
        ax.plot(context[:, 0], context[:, 1], "o-", label="context")
        ax.plot(target[:, 0], target[:, 1], "s-", label="target")
        ax.set_title(f"similarity {sim:.3f}")
        ax.set_aspect("equal", adjustable="datalim")
    axes[0][0].legend()
    return _save(fig, path)
