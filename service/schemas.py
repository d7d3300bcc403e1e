"""Request and response bodies: the JSON contract, as documented in /openapi.json."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict, WithJsonSchema, field_validator
from pydantic.json_schema import SkipJsonSchema

from jepa_model.jepa import EncoderName
from jepa_model.surprise import SEGMENT_PERCENTILE, TOP_SEGMENTS
from service.errors import ERROR_KINDS, ERROR_TYPES
from training.execution.spec import (
    ModelName,
    ResolvedConfigs,
    StoredDatasetRef,
    ToyDataset,
    TrainingSpec,
    refuse_server_set_fields,
)

# Strict: booleans and numeric strings are refused, not coerced. Non-finite values are refused too.
Number = Annotated[float, Strict(), AllowInfNan(False)]
Sequence = Annotated[list[list[Number]], Field(description="One sequence: T points of D features, [T][D].")]
Batch = Annotated[list[Sequence], Field(min_length=1, description="Sequences, [N][T][D]; lengths may differ.")]
VersionRef = Annotated[
    int | str | None,
    Field(
        description="A version number, or an alias such as 'production'. Default: the model's "
        "default alias if set, else its latest version.",
        examples=[1, "production"],
    ),
]


# Built from the table the handlers use, so /openapi.json lists exactly the types they send.
ErrorType = Literal[ERROR_TYPES]  # type: ignore[valid-type]


class FieldError(BaseModel):
    """One problem with a field checked against the schema."""

    loc: list[str | int] = Field(description="Where: 'body', 'query', 'path' or 'header', then keys and indices.")
    msg: str
    type: str = Field(description="pydantic's name for the problem, e.g. 'string_type'.")


class ErrorBody(BaseModel):
    """Every error. `type` is stable, for programs to branch on; `detail` is for people."""

    type: ErrorType = Field(description="One per status; docs/api.md has the table.")
    detail: str | list[FieldError] = Field(
        description="A message naming the problem, or, for fields checked against the schema, one entry per problem."
    )


# The errors any route may answer with, documented once for all of them. 405 is left out: a
# documented operation is the route with its method.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    kind.status: {"model": ErrorBody, "description": kind.when} for kind in ERROR_KINDS if kind.status != 405
}


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName | None = Field(None, description="Model name; default JEPA_DEFAULT_MODEL.")
    version: VersionRef = None


class EncodeOptions(InferenceRequest):
    encoder: EncoderName = "target"
    normalize: bool = Field(False, description="L2-normalise each embedding.")
    per_step: bool = Field(
        False,
        description="Return each sequence's per-step representations (T, S) instead of its embedding: for step "
        "models each step's representation, which the embedding pools; for window models with a forward LSTM the "
        "embedding of every prefix, the last being the sequence's embedding. Other encoders answer 422.",
    )


class EncodeRequest(EncodeOptions):
    sequences: Batch


class EncodeResponse(BaseModel):
    model: str
    version: int
    dim: int = Field(description="R, the embedding's width; with per_step, S, the width of each step's.")
    embeddings: list[list[float]] | None = Field(None, description="(N, R); absent with per_step.")
    per_step: list[list[list[float]]] | None = Field(None, description="With per_step: (N, T_i, S).")


class PredictOptions(InferenceRequest):
    pass


class ScoreOptions(InferenceRequest):
    method: Literal["auto", "memory", "forecast"] = Field(
        "auto",
        description="memory: each step's distance from what the version remembers of its training data (its "
        "steps, its windows of the data's dominant period, and a linear forecast of each step), each scaled by "
        "its 99.9th percentile on held-out training data, the largest kept. forecast: the surprise of each "
        "window's target under the model's prediction from its context (context_len, target_len, stride). "
        "auto: memory where the version has one (step models trained by this release), else forecast.",
    )
    # Each window is read whole, as any sequence is: at most JEPA_MAX_SEQ_LEN steps, a setting, so
    # the /score route holds them to it (no bound of its own here).
    context_len: int | None = Field(
        None,
        ge=1,
        description="Steps of context before each target, at most the service's max_seq_len (/info); default: the "
        "version's context_len.",
    )
    target_len: int | None = Field(
        None,
        ge=1,
        description="Steps in each target window, at most the service's max_seq_len (/info); default: the version's "
        "target_len.",
    )
    stride: int = Field(
        1,
        ge=1,
        le=1_000_000,
        description="forecast: steps between one window's start and the next's. Above target_len, the targets "
        "leave gaps: steps that no window's target covers score null, as the warm-up does.",
    )
    top: int = Field(TOP_SEGMENTS, ge=0, le=100, description="The most surprising segments returned per series.")
    threshold: float = Field(
        SEGMENT_PERCENTILE,
        ge=0.0,
        le=100.0,
        description="A segment is a run of steps scoring at or above this percentile: of the version's calibration, "
        "or of the series' own step scores for a version trained before calibrations were recorded.",
    )


class ScoreRequest(ScoreOptions):
    series: Batch = Field(description="One or more long series (N, T_i, D): the ones to score.")


class Segment(BaseModel):
    start: int = Field(description="The segment's first step.")
    end: int = Field(description="One past its last step.")
    peak: int = Field(description="Its most surprising step.")
    score: float = Field(description="The score at the peak.")
    percentile: float | None = Field(description="Where the peak falls in the version's calibration, 0-100.")


class SeriesScores(BaseModel):
    scores: list[float | None] = Field(
        description="Each step's score. memory: its largest scaled distance from the training data, about 1.0 at "
        "the 99.9th percentile of held-out normal data. forecast: its surprise, 1 - cosine between predicted and "
        "actual representation, in [0, 2], the largest among the windows whose target covers the step; null for "
        "the first context_len steps (warm-up)."
    )
    percentiles: list[float | None] | None = Field(
        description="Each step's score as a percentile (0-100) of the version's scores on held-out training data: "
        "comparable across series. null for an uncalibrated version."
    )
    segments: list[Segment]


class ScoreResponse(BaseModel):
    model: str
    version: int
    method: Literal["memory", "forecast"] = Field(description="The method that scored the series.")
    window: int | None = Field(description="memory: the steps in each window compared; null for forecast.")
    context_len: int | None = Field(description="forecast: the windows' context; null for memory.")
    target_len: int | None = Field(description="forecast: the windows' target; null for memory.")
    stride: int | None = Field(description="forecast: steps between windows; null for memory.")
    calibrated: bool = Field(description="Whether the version has a surprise calibration (percentiles).")
    series: list[SeriesScores]


class PredictRequest(PredictOptions):
    contexts: Batch
    targets: Batch | None = Field(
        None, description="The actual continuations; when given, the response carries similarities."
    )


class PredictResponse(BaseModel):
    model: str
    version: int
    dim: int
    predictions: list[list[float]]
    similarities: list[float] | None = Field(
        None,
        description="Cosine between prediction i and the target encoder's embedding of targets[i]. "
        "Present only when targets are given.",
    )


class SimilarityOptions(InferenceRequest):
    encoder: EncoderName = "target"


class SimilarityRequest(SimilarityOptions):
    a: Batch
    b: Batch


class SimilarityResponse(BaseModel):
    model: str
    version: int
    similarities: list[list[float]] = Field(description="|a| x |b| cosines between embeddings.")


DATASET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_. -]{0,127}$"
DatasetName = Annotated[str, Field(pattern=DATASET_NAME_PATTERN)]


# Checked by training.data.datasets.parse_labels, which names the offending label; the schema documents it.
Label = Annotated[
    Any,
    WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1, "maxLength": 128}, {"type": "integer"}]}),
]
LABELS_DESCRIPTION = (
    "Optional: one class label per sequence, all strings (1 to 128 characters) or all integers, "
    "at most 1000 distinct. Never trained on: a version trained on a labelled dataset reports how "
    "well its embeddings separate the classes on held-out sequences (label_* metrics)."
)


class DatasetMeta(BaseModel):
    """A JSON upload's fields besides its sequences (which are decoded by hand, like inference's)."""

    model_config = ConfigDict(extra="forbid")

    name: DatasetName
    labels: list[Label] | None = Field(None, description=LABELS_DESCRIPTION)


class DatasetIn(DatasetMeta):
    sequences: Annotated[
        list[list[list[Number]]],
        Field(
            min_length=2,
            description="[N][T][D]: at least 2 sequences of 2+ points, D from 1 to 64, and at most "
            "JEPA_MAX_REQUEST_POINTS numbers in all; upload larger datasets as .npy or .csv.",
        ),
    ]


class DatasetOut(BaseModel):
    id: str
    name: str
    num_sequences: int
    input_dim: int
    min_len: int
    max_len: int
    sha256: str
    created_at: datetime
    num_classes: int | None = Field(description="How many distinct labels; null when the dataset is unlabelled.")
    classes: list[str] | list[int] | None = Field(description="The sorted class names; null when unlabelled.")


class TrainRequest(TrainingSpec):
    """A TrainingSpec whose model may be left to the service's default."""

    model: ModelName | None = Field(None, description="Model to add a version to; default JEPA_DEFAULT_MODEL.")
    # A stored dataset by its id alone: the server fills in its shape, and refuses a sent one.
    dataset: ToyDataset | StoredDatasetRef = Field(default_factory=ToyDataset)  # type: ignore[assignment]
    # Filled in by the server from the preset, the overrides and the data; GET /jobs/{id} shows it.
    resolved: SkipJsonSchema[ResolvedConfigs | None] = None

    @field_validator("dataset", mode="before")
    @classmethod
    def _shape_set_by_the_server(cls, value: Any) -> Any:
        return refuse_server_set_fields(value)

    @field_validator("resolved", mode="before")
    @classmethod
    def _set_by_the_server(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("resolved is set by the server when the job is queued; send `config` overrides instead")
        return value


class TrainAccepted(BaseModel):
    job_id: str
    status: str


class JobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    spec: dict[str, Any] = Field(
        description="What the job was asked to do, with what the data settled filled in: the preset "
        "'default' picked, the windows derived from the dataset's lengths, the dataset's shape, and "
        "`resolved`, the exact ModelConfig and TrainConfig the job trains."
    )
    progress: dict[str, Any]
    model: str
    version: int | None
    metrics: dict[str, Any] | None
    error: str | None
    worker: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class EpochOut(BaseModel):
    epoch: int
    loss: float
    metrics: dict[str, float]
    seconds: float = Field(description="Since this attempt started training.")


class JobMetrics(BaseModel):
    job_id: str
    attempt: int
    epochs: list[EpochOut]


class LogLine(BaseModel):
    id: int = Field(description="Increasing: pass the last one seen as `since` to get only newer lines.")
    attempt: int
    created_at: datetime
    level: str
    message: str


class JobLogs(BaseModel):
    job_id: str
    lines: list[LogLine]
    next_since: int = Field(description="`since` for the next page: the last line's id, or the `since` given.")


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Annotated[
        Annotated[int, Strict(), Field(ge=1)] | str,
        Field(description="The version to point at: a number, or another alias (promote staging).", examples=[3]),
    ]


class AliasOut(BaseModel):
    model: str
    alias: str
    version: int


class VersionSummary(BaseModel):
    version: int
    created_at: datetime
    sha256: str
    metrics: dict[str, Any]


class ModelOut(BaseModel):
    name: str
    created_at: datetime
    latest: int | None
    aliases: dict[str, int]
    versions: list[VersionSummary]


class VersionOut(BaseModel):
    model: str
    version: int
    available: bool = Field(description="Whether its checkpoint is present and matches its sha256.")
    problem: str | None = Field(None, description="Why it is unavailable.")
    aliases: list[str]
    config: dict[str, Any]
    metrics: dict[str, Any]
    sha256: str
    created_at: datetime
    job: str | None


class ServedModel(BaseModel):
    name: str
    latest: int
    aliases: dict[str, int]
    input_dim: int = Field(description="Features per step of the latest version (D of [N][T][D]).")
    repr_dim: int = Field(description="Dimension of its embeddings and predictions.")


class Info(BaseModel):
    version: str
    default_model: str
    default_alias: str | None
    models: list[ServedModel]
    limits: dict[str, float]
    auth: dict[str, bool] = Field(description="Whether writes and reads need the API key.")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    model: str
    version: int
