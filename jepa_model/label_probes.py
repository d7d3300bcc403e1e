"""How well embeddings separate class labels: a linear probe and a 1-nearest-neighbour classifier.

Plain numpy, so a benchmark can reuse it on any (N, R) embeddings. Labels are integer codes
0..C-1 (one per row). Every function fits on a training split and scores on a held-out split;
nothing here ever sees a held-out label before scoring.
"""

from __future__ import annotations

import numpy as np

# Rows of the held-out split compared with every training row at once, in knn_accuracy.
KNN_BLOCK = 1024


def standardize(train: np.ndarray, test: np.ndarray, eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Both splits scaled by the training split's per-column mean and std.

    train: (N, F), test: (M, F) -> float64 (N, F), (M, F). A constant column becomes 0.
    """
    train = np.asarray(train, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0) + eps
    return (train - mean) / std, (test - mean) / std


def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1))])  # (N, F) -> (N, F + 1)


def fit_ridge_classifier(features: np.ndarray, codes: np.ndarray, num_classes: int, ridge: float = 1e-3) -> np.ndarray:
    """One-vs-rest least-squares classifier: weights (F + 1, C), the last row the bias.

    features: (N, F), already standardised; codes: (N,) ints in [0, C). Each class's column
    regresses +1 for its rows and -1 for the others; `ridge` is scaled by N.
    """
    codes = np.asarray(codes, dtype=np.int64)
    a = _with_bias(np.asarray(features, dtype=np.float64))  # (N, F + 1)
    targets = -np.ones((len(codes), num_classes))
    targets[np.arange(len(codes)), codes] = 1.0  # (N, C)
    gram = a.T @ a + ridge * len(a) * np.eye(a.shape[1])
    return np.linalg.solve(gram, a.T @ targets)


def predict_ridge_classifier(weights: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The class with the highest score: weights (F + 1, C), features (M, F) -> codes (M,)."""
    return (_with_bias(np.asarray(features, dtype=np.float64)) @ weights).argmax(axis=1)


def linear_probe_accuracy(
    train: np.ndarray,
    train_codes: np.ndarray,
    test: np.ndarray,
    test_codes: np.ndarray,
    num_classes: int | None = None,
    ridge: float = 1e-3,
) -> float:
    """Held-out accuracy of a ridge one-vs-rest classifier on standardised embeddings.

    train: (N, R) with train_codes (N,); test: (M, R) with test_codes (M,). The standardisation
    and the classifier are fitted on the training split only. C defaults to max code + 1.
    """
    train_codes, test_codes = np.asarray(train_codes), np.asarray(test_codes)
    if num_classes is None:
        num_classes = int(max(train_codes.max(), test_codes.max())) + 1
    a, b = standardize(train, test)
    weights = fit_ridge_classifier(a, train_codes, num_classes, ridge)
    return float((predict_ridge_classifier(weights, b) == test_codes).mean())


def nearest_neighbours(train: np.ndarray, test: np.ndarray, block: int = KNN_BLOCK) -> np.ndarray:
    """For each test row, the index of its nearest training row by euclidean distance.

    train: (N, R), test: (M, R) -> indices (M,) into train. Works through `block` test rows at a
    time, so memory is (block, N) whatever M is.
    """
    train = np.asarray(train, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    squared = (train**2).sum(axis=1)  # (N,)
    nearest = []
    for start in range(0, len(test), block):
        chunk = test[start : start + block]  # (B, R)
        # |x - y|^2 = |x|^2 - 2 x.y + |y|^2; |x|^2 is the same for every candidate y, so dropped.
        nearest.append((squared[None, :] - 2.0 * chunk @ train.T).argmin(axis=1))
    return np.concatenate(nearest) if nearest else np.zeros(0, dtype=np.int64)


def knn_accuracy(train: np.ndarray, train_codes: np.ndarray, test: np.ndarray, test_codes: np.ndarray) -> float:
    """Held-out accuracy of 1-nearest-neighbour (euclidean) classification.

    train: (N, R) with train_codes (N,); test: (M, R) with test_codes (M,).
    """
    predicted = np.asarray(train_codes)[nearest_neighbours(train, test)]
    return float((predicted == np.asarray(test_codes)).mean())


def majority_accuracy(train_codes: np.ndarray, test_codes: np.ndarray) -> float:
    """The baseline: held-out accuracy of always answering the training split's commonest class."""
    commonest = np.bincount(np.asarray(train_codes, dtype=np.int64)).argmax()
    return float((np.asarray(test_codes) == commonest).mean())


def label_metrics(
    train: np.ndarray, train_codes: np.ndarray, test: np.ndarray, test_codes: np.ndarray, num_classes: int
) -> dict[str, float]:
    """`label_probe_accuracy`, `label_knn_accuracy` and `label_majority_accuracy` (the baseline).

    train: (N, R) embeddings with train_codes (N,); test: (M, R) with test_codes (M,); N, M >= 1.
    """
    return {
        "label_probe_accuracy": linear_probe_accuracy(train, train_codes, test, test_codes, num_classes),
        "label_knn_accuracy": knn_accuracy(train, train_codes, test, test_codes),
        "label_majority_accuracy": majority_accuracy(train_codes, test_codes),
    }
