"""What a training job is asked to do, validated before it is queued.

The same models document POST /train in the OpenAPI schema, so a config that cannot work is
refused with a 422 at submission instead of failing later in a worker.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, get_args, get_type_hints

from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    create_model,
    field_validator,
    model_validator,
)

from jepa_model import DEFAULT_PRESET, PRESET_NAMES, ModelConfig, ToySequenceDataset, TrainConfig, resolve_configs
from jepa_model.budget import TrainingEstimate, estimate_training
from jepa_model.config import ENCODER_NAMES, check_trainable, derive_windows, pick_preset
from jepa_model.data import FEW_SEQUENCES, PIECE_STEPS, SHORTEST_PIECE, needs_pieces
from training.errors import InvalidInput

EncoderName = Literal[ENCODER_NAMES]  # type: ignore[valid-type]

ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
# Strict: `true` is not 1, nor "3" three. Floats take integers (1 is 1.0), never NaN or infinity.
Integer = Annotated[int, Strict()]
Real = Annotated[float, Strict(), AllowInfNan(False)]


class ToyDataset(BaseModel):
    """The seed's 2-D trajectories, generated on the worker."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["toy"] = "toy"
    pattern: Literal["circle", "linear", "mixed"] = "mixed"
    num_samples: Integer = Field(1000, ge=8, le=200_000)
    # At most JEPA_MAX_SEQ_LEN, a setting: check_configs holds it to the service's value.
    seq_len: Integer = Field(20, ge=2, description="steps per sequence: at most the service's max_seq_len (/info)")
    noise: Real = Field(0.1, ge=0.0, le=10.0)
    seed: Integer | None = Field(None, ge=0, le=2**32 - 1)

    def build(self) -> ToySequenceDataset:
        return ToySequenceDataset(self.num_samples, self.seq_len, self.pattern, self.noise, self.seed)

    def held_out(self, num_samples: int) -> ToySequenceDataset:
        """Fresh sequences from the same distribution, never seen in training."""
        seed = None if self.seed is None else self.seed + 1_000_003
        return ToySequenceDataset(num_samples, self.seq_len, self.pattern, self.noise, seed)


DATASET_ID = r"^[0-9a-f]{32}$"


class StoredDatasetRef(BaseModel):
    """A dataset uploaded with POST /datasets, by id: what a request names. The server fills in
    its shape (StoredDataset) from the registry."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["stored"] = "stored"
    id: str = Field(pattern=DATASET_ID)


# The fields of StoredDataset that the server fills in; a request that sends them is refused.
SERVER_SET_DATASET_FIELDS = ("input_dim", "min_len", "max_len", "num_sequences")


def refuse_server_set_fields(value: Any) -> Any:
    """A request's dataset, refused (ValueError) when it sets what the server fills in from the
    registry: windows fitted to a sent min_len would otherwise be checked against it, not the data."""
    if isinstance(value, dict) and value.get("kind") == "stored":
        sent = [name for name in SERVER_SET_DATASET_FIELDS if value.get(name) is not None]
        if sent:
            raise ValueError(
                f"{', '.join(sent)} {'is' if len(sent) == 1 else 'are'} set by the server from the stored dataset: "
                "send only its kind and id"
            )
        return {name: v for name, v in value.items() if name not in SERVER_SET_DATASET_FIELDS}
    return value


class StoredDataset(BaseModel):
    """A dataset uploaded with POST /datasets, by id, as a job records it: with its shape."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["stored"] = "stored"
    id: str = Field(pattern=DATASET_ID)
    # Filled in from the stored dataset when the job is queued (training.execution.jobs.resolve_spec).
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
            kind = {int: Integer, float: Real}.get(kind, kind)
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

    def configs(self, executor: str | None = None, max_len: int | None = None) -> tuple[ModelConfig, TrainConfig]:
        """The configs this job trains, checked again (check_trainable) against its data and, when
        given, the JEPA_EXECUTOR of the workers that will run it and their JEPA_MAX_SEQ_LEN
        (`max_len`, which bounds the lengths in steps): InvalidInput says why not. Queueing a job
        (jobs.enqueue) and training it (training.execution.runner) pass both."""
        if self.resolved is None:
            model, train = build_configs(self.dataset, self.config)  # raises: the dataset is not resolved yet
        else:
            model, train = ModelConfig.from_dict(self.resolved.model), TrainConfig.from_dict(self.resolved.train)
        try:
            check_configs(self.dataset, model, train, executor, max_len=max_len)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return model, train

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
    model = ModelConfig(**{**model.to_dict(), "input_dim": width})
    # The request is validated before the service's settings are at hand: queueing the job checks
    # the lengths against JEPA_MAX_SEQ_LEN (TrainingSpec.configs).
    check_configs(dataset, model, train, max_len=None)
    return model, train


def check_configs(
    dataset: DatasetSpec, model: ModelConfig, train: TrainConfig, executor: str | None = None, *, max_len: int | None
) -> None:
    """ValueError when `model` and `train` cannot train on `dataset` (jepa_model's check_trainable),
    or, given `max_len` (JEPA_MAX_SEQ_LEN), when a toy dataset's sequences are longer than that."""
    _, shortest, longest = data_shape(dataset)
    if shortest is None or longest is None:
        return
    toy = isinstance(dataset, ToyDataset)
    if toy and max_len is not None and dataset.seq_len > max_len:
        raise ValueError(f"dataset.seq_len must be at most {max_len} (JEPA_MAX_SEQ_LEN), got {dataset.seq_len}")
    count = dataset.num_samples if toy else getattr(dataset, "num_sequences", None)
    trained = shortest_trained(shortest, longest, count)
    check_trainable(model, train, trained, executor, pieces=trained < shortest, max_len=max_len)


def shortest_trained(shortest: int, longest: int, count: int | None) -> int:
    """The fewest steps of any sequence training reads from a dataset of `count` sequences of
    `shortest` to `longest` steps: its shortest, or, where it reads long series as pieces
    (jepa_model.data.training_pieces), the shortest piece there can be. Where the lengths between
    the shortest and the longest are unknown, a series of 2 * SHORTEST_PIECE steps is assumed."""
    count = FEW_SEQUENCES if count is None else count  # jobs queued before counts were recorded
    if not needs_pieces([shortest] * (min(count, FEW_SEQUENCES) - 1) + [longest]):  # as many as it tells by
        return shortest
    if shortest >= 2 * SHORTEST_PIECE:  # every series is cut, the shortest into the shortest pieces
        return min(PIECE_STEPS, shortest // 2)
    # The shortest stays whole; the longest, and any series of 2 * SHORTEST_PIECE steps or more, is cut.
    cut = min(PIECE_STEPS, longest // 2) if count <= 2 else SHORTEST_PIECE
    return min(shortest, cut)


def data_shape(dataset: DatasetSpec) -> tuple[int | None, int | None, int | None]:
    """(features, shortest, longest sequence); Nones for a stored dataset not yet resolved."""
    if isinstance(dataset, ToyDataset):
        return 2, dataset.seq_len, dataset.seq_len
    if not isinstance(dataset, StoredDataset):  # a request's StoredDatasetRef: only the server knows
        return None, None, None
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
