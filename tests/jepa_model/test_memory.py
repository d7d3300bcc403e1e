"""The anomaly memory: built from training series, it finds what they never held."""

import numpy as np
import pytest
import torch

from jepa_model import JEPA, ModelConfig
from jepa_model import memory as memory_module
from jepa_model.checkpoint import load_checkpoint, save_checkpoint
from jepa_model.config import TrainConfig
from jepa_model.memory import (
    DEFAULT_WINDOW,
    MemoryScorer,
    build_memory,
    dominant_period,
    margin_steps,
    memory_scores,
    nearest_distance,
    step_features,
    window_means,
)


def step_model(memory_size: int = 256, seed: int = 0) -> JEPA:
    """A small untrained conv step model with pooled blocks, as the series preset is built."""
    torch.manual_seed(seed)
    config = ModelConfig(
        input_dim=1,
        objective="steps",
        encoder="conv",
        hidden_dim=8,
        num_layers=4,
        repr_dim=8 * 8 + 5 * 2 * 8,
        pooling="max_mean_ppv_lspv",
        pool_blocks=2,
        input_deltas=True,
        memory_size=memory_size,
    )
    return JEPA.from_config(config).eval()


def sine(length: int, period: int = 25, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return (np.sin(2 * np.pi * t / period) + 0.05 * rng.normal(size=length)).astype(np.float32)[:, None]


def test_the_window_is_the_dominant_period() -> None:
    assert dominant_period([sine(2000, period=25)]) == 25
    assert dominant_period([sine(300, period=40, seed=s) for s in range(3)]) == 40
    noise = np.random.default_rng(0).normal(size=(2000, 1))
    assert 4 <= dominant_period([noise]) <= 512  # no period: some lag within the bounds
    assert dominant_period([np.zeros((10, 1))]) == DEFAULT_WINDOW  # too short to tell


def test_window_means_and_nearest_distances() -> None:
    features = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    assert window_means(features, 3).tolist() == [[2, 3], [4, 5], [6, 7], [8, 9]]
    bank = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    queries = torch.tensor([[1.0, 0.0], [9.0, 0.0], [3.0, 4.0]])
    assert nearest_distance(queries, bank).tolist() == pytest.approx([1.0, 1.0, 5.0])


def test_a_long_series_is_read_in_chunks_with_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    model = step_model()
    build_memory(model.target_encoder, model.memory, [sine(2000)], seed=0)
    series = sine(900, seed=4)
    whole = step_features(model.target_encoder, series)
    scores = memory_scores(model.target_encoder, model.memory, series)
    # 4 blocks of kernel 3 see 61 steps, 30 each way; one more for the change from the step before.
    assert margin_steps(model.target_encoder) == 31
    monkeypatch.setattr(memory_module, "CHUNK_STEPS", 200)
    chunked = step_features(model.target_encoder, series)
    assert chunked.shape == whole.shape == (900, model.config.pool_dim)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step_features(model.target_encoder, series, 150, 420), whole[150:420])
    np.testing.assert_allclose(memory_scores(model.target_encoder, model.memory, series), scores, rtol=1e-4)
    # Slices of any size, run in any order (a server interleaves them with other requests' work).
    # Distances to near neighbours are differences of large squares, so a matrix product of another
    # shape rounds them differently: scores of normal steps (well under 1) move by up to ~0.003.
    for slice_steps in (1, 37, 256):
        scorer = MemoryScorer(model.target_encoder, model.memory, series, slice_steps)
        for start, end in reversed(scorer.slices):
            scorer.run(start, end)
        np.testing.assert_allclose(scorer.scores(), scores, rtol=1e-4, atol=0.01)


