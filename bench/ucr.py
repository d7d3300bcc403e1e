"""UCR/UEA classification sets from the files inside the aeon wheel, as the product takes them,
and the linear probe and simple baselines bench.realdata scores every representation with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ALPHAS = np.logspace(-3, 3, 10)
PADDING = "padded to the longest series (train and test) by repeating each series' last value"


# -- data -------------------------------------------------------------------------------------


@dataclass
class Split:
    """One dataset's TRAIN and TEST splits as the product takes them: (T_i, D) float32 arrays."""

    name: str
    x_train: list[np.ndarray]
    y_train: np.ndarray  # int codes into `classes`
    x_test: list[np.ndarray]
    y_test: np.ndarray
    classes: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.x_train[0].shape[1])

    @property
    def lengths(self) -> tuple[int, int]:
        lengths = [len(x) for x in self.x_train + self.x_test]
        return min(lengths), max(lengths)

    @property
    def ragged(self) -> bool:
        low, high = self.lengths
        return low != high

    def label(self) -> str:
        low, high = self.lengths
        length = str(high) if low == high else f"{low}-{high}"
        return f"{self.name} ({len(self.x_train)}, {len(self.x_test)}, {length}, {self.dim})"


def bundled_root() -> Path:
    """aeon's own data folder inside the installed wheel."""
    import aeon.datasets

    return Path(aeon.datasets.__file__).parent / "data"


def bundled_names() -> list[str]:
    """The classification sets bundled with aeon (its regression sets are left out)."""
    root = bundled_root()
    return sorted(
        d.name
        for d in root.iterdir()
        if (d / f"{d.name}_TEST.ts").is_file() and is_classification(d / f"{d.name}_TRAIN.ts")
    )


def is_classification(path: Path) -> bool:
    """Whether a .ts file's header says it has class labels ("@classLabel true ...")."""
    if not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            words = line.lower().split()
            if words[:1] == ["@data"]:
                return False
            if words[:2] == ["@classlabel", "true"]:
                return True
    return False


def to_sequences(x: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    """aeon's (N, C, T) array, or list of (C, T_i) arrays, as (T_i, C) float32 arrays."""
    return [np.ascontiguousarray(np.asarray(s, dtype=np.float32).T) for s in x]


def encode_labels(y_train: np.ndarray, y_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    classes, codes = np.unique(np.concatenate([y_train, y_test]), return_inverse=True)
    return codes[: len(y_train)], codes[len(y_train) :], [str(c) for c in classes]


def load_bundled(name: str) -> Split:
    """A classification dataset from the files inside the aeon wheel.

    aeon's load_classification also reads these first, but downloads any name that is not bundled;
    reading the .ts files directly makes a download impossible.
    """
    from aeon.datasets import load_from_ts_file

    directory = bundled_root() / name
    paths = [directory / f"{name}_{split}.ts" for split in ("TRAIN", "TEST")]
    if not all(p.is_file() for p in paths):
        raise ValueError(f"{name!r} is not bundled with aeon (nothing is downloaded); bundled: {bundled_names()}")
    (x_train, y_train, meta), (x_test, y_test, _) = (load_from_ts_file(str(p), return_meta_data=True) for p in paths)
    if not meta.get("classlabel"):
        raise ValueError(f"{name!r} is a regression problem, not classification")
    train_codes, test_codes, classes = encode_labels(y_train, y_test)
    return Split(name, to_sequences(x_train), train_codes, to_sequences(x_test), test_codes, classes)


def pad_edge(sequences: list[np.ndarray], length: int) -> np.ndarray:
    """(N, length, D): each (T_i, D) sequence padded by repeating its last step."""
    return np.stack([np.pad(s, ((0, length - len(s)), (0, 0)), mode="edge") for s in sequences])


def padded(split: Split, min_length: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Both splits as (N, T, D), T the longest series or `min_length`, whichever is more."""
    length = max(split.lengths[1], min_length)
    return pad_edge(split.x_train, length), pad_edge(split.x_test, length)


# -- the linear probe and the simple baselines ---------------------------------------------------

Features = tuple[np.ndarray, np.ndarray]  # (train, test), each (N, F), scaled as the ridge takes them


def standardised(train: np.ndarray, test: np.ndarray) -> Features:
    """Both splits flattened to (N, F), standardised with the TRAIN split's means and stds."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train.reshape(len(train), -1))
    return scaler.transform(train.reshape(len(train), -1)), scaler.transform(test.reshape(len(test), -1))


def ridge_accuracy(features: Features, y_train: np.ndarray, y_test: np.ndarray) -> float:
    """RidgeClassifierCV(alphas=logspace(-3, 3, 10)) fitted on the scaled TRAIN features; accuracy on TEST."""
    from sklearn.linear_model import RidgeClassifierCV

    train, test = features
    return float(RidgeClassifierCV(alphas=ALPHAS).fit(train, y_train).score(test, y_test))


def raw_ridge(split: Split) -> float:
    return ridge_accuracy(standardised(*padded(split)), split.y_train, split.y_test)


def one_nn(split: Split) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    train, test = padded(split)
    knn = KNeighborsClassifier(n_neighbors=1, algorithm="brute", metric="euclidean")
    knn.fit(train.reshape(len(train), -1), split.y_train)
    return float(knn.score(test.reshape(len(test), -1), split.y_test))
