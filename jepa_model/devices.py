"""Which torch device serving and training run on."""

from __future__ import annotations

import torch

DEVICE_NAMES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """ "auto": CUDA when torch sees it, else the CPU; "cpu"; or "cuda", which must be there."""
    if name not in DEVICE_NAMES:
        raise ValueError(f"device must be one of {DEVICE_NAMES}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for, but torch sees no CUDA device (no GPU or driver visible, or a "
            "CPU-only torch build: docs/install.md); use 'auto' or 'cpu'"
        )
    return torch.device(name)