def test_the_memory_scores_what_training_never_held_above_all_else() -> None:
    model = step_model()
    assert not model.memory.built
    build_memory(model.target_encoder, model.memory, [sine(3000)], seed=0)
    memory = model.memory
    assert memory.built and int(memory.window) == 25
    assert (memory.scales > 0).all()  # steps, windows and the autoregression all speak
    assert (torch.diff(memory.calibration) >= 0).all()
    normal = memory_scores(model.target_encoder, memory, sine(1000, seed=1))
    assert normal.shape == (1000,) and not np.isnan(normal).any()
    for anomaly in ("spike", "flat", "fast"):
        x = sine(1000, seed=2)
        if anomaly == "spike":
            x[600] += 3.0
        elif anomaly == "flat":
            x[600:640] = x[600]
        else:
            x[600:640, 0] = np.sin(2 * np.pi * np.arange(40) / 6)
        scores = memory_scores(model.target_encoder, memory, x)
        assert 590 <= int(np.argmax(scores)) <= 650, anomaly
        assert scores.max() > 1.0 and scores.max() > np.percentile(normal, 99.9), anomaly


def test_too_little_data_leaves_the_memory_unbuilt() -> None:
    model = step_model()
    build_memory(model.target_encoder, model.memory, [sine(1)], seed=0)
    assert not model.memory.built


def test_the_memory_travels_in_the_checkpoint(tmp_path) -> None:
    model = step_model()
    build_memory(model.target_encoder, model.memory, [sine(2000)], seed=0)
    save_checkpoint(model, tmp_path, TrainConfig(), "series", "test")
    loaded = load_checkpoint(tmp_path).model
    x = sine(500, seed=3)
    np.testing.assert_array_equal(
        memory_scores(loaded.target_encoder, loaded.memory, x), memory_scores(model.target_encoder, model.memory, x)
    )


def test_only_step_models_remember() -> None:
    with pytest.raises(ValueError, match="memory_size needs a step model"):
        ModelConfig(memory_size=16)
    assert JEPA.from_config(ModelConfig()).memory is None


def test_parts_that_cannot_be_fitted_stay_off() -> None:
    model = step_model()
    # 300 steps: a window of 25 fits, and an autoregression reading 32 steps back has rows enough.
    build_memory(model.target_encoder, model.memory, [sine(300)], seed=0)
    assert (model.memory.scales > 0).all()
    wide = step_model()
    wide.memory.order = 200  # more unknowns than the 240 steps outside the held-out blocks
    build_memory(wide.target_encoder, wide.memory, [sine(300)], seed=0)
    assert wide.memory.built and float(wide.memory.scales[2]) == 0.0
    assert not np.isnan(memory_scores(wide.target_encoder, wide.memory, sine(100))).any()


def test_many_short_series_are_read_in_batches_as_one_would_read_each() -> None:
    model = step_model()
    short = [sine(60 + i % 7, seed=i) for i in range(300)]  # ragged: padded batches
    batched = dict(memory_module._segment_features(model.target_encoder, short))
    assert sorted(batched) == list(range(300))
    for k in (0, 5, 299):
        torch.testing.assert_close(batched[k], step_features(model.target_encoder, short[k]), atol=1e-5, rtol=1e-5)
    build_memory(model.target_encoder, model.memory, short, seed=0)
    assert model.memory.built and (model.memory.scales > 0).all()


def test_any_length_and_width_gets_a_finite_score_per_step() -> None:
    model = step_model()
    build_memory(model.target_encoder, model.memory, [sine(1000)], seed=0)
    for length in (1, 2, 24, 33):  # shorter than the window, and than the autoregression's order
        scores = memory_scores(model.target_encoder, model.memory, sine(length, seed=5))
        assert scores.shape == (length,) and np.isfinite(scores).all()
    flat = memory_scores(model.target_encoder, model.memory, np.zeros((200, 1), np.float32))
    assert np.isfinite(flat).all() and flat.max() > 1.0  # a dead sensor is far from this data
    assert memory_module.ar_order(1) == 32 and memory_module.ar_order(64) == 4


def test_ragged_series_shorter_than_the_window_build_and_score() -> None:
    model = step_model()
    ragged = [sine(int(n), period=10, seed=i) for i, n in enumerate(np.random.default_rng(0).integers(5, 40, 60))]
    build_memory(model.target_encoder, model.memory, ragged, seed=0)
    assert model.memory.built and int(model.memory.window) > min(len(x) for x in ragged)
    assert np.isfinite(memory_scores(model.target_encoder, model.memory, ragged[0])).all()
