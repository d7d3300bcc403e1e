"""What a training job is asked to do, validated before it is queued.

The same models document POST /train in the OpenAPI schema, so a config that cannot work is
refused with a 422 at submission instead of failing later in a worker.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, get_args, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, field_validator, model_validator

from jepa_model import DEFAULT_PRESET, PRESET_NAMES, ModelConfig, ToySequenceDataset, TrainConfig, resolve_configs
from jepa_model.budget import TrainingEstimate, estimate_training
from jepa_model.config import ENCODER_NAMES, derive_windows, pick_preset
from training.errors import InvalidInput

EncoderName = Literal[ENCODER_NAMES]  # type: ignore[valid-type]

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


class _Options(BaseModel):
    """Overrides on top of a preset; anything left out keeps the preset's value."""

    model_config = ConfigDict(extra="forbid")

    preset: str = Field(
        DEFAULT_PRESET,
        description="'default' picks 'trajectory' for short paths of 2-D or 3-D points and 'series' for "
        "anything else; the job records the pick",
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESET_NAMES:
            raise ValueError(f"unknown preset {value!r}; known: {sorted(PRESET_NAMES)}")
        return value

    def overrides(self) -> dict[str, Any]:
        return self.model_dump(exclude={"preset"}, exclude_none=True)


def _settable(config: type) -> dict[str, Any]:
    """A pydantic field for each option of a config dataclass that requests may set: optional (None
    keeps the preset's value), typed, bounded and documented as `option(...)` declared it."""
    hints = get_type_hints(config)
    settable = {}
    for option in dataclasses.fields(config):
        meta = option.metadata
        if meta.get("server"):
            continue
        if meta["choices"]:
            kind: Any = Literal[meta["choices"]]
        else:  # `int | None` in the dataclass: a request's null already means "the preset's value"
            kind = next(t for t in get_args(hints[option.name]) or (hints[option.name],) if t is not type(None))
        bounds = {k: meta[k] for k in ("ge", "gt", "le", "lt") if k in meta}
        settable[option.name] = (kind | None, Field(None, description=meta["doc"], **bounds))
    return settable


_OPTION_FIELDS = _settable(ModelConfig) | _settable(TrainConfig)
assert len(_OPTION_FIELDS) == len(_settable(ModelConfig)) + len(_settable(TrainConfig)), "an option in both configs"
# Every ModelConfig and TrainConfig option but those the server sets, generated from their declarations.
TrainOptions = create_model("TrainOptions", __base__=_Options, **_OPTION_FIELDS)


class ResolvedConfigs(BaseModel):
    """A job's ModelConfig and TrainConfig, as JSON, fixed when it was queued."""

    model: dict[str, Any]
    train: dict[str, Any]


class TrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    dataset: DatasetSpec = Field(default_factory=ToyDataset)
    config: TrainOptions = Field(default_factory=TrainOptions)  # type: ignore[valid-type]
    resolved: ResolvedConfigs | None = Field(
        None,
        description="set by the server when the job is queued: the exact configs it trains, so a later "
        "change to a preset never changes a job that is already waiting",
    )

    @model_validator(mode="after")
    def _fit_to_data(self) -> TrainingSpec:
        if self.resolved is None:
            fit_to_data(self.dataset, self.config)
            if data_shape(self.dataset)[0] is not None:  # a stored dataset's shape is known
                model, train = build_configs(self.dataset, self.config)
                self.resolved = ResolvedConfigs(model=model.to_dict(), train=train.to_dict())
        return self

    def configs(self) -> tuple[ModelConfig, TrainConfig]:
        if self.resolved is None:
            return build_configs(self.dataset, self.config)  # raises: the dataset is not resolved yet
        return ModelConfig.from_dict(self.resolved.model), TrainConfig.from_dict(self.resolved.train)

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
