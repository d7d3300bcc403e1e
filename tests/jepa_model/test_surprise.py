import numpy as np
import pytest
import torch

from jepa_model import JEPA, ModelConfig
from jepa_model.surprise import (
    CALIBRATION_POINTS,
    calibrate,
    percentile_of,
    series_surprise,
    step_scores,
    surprise,
    top_segments,
    window_starts,
    window_surprise,
    windows,
)


def test_windows_start_every_stride_and_the_last_one_reaches_the_tail() -> None:
    assert window_starts(20, 8, 4, 3).tolist() == [0, 3, 6, 8]
    assert window_starts(12, 8, 4, 5).tolist() == [0]
    assert window_starts(11, 8, 4, 1).tolist() == []
    series = np.arange(20, dtype=np.float32)[:, None]  # (T, 1)
    contexts, targets = windows(series, np.array([0, 8]), 8, 4)
    assert contexts.shape == (2, 8, 1) and targets.shape == (2, 4, 1)
    assert targets[1, :, 0].tolist() == [16, 17, 18, 19] and contexts[1, -1, 0] == 15


def test_a_step_scores_the_most_surprising_window_whose_target_covers_it() -> None:
    scores = step_scores(np.array([0.1, 0.9, 0.2]), np.array([0, 1, 2]), length=8, context_len=3, target_len=2)
    assert np.isnan(scores[:3]).all()  # the warm-up: no target covers them
    assert scores[3:7].tolist() == pytest.approx([0.1, 0.9, 0.9, 0.2]) and np.isnan(scores[7])
    assert surprise(np.array([[1.0, 0.0]]), np.array([[-2.0, 0.0]])).tolist() == pytest.approx([2.0])


def test_calibration_ranks_scores_from_0_to_100() -> None:
    calibration = calibrate(np.linspace(0, 1, 1001))
    assert len(calibration) == CALIBRATION_POINTS
    ranked = percentile_of(np.array([0.0, 0.5, 0.99, 5.0, np.nan]), calibration)
    assert ranked[:4].tolist() == pytest.approx([0, 50, 99, 100]) and np.isnan(ranked[4])


def test_segments_are_runs_above_the_threshold_ranked_by_peak() -> None:
    scores = np.array([np.nan, 0.1, 0.8, 0.9, 0.1, 0.1, 0.95, 0.1])
    assert top_segments(scores, 0.5, 3) == [(6, 7, 6, 0.95), (2, 4, 3, 0.9)]
    assert top_segments(scores, 0.5, 1) == [(6, 7, 6, 0.95)]
    assert top_segments(scores, 2.0, 3) == [(6, 7, 6, 0.95)]  # none above: the peak alone
    assert top_segments(np.full(3, np.nan), 0.5, 3) == []


def test_window_surprise_is_one_minus_the_cosine_of_predict_and_encode() -> None:
    torch.manual_seed(0)
    model = JEPA.from_config(ModelConfig(hidden_dim=8, repr_dim=4)).eval()
    series = np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32)
    scores = window_surprise(model, series, 8, 4, stride=5, batch=2)
    starts = window_starts(30, 8, 4, 5)
    contexts, targets = windows(series, starts, 8, 4)
    with torch.no_grad():
        expected = surprise(
            model.predict(torch.from_numpy(contexts)).numpy(), model.encode(torch.from_numpy(targets)).numpy()
        )
    assert scores.shape == (len(starts),) and scores == pytest.approx(expected, abs=1e-6)


def test_a_series_step_scores_are_its_windows_maxima() -> None:
    torch.manual_seed(0)
    model = JEPA.from_config(ModelConfig(hidden_dim=8, repr_dim=4)).eval()
    series = np.random.default_rng(1).normal(size=(25, 2)).astype(np.float32)
    steps = series_surprise(model, series, 8, 4, stride=2)
    starts = window_starts(25, 8, 4, 2)
    expected = step_scores(window_surprise(model, series, 8, 4, stride=2), starts, 25, 8, 4)
    np.testing.assert_array_equal(steps, expected)
    assert np.isnan(steps[:8]).all() and np.isfinite(steps[8:]).all()
