import pytest
import torch

from jepa_model import JEPA, PRESETS, ModelConfig
from jepa_model.serving import (
    OPERATIONS,
    eager_forwards,
    eager_ragged_forwards,
    pads_exactly,
    traced_forwards,
    traced_ragged_forwards,
)

# Every encoder kind (window: lstm, transformer; steps: conv, lstm), every preset, and the options
# that touch padding: pooling over steps, output norms, deltas, per-series normalisation.
CONFIGS = {
    "seed": PRESETS["seed"].model.to_dict(),
    "trajectory": PRESETS["trajectory"].model.to_dict(),
    "bidirectional": {**PRESETS["trajectory"].model.to_dict(), "bidirectional": True},
    "transformer": {**PRESETS["trajectory"].model.to_dict(), "encoder": "transformer", "hidden_dim": 32},
    "transformer last": {**PRESETS["seed"].model.to_dict(), "encoder": "transformer", "output_norm": "layer"},
    "5 features": {**PRESETS["trajectory"].model.to_dict(), "input_dim": 5, "output_norm": "layer"},
    "series": PRESETS["series"].model.to_dict(),
    "series pyramid": {
        **PRESETS["series"].model.to_dict(),
        "pooling": "pyramid",
        "repr_dim": 50,
        "pool_blocks": 0,
        "series_norm": True,
        "input_deltas": True,
    },
    "series lstm": {
        **PRESETS["series"].model.to_dict(),
        "encoder": "lstm",
        "num_layers": 1,
        "input_dim": 5,
        "pool_blocks": 0,
    },
    "series hypercolumns": {**PRESETS["series"].model.to_dict(), "pool_blocks": 2, "repr_dim": 8 * 8 + 5 * 2 * 32},
}


def build(options: dict) -> JEPA:
    torch.manual_seed(0)
    return JEPA.from_config(ModelConfig(**options)).eval()


@pytest.mark.parametrize("options", CONFIGS.values(), ids=CONFIGS.keys())
def test_traced_forwards_match_the_eager_model_on_unseen_shapes(options: dict) -> None:
    model = build(options)
    traced, eager = traced_forwards(model), eager_forwards(model)
    assert set(traced) == set(OPERATIONS)
    for shape in [(7, 20, model.config.input_dim), (1, 3, model.config.input_dim)]:
        x = torch.randn(*shape)
        with torch.inference_mode():
            for op in OPERATIONS:
                torch.testing.assert_close(traced[op](x), eager[op](x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("options", CONFIGS.values(), ids=CONFIGS.keys())
def test_a_padded_batch_answers_each_sequence_as_it_would_alone(options: dict) -> None:
    """What lets the server batch mixed lengths: padding changes no row's answer, traced or eager."""
    model = build(options)
    lengths = [11, 1, 30, 6, 30, 17]
    sequences = [torch.randn(n, model.config.input_dim) for n in lengths]
    x = torch.full((len(lengths), max(lengths), model.config.input_dim), 1e3)  # (B, T, D): loud padding
    for i, seq in enumerate(sequences):
        x[i, : len(seq)] = seq
    assert pads_exactly(model)
    full = eager_forwards(model)
    with torch.inference_mode():
        for forwards in (traced_ragged_forwards(model), eager_ragged_forwards(model)):
            assert set(forwards) == set(OPERATIONS)
            for op in OPERATIONS:
                alone = torch.cat([full[op](seq[None]) for seq in sequences])  # (B, R)
                torch.testing.assert_close(forwards[op](x, torch.tensor(lengths)), alone, atol=1e-5, rtol=0)


class _LeakyJEPA(JEPA):
    """Reads its padding as if it were data."""

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None, encoder: str = "target") -> torch.Tensor:
        return super().encode(x, None, encoder)  # type: ignore[arg-type]


def test_a_model_that_reads_its_padding_is_caught() -> None:
    torch.manual_seed(0)
    assert not pads_exactly(_LeakyJEPA.from_config(PRESETS["seed"].model).eval())


def test_a_model_with_narrow_embedding_dimensions_still_batches_padded() -> None:
    """A trained model standardises by each dimension's training std, and some are narrow: float
    rounding that differs between batch shapes grows by 1/std. That is not padding leaking in, so it
    must not send the model to one pass per length (what once cost mixed traffic 40% of its speed)."""
    model = build(PRESETS["series"].model.to_dict())
    for encoder in (model.target_encoder, model.context_encoder):
        encoder.embedding_std[::3] = 0.004  # as narrow as a series model trained on random walks has
    assert pads_exactly(model)
    leaky = _LeakyJEPA.from_config(PRESETS["series"].model)
    leaky.load_state_dict(model.state_dict())
    assert not pads_exactly(leaky.eval())
