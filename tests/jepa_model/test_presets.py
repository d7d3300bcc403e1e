"""The default preset's machinery: spans with offsets, momentum ramp, new encoders and norms."""

from pathlib import Path

import pytest
import torch

from jepa_model import (
    JEPA,
    PRESETS,
    ModelConfig,
    ToySequenceDataset,
    TrainConfig,
    fit,
    load_checkpoint,
    pad_sequences,
    save_checkpoint,
)
from jepa_model.encoders import step_features
from jepa_model.train import momentum_at, sample_spans
from tests.factories import random_sequences


def test_spans_follow_their_context_at_the_sampled_offsets() -> None:
    x = torch.arange(20, dtype=torch.float32).reshape(1, 20, 1).repeat(256, 1, 1)  # value == time step
    spans = sample_spans(x, None, 8, 4, num_targets=3, max_offset=4, generator=torch.Generator().manual_seed(0))
    start = spans.context[:, 0, 0]
    assert torch.equal(spans.context[:, :, 0], start[:, None] + torch.arange(8))
    expected = start[:, None, None] + 8 + spans.offsets[:, :, None] + torch.arange(4)  # (B, K, L)
    assert torch.equal(spans.targets[..., 0], expected)
    assert int(spans.offsets.min()) == 0 and int(spans.offsets.max()) == 4
    assert bool((spans.targets.amax(dim=(1, 2, 3)) <= 19).all())


def test_variable_context_lengths_leave_room_for_every_span() -> None:
    lengths = torch.randint(8, 21, (128,))
    x = torch.arange(20, dtype=torch.float32).reshape(1, 20, 1).repeat(128, 1, 1)
    spans = sample_spans(x, lengths, 8, 2, 2, 3, min_context_len=3, generator=torch.Generator().manual_seed(1))
    assert spans.context_lengths is not None
    assert int(spans.context_lengths.min()) >= 3
    assert bool((spans.targets[..., -1, 0].amax(dim=1) < lengths).all()), "a span ran past its sequence"


def test_the_momentum_ramps_linearly_to_its_end() -> None:
    config = TrainConfig(momentum=0.996, momentum_end=1.0)
    assert momentum_at(config, 0, 100) == 0.996
    assert momentum_at(config, 50, 100) == pytest.approx(0.998)
    assert momentum_at(TrainConfig(), 50, 100) == 0.99


@pytest.mark.parametrize(
    "options",
    [
        {"encoder": "transformer", "pooling": "last_mean"},
        {"bidirectional": True, "pooling": "last_mean", "output_norm": "batch"},
        {"num_layers": 1, "pooling": "last_mean", "output_norm": "layer"},
        {"num_layers": 1, "pooling": "first_last_mean", "head_skip": True, "output_norm": "batch"},
        {"encoder": "transformer", "pooling": "first_last_mean", "head_skip": True},
        {"objective": "steps", "encoder": "conv", "num_layers": 3, "pooling": "max_mean"},
        {"objective": "steps", "encoder": "conv", "num_layers": 2, "pooling": "pyramid", "repr_dim": 10},
        {"objective": "steps", "encoder": "lstm", "num_layers": 1, "pooling": "mean"},
    ],
)
def test_every_encoder_embeds_a_sequence_the_same_alone_and_in_a_ragged_batch(options: dict) -> None:
    torch.manual_seed(0)
    model = JEPA(**{"input_dim": 3, "hidden_dim": 16, "repr_dim": 8, **options}).eval()
    sequences = random_sequences([2, 9, 5], dim=3)
    x, lengths = pad_sequences(sequences)
    with torch.no_grad():
        batched = model.encode(x, lengths)
        for i, seq in enumerate(sequences):
            torch.testing.assert_close(batched[i], model.encode(torch.from_numpy(seq)[None])[0], atol=1e-5, rtol=1e-4)


def test_the_trajectory_preset_trains_and_round_trips_exactly(tmp_path: Path) -> None:
    preset = PRESETS["trajectory"]
    model_config = ModelConfig(**{**preset.model.to_dict(), "hidden_dim": 16, "repr_dim": 8})
    train_config = TrainConfig(**{**preset.train.to_dict(), "epochs": 2, "context_len": 4, "target_len": 2, "seed": 0})
    result = fit(ToySequenceDataset(65, 12, "mixed", seed=0), model_config, train_config)  # 65: a last batch of 1
    assert result.model.config.input_std is not None  # statistics of the training data travel with it
    sha = save_checkpoint(result.model, tmp_path, train_config, "trajectory", "0")
    loaded = load_checkpoint(tmp_path, sha).model
    x = torch.randn(5, 7, 2)
    with torch.no_grad():
        assert torch.equal(result.model.encode(x), loaded.encode(x))
        offsets = torch.tensor([0, 1, 2, 3, 4])
        assert torch.equal(result.model.predict(x, offsets=offsets), loaded.predict(x, offsets=offsets))


def test_input_deltas_are_each_steps_displacement() -> None:
    x = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [3.0, 3.0]]])
    assert step_features(x, deltas=True).tolist() == [[[0, 0, 0, 0], [1, 2, 1, 2], [3, 3, 2, 1]]]
    assert torch.equal(step_features(x, deltas=False), x)


def test_first_step_pooling_changes_the_embedding_when_only_the_start_differs() -> None:
    # A 1-step difference at t=0 is all but forgotten by the last state; first-step pooling keeps it.
    torch.manual_seed(0)
    model = JEPA(input_dim=2, hidden_dim=16, repr_dim=8, num_layers=1, pooling="first_last_mean").eval()
    x = torch.zeros(2, 40, 2)
    x[1, 0] = 1.0
    with torch.no_grad():
        steps, _ = model.context_encoder.lstm(model.context_encoder.standardize(x))
        pooled_first = steps[:, 0]
        z = model.encode(x)
    assert not torch.allclose(pooled_first[0], pooled_first[1])
    assert not torch.allclose(z[0], z[1], atol=1e-4)


def test_the_ablation_steps_add_up_to_the_trajectory_preset() -> None:
    from bench.ablation import STEPS

    cumulative: dict = {}
    for _, change in STEPS:
        cumulative |= change
    model, train = PRESETS["seed"].model, PRESETS["seed"].train
    built = (
        ModelConfig(**{**model.to_dict(), **{k: v for k, v in cumulative.items() if k in model.to_dict()}}),
        TrainConfig(**{**train.to_dict(), **{k: v for k, v in cumulative.items() if k in train.to_dict()}}),
    )
    assert built == (PRESETS["trajectory"].model, PRESETS["trajectory"].train)
