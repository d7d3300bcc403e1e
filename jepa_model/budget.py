"""What a training run will need, estimated from its configs and its data's size before it runs.

Each of a job's options is bounded, but their product is not: 200,000 sequences of 4,096 steps
with a batch of 65,536 and hidden 1,024 would need tens of GB. The service refuses such a job
when it is submitted instead of letting a worker be OOM-killed hours later.

The estimate errs high: 1.04x to 2.4x the peak RSS of two training steps on the five
configurations of `python -m bench.train_memory`. It is a gate, not a prediction of peak RSS.
"""

from __future__ import annotations

from dataclasses import dataclass

from jepa_model.config import ModelConfig, TrainConfig

FLOAT_BYTES = 4
# Copies of every parameter during training: weights, gradients, Adam's two moments; the EMA
# target encoder is counted as a model of its own.
PARAMETER_COPIES = 4
# Floats kept per step, per hidden unit and layer for the backward pass: an LSTM keeps its four
# gates, cell and hidden state per direction; convolutions and transformer blocks their inputs,
# norms and activations. 20 covers each, as measured (see the module docstring).
ACTIVATION_FLOATS = 20
# The data is held as float64 while it is generated or parsed, then as float32 tensors.
DATA_COPIES = 3
# torch, the interpreter and the loaded libraries, before any tensor.
PROCESS_BASE_BYTES = 400 * 2**20


@dataclass(frozen=True)
class TrainingEstimate:
    parameters: int
    parameter_bytes: int
    activation_bytes: int
    data_bytes: int

    @property
    def total_bytes(self) -> int:
        return PROCESS_BASE_BYTES + self.parameter_bytes + self.activation_bytes + self.data_bytes

    def describe(self) -> str:
        mb = 2**20
        return (
            f"about {self.total_bytes // mb:,} MB of memory: {self.parameter_bytes // mb:,} MB for "
            f"{self.parameters:,} parameters and their optimizer state, {self.activation_bytes // mb:,} MB of "
            f"activations per batch, {self.data_bytes // mb:,} MB of data"
        )


def encoder_parameters(model: ModelConfig) -> int:
    """An upper bound for any encoder the config can name (LSTM, transformer or convolution)."""
    hidden, directions = model.hidden_dim, 2 if model.bidirectional else 1
    per_layer = 12 * hidden * hidden * directions + 4 * hidden * directions
    return model.num_layers * per_layer + 4 * hidden * model.feature_dim + hidden * model.repr_dim * 3


def predictor_parameters(model: ModelConfig) -> int:
    width = max(model.predictor_hidden_dim, model.repr_dim, model.hidden_dim)
    return 4 * width * width


def steps_per_sequence(model: ModelConfig, train: TrainConfig, longest: int) -> int:
    """Steps of each sequence that go through the encoders in one training step."""
    if model.objective == "steps":
        return min(train.max_crop_len, longest)
    return train.num_contexts * train.context_len + train.num_contexts * train.num_targets * train.target_len


def estimate_training(
    model: ModelConfig, train: TrainConfig, num_sequences: int, longest: int, features: int
) -> TrainingEstimate:
    """Memory a training run needs for `num_sequences` sequences of at most `longest` steps."""
    parameters = 2 * encoder_parameters(model) + predictor_parameters(model)
    directions = 2 if model.bidirectional else 1
    steps = steps_per_sequence(model, train, longest)
    batch = min(train.batch_size, num_sequences)
    per_step = ACTIVATION_FLOATS * model.hidden_dim * model.num_layers * directions
    if model.objective == "steps":  # every step also gets a representation, a prediction and a loss
        per_step += ACTIVATION_FLOATS // 2 * (model.repr_dim + model.predictor_hidden_dim)
    attention = model.num_heads * steps * model.num_layers * 3 if model.encoder == "transformer" else 0
    activations = batch * steps * (per_step + attention) * FLOAT_BYTES
    return TrainingEstimate(
        parameters=parameters,
        parameter_bytes=parameters * PARAMETER_COPIES * FLOAT_BYTES,
        activation_bytes=activations,
        data_bytes=num_sequences * longest * features * FLOAT_BYTES * DATA_COPIES,
    )
