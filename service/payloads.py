"""Request sequences to validated numpy arrays.

Pydantic has already checked that every value is a finite number; what is left is the shape:
no empty sequence, and every point with the model's number of features.
"""

from __future__ import annotations

import numpy as np

from service.engine import ServedVersion
from training.errors import InvalidInput


def to_arrays(field: str, sequences: list[list[list[float]]], served: ServedVersion) -> list[np.ndarray]:
    """(N) lists of (T_i, D) points -> N float32 arrays, or InvalidInput naming the first bad spot."""
    arrays = []
    for i, sequence in enumerate(sequences):
        if not sequence:
            raise InvalidInput(f"{field}[{i}] is empty; a sequence needs at least one point")
        for j, point in enumerate(sequence):
            if len(point) != served.input_dim:
                raise InvalidInput(
                    f"{field}[{i}][{j}] has {len(point)} features; {served.label} expects {served.input_dim}"
                )
        array = np.asarray(sequence, dtype=np.float32)
        if not np.isfinite(array).all():
            j = int(np.argwhere(~np.isfinite(array))[0][0])
            raise InvalidInput(f"{field}[{i}][{j}] holds a value beyond float32 range")
        arrays.append(array)
    return arrays
