"""JEPA encoders for sequences, in plain PyTorch.

The seed's public API is kept: `from jepa_model import JEPA, ToySequenceDataset, train_jepa`.
Each public name is imported from its module on first use, so that importing one torch-free
module of this package (`jepa_model.devices`, which the settings read) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Each public name, and the module it lives in.
_HOMES = {
    "CheckpointCorrupt": "jepa_model.checkpoint",
    "CheckpointError": "jepa_model.checkpoint",
    "CheckpointMissing": "jepa_model.checkpoint",
    "DEFAULT_PRESET": "jepa_model.config",
    "JEPA": "jepa_model.jepa",
    "LoadedCheckpoint": "jepa_model.checkpoint",
    "ModelConfig": "jepa_model.config",
    "PRESETS": "jepa_model.config",
    "PRESET_NAMES": "jepa_model.config",
    "SequenceDataset": "jepa_model.data",
    "ToySequenceDataset": "jepa_model.data",
    "TrainConfig": "jepa_model.config",
    "collate_ragged": "jepa_model.data",
    "ema_update": "jepa_model.jepa",
    "fit": "jepa_model.train",
    "get_preset": "jepa_model.config",
    "load_checkpoint": "jepa_model.checkpoint",
    "pad_sequences": "jepa_model.data",
    "pick_preset": "jepa_model.config",
    "resolve_configs": "jepa_model.config",
    "save_checkpoint": "jepa_model.checkpoint",
    "train_jepa": "jepa_model.train",
}
__all__ = sorted([*_HOMES, "__version__"])


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'jepa_model' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return __all__
