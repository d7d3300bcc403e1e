"""The convolution peers of bench.realdata (aeon's MiniRocket, MultiRocket and Hydra), each scored
with the same linear probe as the product's embeddings."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.ucr import Features, Split, padded, ridge_accuracy, standardised

MIN_PEER_LEN = 9  # MiniRocket and MultiRocket refuse series under 9 steps (their kernels'), Hydra under 6


# -- the convolution peers (aeon) ---------------------------------------------------------------


@dataclass(frozen=True)
class PeerSizes:
    """How big each peer is; the defaults are aeon's, the published configurations."""

    minirocket_kernels: int = 10_000  # MiniRocket(n_kernels): 10,000 features
    multirocket_kernels: int = 6_250  # MultiRocket(n_kernels): about 50,000 features
    hydra_kernels: int = 8  # HydraTransformer(n_kernels): kernels per group
    hydra_groups: int = 64  # HydraTransformer(n_groups): groups per dilation

    def describe(self) -> str:
        return (
            f"MiniRocket {self.minirocket_kernels:,} kernels, MultiRocket {self.multirocket_kernels:,} kernels, "
            f"Hydra {self.hydra_groups} groups of {self.hydra_kernels} kernels"
        )


# The smallest each will take: MiniRocket and MultiRocket use 84 kernels whatever is asked below that.
SMOKE_SIZES = PeerSizes(minirocket_kernels=84, multirocket_kernels=84, hydra_kernels=8, hydra_groups=8)

PEERS = {
    "minirocket": "MiniRocket",
    "multirocket": "MultiRocket",
    "hydra": "Hydra",
    "hydra_multirocket": "Hydra+MultiRocket",
}
RATIOS = {"minirocket": "ours/MiniRocket", "multirocket": "ours/MultiRocket", "hydra_multirocket": "ours/Hydra+MR"}


def peer_input(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Both splits as aeon takes them: (N, D, T) float64, padded to equal lengths of at least MIN_PEER_LEN."""
    train, test = padded(split, MIN_PEER_LEN)
    return (
        np.ascontiguousarray(train.transpose(0, 2, 1), dtype=np.float64),
        np.ascontiguousarray(test.transpose(0, 2, 1), dtype=np.float64),
    )


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """HydraTransformer.fit sets torch's thread count to its n_jobs, for the whole process, and aeon's
    MiniRocket and MultiRocket change it on multivariate series: undo it."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def minirocket_features(train: np.ndarray, test: np.ndarray, seed: int, sizes: PeerSizes, n_jobs: int) -> Features:
    from aeon.transformations.collection.convolution_based import MiniRocket

    transform = MiniRocket(n_kernels=sizes.minirocket_kernels, n_jobs=n_jobs, random_state=seed).fit(train)
    return standardised(transform.transform(train), transform.transform(test))


def multirocket_features(train: np.ndarray, test: np.ndarray, seed: int, sizes: PeerSizes, n_jobs: int) -> Features:
    from aeon.transformations.collection.convolution_based import MultiRocket

    transform = MultiRocket(n_kernels=sizes.multirocket_kernels, n_jobs=n_jobs, random_state=seed).fit(train)
    return standardised(transform.transform(train), transform.transform(test))


def hydra_features(train: np.ndarray, test: np.ndarray, seed: int, sizes: PeerSizes, n_jobs: int) -> Features:
    """Hydra's counts scaled by aeon's own sparse scaler (square root, then standardised where
    non-zero), as aeon's HydraClassifier and MultiRocketHydraClassifier scale them."""
    from aeon.classification.convolution_based._hydra import _SparseScaler
    from aeon.transformations.collection.convolution_based import HydraTransformer

    with torch_threads_kept():
        transform = HydraTransformer(
            n_kernels=sizes.hydra_kernels, n_groups=sizes.hydra_groups, n_jobs=n_jobs, random_state=seed
        ).fit(train)
        scaler = _SparseScaler()
        z_train = scaler.fit_transform(transform.transform(train))  # torch tensors in and out
        z_test = scaler.transform(transform.transform(test))
    return z_train.numpy().astype(np.float64), z_test.numpy().astype(np.float64)


TRANSFORMS: dict[str, Callable[[np.ndarray, np.ndarray, int, PeerSizes, int], Features]] = {
    "minirocket": minirocket_features,
    "multirocket": multirocket_features,
    "hydra": hydra_features,
}


def run_peers(split: Split, seed: int, sizes: PeerSizes, n_jobs: int, strict: bool) -> dict[str, dict[str, Any]]:
    """Each peer's {"seed", "accuracy", "seconds" (fit + transform + ridge)}, or {"seed", "error"}.

    Hydra+MultiRocket reuses the two transforms (the same random_state, as aeon's
    MultiRocketHydraClassifier builds them) and is charged both transforms' seconds. `strict`
    raises the first failure instead of recording it."""
    train, test = peer_input(split)
    runs: dict[str, dict[str, Any]] = {}
    made: dict[str, tuple[Features, float]] = {}  # a transform's scaled features and its seconds
    for name, transform in TRANSFORMS.items():
        try:
            started = time.perf_counter()
            with torch_threads_kept():
                features = transform(train, test, seed, sizes, n_jobs)
            made[name] = features, time.perf_counter() - started
            accuracy = ridge_accuracy(features, split.y_train, split.y_test)
            runs[name] = {"seed": seed, "accuracy": accuracy, "seconds": time.perf_counter() - started}
        except Exception as exc:
            if strict:
                raise
            runs[name] = {"seed": seed, "error": f"{type(exc).__name__}: {exc}"}
    if "hydra" in made and "multirocket" in made:
        (hydra, hydra_s), (multirocket, multirocket_s) = made["hydra"], made["multirocket"]
        started = time.perf_counter()
        features = np.hstack([hydra[0], multirocket[0]]), np.hstack([hydra[1], multirocket[1]])
        accuracy = ridge_accuracy(features, split.y_train, split.y_test)
        seconds = hydra_s + multirocket_s + time.perf_counter() - started
        runs["hydra_multirocket"] = {"seed": seed, "accuracy": accuracy, "seconds": seconds}
    else:
        runs["hydra_multirocket"] = {"seed": seed, "error": "needs both Hydra and MultiRocket, and one failed"}
    return runs


def warm_up_peers(sizes: PeerSizes, n_jobs: int, strict: bool) -> float:
    """Compile (or load from numba's cache) every peer's kernels, univariate and multivariate, so
    that no dataset's time includes it; seconds taken. Not `strict`, a peer that fails here is
    left to fail, and be recorded, on each dataset."""
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for channels in (1, 2):
        x = [rng.standard_normal((32, channels)).astype(np.float32) for _ in range(8)]
        run_peers(Split("warm-up", x, np.arange(8) % 2, x, np.arange(8) % 2), 0, sizes, n_jobs, strict)
    return time.perf_counter() - started
