"""Model and training configuration, and the named presets that bundle them.

A checkpoint stores both dataclasses as JSON, so every field here must be JSON-serialisable
and every change must keep old checkpoints loadable (add fields with defaults, never rename).
Each field is declared with `option(...)`: its default, its doc and its bounds. That is the only
place an option is defined: the API's `config`, its schema and the CLI are built from it.
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


# Window models pool an encoder state through an MLP head; step models pool per-step representations.
WINDOW_POOLINGS = ("last", "last_mean", "first_last_mean")
STEP_POOLINGS = ("max_mean", "mean", "pyramid", "max_mean_ppv_lspv")
PYRAMID_SEGMENTS = 3  # "pyramid" pooling: the max and mean over all steps, and the mean of each third
# "max_mean_ppv_lspv" pooling: beside the max and mean, for each of these levels of a dimension (in
# its standard deviations about its mean over the training steps: about its quartiles), the share
# of steps above it and the longest stretch of consecutive steps above it, as a share of the
# series. MultiRocket's PPV and LSPV, with the thresholds learned from the data rather than drawn.
PPV_LEVELS = (-0.67, 0.0, 0.67)
POOLED_PARTS = {
    "last": 1,
    "last_mean": 2,
    "first_last_mean": 3,
    "max_mean": 2,
    "mean": 1,
    "pyramid": 2 + PYRAMID_SEGMENTS,
    "max_mean_ppv_lspv": 2 + 2 * len(PPV_LEVELS),
}
# With pool_blocks, the blocks' states are pooled by max, mean and PPV, not LSPV: the longest
# stretches cost most of the pooling's time, and measured no better on these states (docs/series.md).
BLOCK_POOLED_PARTS = 2 + len(PPV_LEVELS)
OBJECTIVES = ("window", "steps")
ENCODERS = {"window": ("lstm", "transformer"), "steps": ("conv", "lstm")}
ENCODER_NAMES = tuple(sorted({name for names in ENCODERS.values() for name in names}))
NORMS = ("none", "layer", "batch")
LOSSES = ("cosine", "smooth_l1", "l1", "mse", "infonce")


def option(
    default: Any,
    doc: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] | None = None,
    server: bool = False,
    steps: bool = False,
) -> Any:
    """A config field: its default, what it does, and the values a training request may give it.

    This metadata is the one definition of a training option: POST /train's `config`, its
    OpenAPI schema and the CLI's `--set` are generated from it (training/execution/spec.py), and `server`
    marks the fields the server fills in from the data, which requests cannot set. Adding an
    option is a change to this file only.

    `steps` marks a length in steps of a sequence. Those have no upper bound here: the longest
    sequence is the service's setting (JEPA_MAX_SEQ_LEN), which check_trainable takes as max_len,
    so raising it raises them too. The other bounds are the model's own, whatever the service.
    `choices` are checked whenever a config is made (__post_init__), the bounds by check_trainable.
    """
    bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    metadata = {
        "doc": doc,
        "choices": choices,
        "server": server,
        "steps": steps,
        **{k: v for k, v in bounds.items() if v is not None},
    }
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ModelConfig(JSONConfig):
    # "window": the encoder pools a window into one vector and the predictor maps the context's
    # vector to the next window's (the seed). "steps": the encoder gives every step a
    # representation; training hides blocks of steps from the context encoder and the predictor
    # regresses the target encoder's representations of the hidden steps (masked-time JEPA, as
    # I-JEPA does with image patches). The embedding pools the steps.
    objective: str = option(
        "window", "what the encoder learns to predict: the next window's vector, or hidden steps", choices=OBJECTIVES
    )
    encoder: str = option("lstm", "window: lstm (the seed) or transformer; steps: conv or lstm", choices=ENCODER_NAMES)
    input_dim: int = option(2, "features per step", ge=1, le=64, server=True)
    hidden_dim: int = option(64, "the encoder's width", ge=1, le=1024)
    repr_dim: int = option(32, "the embedding's dimension", ge=1, le=4096)
    num_layers: int = option(2, "encoder layers (conv: residual blocks, dilations doubling)", ge=1, le=12)
    predictor_hidden_dim: int = option(64, "the predictor's width", ge=1, le=4096)
    num_heads: int = option(4, "transformer only: attention heads; must divide hidden_dim", ge=1, le=32)
    kernel_size: int = option(3, "conv only: odd, so every step sees as far back as ahead", ge=1, le=31)
    bidirectional: bool = option(False, "LSTM only: a second pass from the end carries the start forward")
    predictor_offsets: int = option(
        0, "how many future offsets the predictor can be told about (0: it is not told, as in the seed)", ge=0, le=64
    )
    # Cosine geometry needs centred embeddings: a shared offset makes every embedding look alike,
    # which is how the seed's near-collapse hides behind cosine 0.99.
    output_norm: str = option(
        "none",
        "how the encoder's output is normalised: none (the seed), layer (each vector standardised) or batch "
        "(each dimension centred and scaled: batch statistics in training, running ones when serving)",
        choices=NORMS,
    )
    pooling: str = option(
        "last",
        "window models: last (the top layer's last valid step, the seed), last_mean (and the mean over steps) or "
        "first_last_mean (and the first step); step models: max_mean (each dimension's max and mean over steps), "
        "mean, pyramid (max_mean and the mean over each third of the steps) or max_mean_ppv_lspv (max_mean, and "
        "for each quartile of the dimension over the training data, the share of steps above it and the longest "
        "stretch of steps above it)",
        choices=(*WINDOW_POOLINGS, *STEP_POOLINGS),
    )
    # What the LSTM states hold linearly (where a line started) then reaches the embedding linearly.
    head_skip: bool = option(False, "a linear path from the pooled features to the embedding beside the MLP head")
    # Circles and lines move by similar amounts per step even where their positions differ 10-fold.
    input_deltas: bool = option(False, "add each step's displacement from the previous step as input features")
    series_norm: bool = option(
        False,
        "step models: standardise each sequence by its own per-feature mean and std first, so the embedding "
        "sees shape and not level or scale (UCR's convention for its univariate sets)",
    )
    # The steps see about a thousand steps each, which blurs local shapes (a spike, a bend); the first
    # blocks' states see 5, 13, 29, 61 steps. Pooling them beside the steps is a hypercolumn.
    pool_blocks: int = option(
        0,
        "conv step models with max_mean_ppv_lspv pooling: also pool the hidden state of the encoder's first N "
        "blocks (max, mean and PPV), whose short receptive fields keep local shapes; repr_dim includes them",
        ge=0,
        le=12,
    )
    # /score's default for step models: distances from what the model remembers of its training
    # data (jepa_model.memory). Bounded: this many steps and as many windows of the pooled features.
    memory_size: int = option(
        0,
        "step models: training steps (and windows) remembered to score anomalies against (POST /score); "
        "0: none, /score then uses forecast surprise only",
        ge=0,
        le=16384,
    )
    input_mean: tuple[float, ...] | None = option(None, "the training data's per-feature means", server=True)
    input_std: tuple[float, ...] | None = option(None, "the training data's per-feature stds", server=True)

    @property
    def feature_dim(self) -> int:
        """Features per step that the encoder sees: the input, and its deltas if asked for."""
        return self.input_dim * (2 if self.input_deltas else 1)

    @property
    def block_dim(self) -> int:
        """Step models: the width of the blocks' states pooled beside each step (pool_blocks)."""
        return self.pool_blocks * self.hidden_dim

    @property
    def step_dim(self) -> int:
        """Step models: each step's representation, what the objective trains and per_step serves.
        The embedding is its pooling's parts of it, then the blocks' parts of their states."""
        return (self.repr_dim - BLOCK_POOLED_PARTS * self.block_dim) // POOLED_PARTS[self.pooling]

    @property
    def pool_dim(self) -> int:
        """Step models: what pooling sees at each step, the step and the pooled blocks' states."""
        return self.step_dim + self.block_dim

    @property
    def per_step_dim(self) -> int:
        """The width of JEPA.encode_steps' representations: step_dim for step models, else repr_dim."""
        return self.step_dim if self.objective == "steps" else self.repr_dim

    def __post_init__(self) -> None:
        _check_choices(self)
        encoders = ENCODERS[self.objective]
        if self.encoder not in encoders:
            raise ValueError(
                f"encoder must be one of {encoders} for objective {self.objective!r}, got {self.encoder!r}"
            )
        poolings = STEP_POOLINGS if self.objective == "steps" else WINDOW_POOLINGS
        if self.pooling not in poolings:
            raise ValueError(
                f"pooling must be one of {poolings} for objective {self.objective!r}, got {self.pooling!r}"
            )
        if self.pool_blocks and (self.objective, self.encoder, self.pooling) != ("steps", "conv", "max_mean_ppv_lspv"):
            raise ValueError("pool_blocks needs a conv step model with max_mean_ppv_lspv pooling")
        if self.pool_blocks > self.num_layers:
            raise ValueError(f"pool_blocks ({self.pool_blocks}) must not exceed num_layers ({self.num_layers})")
        blocks = BLOCK_POOLED_PARTS * self.block_dim  # the blocks' share of the embedding
        if self.objective == "steps" and (self.repr_dim - blocks) % POOLED_PARTS[self.pooling]:
            raise ValueError(
                f"repr_dim must be a multiple of {POOLED_PARTS[self.pooling]} for {self.pooling!r} pooling"
                + (f", plus {blocks} for the pooled blocks' states" if blocks else "")
            )
        if self.objective == "steps" and self.step_dim < 1:
            raise ValueError(
                f"repr_dim {self.repr_dim} leaves no room for the steps beside the {blocks} dimensions of the "
                f"pooled blocks' states: ask for at least {blocks + POOLED_PARTS[self.pooling]}, or pool_blocks 0"
            )
        if self.memory_size and self.objective != "steps":
            raise ValueError(
                "memory_size needs a step model (objective 'steps'): window models have no per-step features"
            )
        if self.encoder == "transformer" and self.hidden_dim % self.num_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must divide hidden_dim ({self.hidden_dim}) for a transformer"
            )
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        # JSON brings lists back; tuples keep the frozen config hashable and comparable.
        for name in ("input_mean", "input_std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))


@dataclass(frozen=True)
class TrainConfig(JSONConfig):
    epochs: int = option(50, "passes over the data (when steps is unset)", ge=1, le=10_000)
    batch_size: int = option(32, "sequences per optimizer step", ge=1, le=65_536)
    lr: float = option(1e-3, "learning rate", gt=0.0, le=10.0)
    context_len: int = option(8, "context window length; unset: derived from the shortest sequence", ge=1, steps=True)
    target_len: int = option(4, "target window length; unset: derived from the shortest sequence", ge=1, steps=True)
    momentum: float = option(0.99, "EMA momentum of the target encoder", ge=0.0, le=1.0)
    seed: int | None = option(
        None, "seeds the run: the same seed, data and config train the same model", ge=0, le=2**32 - 1
    )
    # Everything below defaults to the seed's behaviour.
    optimizer: str = option("adam", "adam or adamw", choices=("adam", "adamw"))
    weight_decay: float = option(0.0, "decoupled weight decay (adamw)", ge=0.0, le=10.0)
    lr_schedule: str = option("constant", "constant or cosine", choices=("constant", "cosine"))
    momentum_end: float | None = option(None, "ramp the EMA momentum linearly to this over training", ge=0.0, le=1.0)
    loss: str = option("cosine", "distance from prediction to target", choices=LOSSES)
    # Logits are cosines over the temperature: below 0.01 (CLIP's floor) they overflow to inf and NaN.
    temperature: float = option(0.1, "for the infonce loss", ge=0.01, le=100.0)
    target_norm: str = option(
        "none",
        "standardise target representations before the loss: layer per vector (I-JEPA), batch per dimension, "
        "so the loss measures error relative to the targets' spread",
        choices=NORMS,
    )
    num_targets: int = option(1, "target spans per sequence and step", ge=1, le=64)
    num_contexts: int = option(1, "contexts drawn per sequence and step, each with its own spans", ge=1, le=64)
    max_offset: int = option(0, "a span starts 0..max_offset steps after its context ends", ge=0, steps=True)
    min_context_len: int | None = option(
        None, "vary the context length from this up to what fits (at most context_len)", ge=1, steps=True
    )
    var_weight: float = option(0.0, "VICReg variance term on context representations", ge=0.0, le=1000.0)
    cov_weight: float = option(0.0, "VICReg covariance term on context representations", ge=0.0, le=1000.0)
    normalize_inputs: bool = option(False, "standardise inputs with the training data's per-feature statistics")
    # 36 sequences make 2 steps an epoch, too little signal for 50 epochs to train anything.
    steps: int | None = option(
        None, "a budget in optimizer steps, whatever the dataset's size; unset: epochs passes", ge=1, le=1_000_000
    )
    max_crop_len: int = option(
        256, "step models: each sequence trains on a random crop of at most this", ge=2, steps=True
    )
    mask_ratio: float = option(0.5, "step models: the share of a crop hidden from the context encoder", gt=0.0, lt=1.0)
    mask_block_len: int | None = option(
        None, "step models: the mean length of a hidden block; unset: a tenth of the crop", ge=1, steps=True
    )
    # Where the job runs, not what it learns: the global batch_size and lr mean the same whatever it is.
    workers: int = option(
        1,
        "data-parallel training processes, each on its share of every batch; more than 1 needs a worker "
        "with JEPA_EXECUTOR=ray",
        ge=1,
        le=256,
    )

    @property
    def window_len(self) -> int:
        """The shortest sequence this config trains and evaluates on (offsets shrink to fit)."""
        return self.context_len + self.target_len

    def __post_init__(self) -> None:
        _check_choices(self)
        checks = {
            "num_targets": self.num_targets >= 1,
            "num_contexts": self.num_contexts >= 1,
            "max_offset": self.max_offset >= 0,
            "min_context_len": self.min_context_len is None or 1 <= self.min_context_len <= self.context_len,
            "steps": self.steps is None or self.steps >= 1,
            "max_crop_len": self.max_crop_len >= 2,
            "mask_ratio": 0.0 < self.mask_ratio < 1.0,
            "mask_block_len": self.mask_block_len is None or self.mask_block_len >= 1,
            "workers": self.workers >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid TrainConfig values for {bad}")
        if self.workers > 1 and self.batch_size < 2 * self.workers:
            raise ValueError(
                f"workers={self.workers} needs a batch_size of at least {2 * self.workers}: each worker "
                "trains on at least 2 rows of every batch"
            )


def _check_choices(config: ModelConfig | TrainConfig) -> None:
    """ValueError for a value outside the choices its option declares: the one place choices are
    checked, when the config is made, so no config object holds one."""
    for option_field in fields(config):
        choices, value = option_field.metadata.get("choices"), getattr(config, option_field.name)
        if choices and value not in choices:
            raise ValueError(f"{option_field.name} must be one of {choices}, got {value!r}")


# The options only step models read: a window model never crops, so its (default) crop length is
# no length of anything, and a service with a short JEPA_MAX_SEQ_LEN must not refuse it.
STEP_MODEL_OPTIONS = frozenset({"max_crop_len", "mask_ratio", "mask_block_len"})


def _out_of_bounds(config: ModelConfig | TrainConfig, max_len: int | None, step_model: bool = True) -> list[str]:
    """Each value of `config` outside the bounds its option declares, and, given `max_len`, each
    length in steps longer than that (of the step-model options, only for a step model)."""
    problems = []
    for option_field in fields(config):
        value, meta = getattr(config, option_field.name), option_field.metadata
        if value is None or isinstance(value, tuple):
            continue
        read = step_model or option_field.name not in STEP_MODEL_OPTIONS
        bounds = {**meta, **({"le": max_len} if meta.get("steps") and read and max_len is not None else {})}
        if isinstance(value, bool) and meta.get("choices") is None and set(bounds) & {"ge", "gt", "le", "lt"}:
            problems.append(f"{option_field.name} must be a number, got {value!r}")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            for key, holds, says in (
                ("ge", lambda v, b: v >= b, "at least"),
                ("gt", lambda v, b: v > b, "greater than"),
                ("le", lambda v, b: v <= b, "at most"),
                ("lt", lambda v, b: v < b, "less than"),
            ):
                if key in bounds and not holds(value, bounds[key]):
                    setting = " (JEPA_MAX_SEQ_LEN)" if key == "le" and meta.get("steps") else ""
                    problems.append(f"{option_field.name} must be {says} {bounds[key]}{setting}, got {value!r}")
    return problems


def check_trainable(
    model: ModelConfig,
    train: TrainConfig,
    shortest: int,
    executor: str | None = None,
    pieces: bool = False,
    *,
    max_len: int | None,
) -> None:
    """ValueError naming every reason `model` and `train` cannot train on sequences of at least
    `shortest` steps (by a worker with this JEPA_EXECUTOR, when given); None when they can.
    `pieces`: `shortest` is that of the pieces training reads a dataset's long series as.
    `max_len`: the longest sequence the service reads at once (JEPA_MAX_SEQ_LEN), which bounds
    the options counted in steps; None only where the caller checks them later with it (a
    request validated before the service's settings are at hand).

    The one check of a whole training config: each value within the bounds its option declares,
    and the options that only fail together. POST /train runs it before anything is queued (422),
    and a training job again before it trains, so a config never reaches the training loop to
    fail there with a traceback. Each rule here is one that a config within the declared bounds
    once broke at run time; tests/training/execution/test_config_property.py looks for more.
    """
    problems = [*_out_of_bounds(model, max_len), *_out_of_bounds(train, max_len, model.objective == "steps")]
    if train.window_len > shortest:
        problems.append(
            f"context_len + target_len = {train.window_len} exceeds the shortest sequence's length {shortest}"
            + (
                " (training reads this dataset's long series as pieces, the shortest of them this long)"
                if pieces
                else ""
            )
        )
    if model.objective == "window" and model.predictor_offsets and train.max_offset >= model.predictor_offsets:
        # The predictor embeds offsets 0..predictor_offsets-1; a span further out has no embedding.
        problems.append(
            f"max_offset ({train.max_offset}) must be less than predictor_offsets ({model.predictor_offsets}): the "
            f"predictor is told offsets 0 to {model.predictor_offsets - 1} only"
        )
    # Statistics over a batch's rows (mean, std) need at least two rows.
    batch_statistics = [
        name
        for name, used in (
            ("output_norm 'batch'", model.output_norm == "batch"),
            ("target_norm 'batch'", train.target_norm == "batch"),
            ("var_weight", train.var_weight > 0),
            ("cov_weight", train.cov_weight > 0),
            ("a step model's forecaster", model.objective == "steps"),
        )
        if used
    ]
    if train.batch_size < 2 and batch_statistics:
        problems.append(
            f"batch_size {train.batch_size} leaves no statistics over a batch for {', '.join(batch_statistics)}: "
            "ask for a batch_size of at least 2"
        )
    if executor == "local" and train.workers > 1:
        problems.append(
            f"workers={train.workers} trains in {train.workers} processes, which needs JEPA_EXECUTOR=ray; this "
            "service's workers train each job in one process on their own host (JEPA_EXECUTOR=local): ask for workers 1"
        )
    if problems:
        raise ValueError("; ".join(problems))


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
    # docs/ablation.md measures each change against the seed; this keeps what measurably helped.
    # It was the only default until recorded series showed that it suits short paths of points
    # in the plane or in space, and little else.
    "trajectory": Preset(
        name="trajectory",
        description="For short paths of 2-D or 3-D points. Centred (batch-normalised) 40-dimensional "
        "embeddings from a 1-layer LSTM that "
        "sees positions and per-step displacements and pools its first step, last step and the mean "
        "over time through an MLP head with a linear skip; standardised inputs; MSE to the target "
        "that follows the context plus light VICReg terms; AdamW with weight decay at lr 5e-3 on a "
        "cosine schedule; EMA momentum ramped from 0.996 to 1.0.",
        model=ModelConfig(
            repr_dim=40,
            num_layers=1,
            output_norm="batch",
            pooling="first_last_mean",
            head_skip=True,
            # The predictor can be told up to 5 offsets, so {"num_targets": 4, "max_offset": 4} in a
            # request's config trains it on them, though at this scale it measured worse (docs/ablation.md).
            predictor_offsets=5,
            input_deltas=True,
        ),
        train=TrainConfig(
            lr=5e-3,
            lr_schedule="cosine",
            momentum=0.996,
            momentum_end=1.0,
            optimizer="adamw",
            weight_decay=0.05,
            loss="mse",
            num_targets=1,
            max_offset=0,
            normalize_inputs=True,
            var_weight=0.3,
            cov_weight=0.01,
        ),
    ),
}

PRESETS["series"] = Preset(
    name="series",
    description="For recorded series of any length and width. Masked-time JEPA: a dilated "
    "convolutional encoder (8 residual blocks, dilations 1-128, 1021 steps of receptive field) sees "
    "each step's values and their change from the step before, and gives every step a "
    "160-dimensional representation; training hides half the steps of a random crop of "
    "up to 256 steps from the context encoder, and a per-step predictor regresses the EMA target "
    "encoder's layer-normed representations of the hidden steps (MSE). The 1920-dimensional embedding "
    "is each step dimension's max and mean over the steps and, for each of its quartiles over the training "
    "data, the share of steps above it (PPV) and the longest stretch of steps above it (LSPV); beside them, "
    "the max, mean and PPV of the first 4 blocks' states (receptive fields of 5 to 61 steps, which keep "
    "local shapes); all standardised with the training data's statistics. A forecaster "
    "learns /predict on the encoder's steps without changing them. AdamW "
    "1e-3 on a cosine schedule for 400 steps of 32 crops, whatever the dataset's size; EMA momentum "
    "ramped from 0.98 to 1.0; standardised inputs. It remembers 2048 training steps and as many windows of "
    "the data's dominant period, and a linear autoregression, for POST /score (jepa_model.memory).",
    # docs/series.md has what was tried on the way, and what each choice measured.
    model=ModelConfig(
        objective="steps",
        encoder="conv",
        hidden_dim=32,
        repr_dim=8 * 160 + 5 * 4 * 32,  # 8 parts of 160 per step, 5 of the 4 pooled blocks' 32 channels
        num_layers=8,
        predictor_hidden_dim=64,
        pooling="max_mean_ppv_lspv",
        pool_blocks=4,
        input_deltas=True,
        memory_size=2048,
    ),
    train=TrainConfig(
        steps=400,
        lr=1e-3,
        lr_schedule="cosine",
        optimizer="adamw",
        weight_decay=0.05,
        momentum=0.98,
        momentum_end=1.0,
        loss="mse",
        normalize_inputs=True,
        max_crop_len=256,
        mask_block_len=1,
    ),
)

# What a request or the CLI gets when it names no preset: not a preset itself, but the choice of
# one by the data (pick_preset).
DEFAULT_PRESET = "default"
PRESET_NAMES = (DEFAULT_PRESET, *PRESETS)
# "default" trains "trajectory" on sequences of 2-D or 3-D points at most this long, and "series"
# on everything else: bench.quality and bench.realdata measure each recipe on both kinds of data.
TRAJECTORY_DIMS, TRAJECTORY_MAX_LEN = (2, 3), 64


def pick_preset(name: str, input_dim: int, max_len: int) -> str:
    """The preset `name` means for data of this width and longest sequence: itself, or, for
    "default", "trajectory" for short paths of points and "series" for anything else."""
    if name != DEFAULT_PRESET:
        get_preset(name)
        return name
    return "trajectory" if input_dim in TRAJECTORY_DIMS and max_len <= TRAJECTORY_MAX_LEN else "series"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESET_NAMES)}") from None


