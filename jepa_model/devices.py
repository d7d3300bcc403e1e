"""Which torch device serving and training run on.

Torch is imported only to resolve a device: the settings read DeviceName from here, and reading
them must not import torch (the remote CLI never needs it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch

DeviceName = Literal["auto", "cpu", "cuda"]
DEVICE_NAMES: tuple[str, ...] = get_args(DeviceName)


def resolve_device(name: str) -> torch.device:
    """ "auto": CUDA when torch sees it, else the CPU; "cpu"; or "cuda", which must be there."""
    import torch

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
