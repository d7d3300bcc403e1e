"""What a training job is asked to do, validated before it is queued.

The same models document POST /train in the OpenAPI schema, so a config that cannot work is
refused with a 422 at submission instead of failing later in a worker.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from jepa_model import DEFAULT_PRESET, PRESET_NAMES, ModelConfig, ToySequenceDataset, TrainConfig, resolve_configs
from jepa_model.budget import TrainingEstimate, estimate_training
from jepa_model.config import ENCODERS, derive_windows, pick_preset
from training.errors import InvalidInput

EncoderName = Literal[tuple(sorted({name for names in ENCODERS.values() for name in names}))]  # type: ignore[valid-type]

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
    max_len: int | None = Field(None, ge=1, description="set by the server")
    num_sequences: int | None = Field(None, ge=1, description="set by the server")


DatasetSpec = ToyDataset | StoredDataset


class TrainOptions(BaseModel):
    """Overrides on top of a preset; anything left out keeps the preset's value."""

    model_config = ConfigDict(extra="forbid")

    preset: str = Field(
        DEFAULT_PRESET,
        description="'default' picks 'trajectory' for short paths of 2-D or 3-D points and 'series' for "
        "anything else; the job records the pick",
    )
    encoder: EncoderName | None = Field(None, description="which encoders an objective takes: see the presets")
    hidden_dim: int | None = Field(None, ge=1, le=1024)
    repr_dim: int | None = Field(None, ge=1, le=1024)
    num_layers: int | None = Field(None, ge=1, le=8)
    predictor_hidden_dim: int | None = Field(None, ge=1, le=4096)
    context_len: int | None = Field(
        None, ge=1, le=4096, description="unset: derived from the dataset's shortest sequence; the job records it"
    )
    target_len: int | None = Field(
        None, ge=1, le=4096, description="unset: derived from the dataset's shortest sequence; the job records it"
    )
    epochs: int | None = Field(None, ge=1, le=10_000, description="passes over the data; replaces a preset's steps")
    steps: int | None = Field(None, ge=1, le=1_000_000, description="a budget in optimizer steps")
    batch_size: int | None = Field(None, ge=1, le=65_536)
    lr: float | None = Field(None, gt=0.0, le=10.0)
    momentum: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESET_NAMES:
            raise ValueError(f"unknown preset {value!r}; known: {sorted(PRESET_NAMES)}")
        return value

    def overrides(self) -> dict[str, Any]:
        return self.model_dump(exclude={"preset"}, exclude_none=True)


class TrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    dataset: DatasetSpec = Field(default_factory=ToyDataset)
    config: TrainOptions = Field(default_factory=TrainOptions)

    @model_validator(mode="after")
    def _fit_to_data(self) -> TrainingSpec:
        fit_to_data(self.dataset, self.config)
        return self

    def configs(self) -> tuple[ModelConfig, TrainConfig]:
        return build_configs(self.dataset, self.config)

    def estimate(self) -> TrainingEstimate:
        """The memory its training will need (a resolved stored dataset, or toy data)."""
        model, train = self.configs()
        width, _, longest = data_shape(self.dataset)
        toy = isinstance(self.dataset, ToyDataset)
        # Jobs queued before num_sequences was recorded count as one sequence of their longest.
        count = self.dataset.num_samples if toy else self.dataset.num_sequences or 1
        return estimate_training(model, train, count, longest or 1, width or 1)

    def check_memory(self, budget_mb: int) -> None:
        """InvalidInput when training this would need more than `budget_mb` (JEPA_TRAIN_MEMORY_MB)."""
        estimate = self.estimate()
        if estimate.total_bytes > budget_mb * 2**20:
            raise InvalidInput(
                f"this training job would need {estimate.describe()}; the budget is {budget_mb} MB "
                "(JEPA_TRAIN_MEMORY_MB): use fewer or shorter sequences, a smaller batch or a smaller model"
            )


def build_configs(dataset: DatasetSpec, options: TrainOptions) -> tuple[ModelConfig, TrainConfig]:
    width, _, longest = data_shape(dataset)
    if width is None:
        raise ValueError(f"dataset {dataset.id!r} has not been resolved against the registry")
    model, train = resolve_configs(options.preset, options.overrides(), (width, longest or 0))
    return ModelConfig(**{**model.to_dict(), "input_dim": width}), train


def data_shape(dataset: DatasetSpec) -> tuple[int | None, int | None, int | None]:
    """(features, shortest, longest sequence); Nones for a stored dataset not yet resolved."""
    if isinstance(dataset, ToyDataset):
        return 2, dataset.seq_len, dataset.seq_len
    # Jobs queued before max_len was recorded know only the shortest.
    return dataset.input_dim, dataset.min_len, dataset.max_len or dataset.min_len


def fit_to_data(dataset: DatasetSpec, options: TrainOptions) -> None:
    """Settle what a request left to the data, so the job records it before it is queued.

    "default" becomes the preset it picks for the data's width and length. Unset windows come
    from the shortest sequence: the preset's grow for long sequences and shrink for short ones,
    so no dataset is refused for being short; windows the request set are kept, and ValueError
    says when they cannot fit.
    """
    width, shortest, longest = data_shape(dataset)
    if width is None or shortest is None or longest is None:  # a stored dataset not yet resolved
        return
    options.preset = pick_preset(options.preset, width, longest)
    _, train = resolve_configs(options.preset, options.overrides())
    fixed = frozenset(name for name in ("context_len", "target_len") if getattr(options, name) is not None)
    options.context_len, options.target_len = derive_windows(shortest, train.context_len, train.target_len, fixed)
