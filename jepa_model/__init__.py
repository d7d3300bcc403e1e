"""JEPA encoders for sequences, in plain PyTorch.

The seed's public API is kept: `from jepa_model import JEPA, ToySequenceDataset, train_jepa`.
"""

from jepa_model.checkpoint import (
    CheckpointCorrupt,
    CheckpointError,
    CheckpointMissing,
    LoadedCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from jepa_model.config import (
    DEFAULT_PRESET,
    PRESET_NAMES,
    PRESETS,
    ModelConfig,
    TrainConfig,
    get_preset,
    pick_preset,
    resolve_configs,
)
from jepa_model.data import SequenceDataset, ToySequenceDataset, collate_ragged, pad_sequences
from jepa_model.jepa import JEPA, ema_update
from jepa_model.train import fit, train_jepa

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PRESET",
    "JEPA",
    "PRESETS",
    "PRESET_NAMES",
    "CheckpointCorrupt",
    "CheckpointError",
    "CheckpointMissing",
    "LoadedCheckpoint",
    "ModelConfig",
    "SequenceDataset",
    "ToySequenceDataset",
    "TrainConfig",
    "__version__",
    "collate_ragged",
    "ema_update",
    "fit",
    "get_preset",
    "load_checkpoint",
    "pad_sequences",
    "pick_preset",
    "resolve_configs",
    "save_checkpoint",
    "train_jepa",
]
