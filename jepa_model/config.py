"""Model and training configuration, and the named presets that bundle them.

A checkpoint stores both dataclasses as JSON, so every field here must be JSON-serialisable
and every change must keep old checkpoints loadable (add fields with defaults, never rename).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Self


class JSONConfig:
    """to_dict / from_dict for the config dataclasses; from_dict refuses keys it does not know."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        unknown = set(data) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if unknown:
            # A silently dropped key would rebuild a different model than the one that was saved.
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class ModelConfig(JSONConfig):
    input_dim: int = 2
    hidden_dim: int = 64
    repr_dim: int = 32
    num_layers: int = 2
    predictor_hidden_dim: int = 64


@dataclass(frozen=True)
class TrainConfig(JSONConfig):
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    context_len: int = 8
    target_len: int = 4
    momentum: float = 0.99
    seed: int | None = None

    @property
    def window_len(self) -> int:
        return self.context_len + self.target_len


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


PRESETS: dict[str, Preset] = {
    "seed": Preset(
        name="seed",
        description="The seed's recipe exactly: 2-layer LSTM, MLP predictor, cosine loss, "
        "Adam 1e-3, EMA 0.99, one window per sequence (context 8, target 4).",
    ),
}

# The preset used when a request or the CLI names none.
DEFAULT_PRESET = "seed"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None


def resolve_configs(
    preset: str = DEFAULT_PRESET, overrides: dict[str, Any] | None = None
) -> tuple[ModelConfig, TrainConfig]:
    """The preset's configs with `overrides` applied; each key goes to whichever config owns it."""
    base = get_preset(preset)
    overrides = dict(overrides or {})
    model_keys = {f.name for f in fields(ModelConfig)}
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - model_keys - train_keys
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    model = replace(base.model, **{k: v for k, v in overrides.items() if k in model_keys})
    train = replace(base.train, **{k: v for k, v in overrides.items() if k in train_keys})
    return model, train
