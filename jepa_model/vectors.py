"""Row-wise vector helpers shared by the metrics, the surprise scores and the service."""

from __future__ import annotations

import numpy as np

# Below this norm a row counts as zero and stays zero, as torch's F.normalize treats it.
NORM_FLOOR = 1e-12


def unit_rows(z: np.ndarray) -> np.ndarray:
    """Rows (N, R) scaled to unit L2 norm; a zero row stays zero."""
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), NORM_FLOOR)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine of each row of `a` (N, R) with the same row of `b` (N, R) -> (N,)."""
    return np.einsum("nr,nr->n", unit_rows(a), unit_rows(b))