def resolve_configs(
    preset: str = DEFAULT_PRESET, overrides: dict[str, Any] | None = None, data: tuple[int, int] | None = None
) -> tuple[ModelConfig, TrainConfig]:
    """The preset's configs with `overrides` applied; each key goes to whichever config owns it.

    "default" needs `data`, (input_dim, longest sequence), to pick its preset. Asking for
    `epochs` without `steps` trains that many epochs, even where the preset's budget is in steps.
    """
    if preset == DEFAULT_PRESET:
        if data is None:
            raise ValueError("the 'default' preset picks a recipe by the data: pass data=(input_dim, max_len)")
        preset = pick_preset(preset, *data)
    base = get_preset(preset)
    overrides = dict(overrides or {})
    if "epochs" in overrides and "steps" not in overrides:
        overrides["steps"] = None
    model_keys = {f.name for f in fields(ModelConfig)}
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - model_keys - train_keys
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    model = replace(base.model, **{k: v for k, v in overrides.items() if k in model_keys})
    train = replace(base.train, **{k: v for k, v in overrides.items() if k in train_keys})
    return model, train


# Step models forecast at most this far, and /predict contexts default to at most this long.
MAX_DERIVED_TARGET_LEN, MAX_DERIVED_CONTEXT_LEN = 64, 256


