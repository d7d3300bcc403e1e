"""What a training job is asked to do, validated before it is queued.

The same models document POST /train in the OpenAPI schema, so a config that cannot work is
refused with a 422 at submission instead of failing later in a worker.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from jepa_model import DEFAULT_PRESET, PRESETS, ModelConfig, ToySequenceDataset, TrainConfig, resolve_configs

ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]


class ToyDataset(BaseModel):
    """The seed's 2-D trajectories, generated on the worker."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["toy"] = "toy"
    pattern: Literal["circle", "linear", "mixed"] = "mixed"
    num_samples: int = Field(1000, ge=8, le=200_000)
    seq_len: int = Field(20, ge=2, le=4096)
    noise: float = Field(0.1, ge=0.0, le=10.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)

    def build(self) -> ToySequenceDataset:
        return ToySequenceDataset(self.num_samples, self.seq_len, self.pattern, self.noise, self.seed)

    def held_out(self, num_samples: int) -> ToySequenceDataset:
        """Fresh sequences from the same distribution, never seen in training."""
        seed = None if self.seed is None else self.seed + 1_000_003
        return ToySequenceDataset(num_samples, self.seq_len, self.pattern, self.noise, seed)


class StoredDataset(BaseModel):
    """A dataset uploaded with POST /datasets, by id."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["stored"] = "stored"
    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    # Filled in from the stored dataset when the job is queued; values sent are replaced.
    input_dim: int | None = Field(None, ge=1, description="set by the server")
    min_len: int | None = Field(None, ge=1, description="set by the server")


DatasetSpec = ToyDataset | StoredDataset


class TrainOptions(BaseModel):
    """Overrides on top of a preset; anything left out keeps the preset's value."""

    model_config = ConfigDict(extra="forbid")

    preset: str = DEFAULT_PRESET
    hidden_dim: int | None = Field(None, ge=1, le=1024)
    repr_dim: int | None = Field(None, ge=1, le=1024)
    num_layers: int | None = Field(None, ge=1, le=8)
    predictor_hidden_dim: int | None = Field(None, ge=1, le=4096)
    context_len: int | None = Field(None, ge=1, le=4096)
    target_len: int | None = Field(None, ge=1, le=4096)
    epochs: int | None = Field(None, ge=1, le=10_000)
    batch_size: int | None = Field(None, ge=1, le=65_536)
    lr: float | None = Field(None, gt=0.0, le=10.0)
    momentum: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; known: {sorted(PRESETS)}")
        return value

    def overrides(self) -> dict[str, Any]:
        return self.model_dump(exclude={"preset"}, exclude_none=True)


class TrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    dataset: DatasetSpec = Field(default_factory=ToyDataset)
    config: TrainOptions = Field(default_factory=TrainOptions)

    @model_validator(mode="after")
    def _windows_fit(self) -> TrainingSpec:
        check_windows_fit(self.dataset, self.config)
        return self

    def configs(self) -> tuple[ModelConfig, TrainConfig]:
        return build_configs(self.dataset, self.config)


def build_configs(dataset: DatasetSpec, options: TrainOptions) -> tuple[ModelConfig, TrainConfig]:
    model, train = resolve_configs(options.preset, options.overrides())
    input_dim = 2 if isinstance(dataset, ToyDataset) else dataset.input_dim
    if input_dim is None:
        raise ValueError(f"dataset {dataset.id!r} has not been resolved against the registry")
    return ModelConfig(**{**model.to_dict(), "input_dim": input_dim}), train


def check_windows_fit(dataset: DatasetSpec, options: TrainOptions) -> None:
    """Raise ValueError when a training window cannot fit in the dataset's sequences."""
    shortest = dataset.seq_len if isinstance(dataset, ToyDataset) else dataset.min_len
    if shortest is None:  # a stored dataset not yet resolved: checked again once it is
        return
    _, train = resolve_configs(options.preset, options.overrides())
    if train.window_len > shortest:
        raise ValueError(
            f"context_len + target_len = {train.window_len} exceeds the shortest sequence's length {shortest}"
        )