def derive_windows(
    shortest: int, context_len: int, target_len: int, fixed: frozenset[str] = frozenset()
) -> tuple[int, int]:
    """(context_len, target_len) for a dataset whose shortest sequence has `shortest` steps.

    The preset's windows grow with long sequences (a quarter and an eighth of the shortest) and
    shrink, in the same proportion, to fit short ones: a dataset is never refused for being
    shorter than a preset. Names in `fixed` were asked for and are kept as they are, so only the
    other window moves; ValueError if what was asked for cannot fit.
    """
    if shortest < 2:
        raise ValueError(f"a sequence needs at least 2 steps for a context and a target, got {shortest}")
    context = context_len if "context_len" in fixed else max(context_len, min(shortest // 4, MAX_DERIVED_CONTEXT_LEN))
    target = target_len if "target_len" in fixed else max(target_len, min(shortest // 8, MAX_DERIVED_TARGET_LEN))
    if context + target <= shortest:
        return context, target
    kept = context if "context_len" in fixed else target if "target_len" in fixed else None
    if {"context_len", "target_len"} <= fixed or (kept is not None and kept >= shortest):
        raise ValueError(
            f"context_len + target_len = {context + target} exceeds the shortest sequence's length {shortest}"
        )
    if "context_len" in fixed:
        return context, shortest - context
    if "target_len" in fixed:
        return shortest - target, target
    target = max(1, round(shortest * target / (context + target)))
    return shortest - target, target
