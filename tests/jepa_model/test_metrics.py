import numpy as np
import pytest
import torch

from jepa_model import ToySequenceDataset
from jepa_model.metrics import (
    EpochMonitor,
    evaluate,
    held_out_windows,
    normalized_std,
    probe_r2,
    rankme,
    retrieval_top1,
)
from tests.factories import tiny_model

rng = np.random.default_rng(0)


def test_retrieval_is_perfect_for_exact_matches_and_chance_for_noise() -> None:
    keys = rng.normal(size=(512, 16))
    assert retrieval_top1(keys, keys) == 1.0
    assert retrieval_top1(keys, keys, "l2") == 1.0
    assert retrieval_top1(rng.normal(size=(512, 16)), keys) < 0.03  # chance is 1/256


def test_retrieval_is_scored_within_blocks_of_256() -> None:
    keys = rng.normal(size=(512, 4))
    queries = keys.copy()
    queries[256:] = queries[256:][::-1]  # the second block's queries all point at wrong keys
    assert retrieval_top1(queries, keys) == pytest.approx(0.5)


def test_rankme_counts_the_dimensions_that_carry_variance() -> None:
    assert rankme(rng.normal(size=(2000, 8))) == pytest.approx(8, rel=0.05)
    rank_one = rng.normal(size=(2000, 1)) * rng.normal(size=(1, 8))
    assert rankme(rank_one) < 1.1


def test_normalized_std_is_zero_for_a_constant_embedding() -> None:
    assert normalized_std(np.ones((100, 8))) == pytest.approx(0.0, abs=1e-9)
    assert normalized_std(rng.normal(size=(1000, 16))) == pytest.approx(1 / np.sqrt(16), rel=0.1)


def test_probes_recover_linear_targets_and_not_noise() -> None:
    features = rng.normal(size=(800, 10))
    linear = features @ rng.normal(size=(10, 2))
    assert probe_r2(features, linear).min() > 0.99
    assert probe_r2(features, rng.normal(size=(800, 1)))[0] < 0.05


def test_the_oracle_is_perfect_without_noise_and_not_with_it() -> None:
    clean = ToySequenceDataset(512, 20, "circle", noise=0.0, seed=0)
    noisy = ToySequenceDataset(512, 20, "circle", noise=0.5, seed=0)
    for dataset, expect_perfect in ((clean, True), (noisy, False)):
        w = held_out_windows(dataset, 8, 4)
        n = len(w.target)
        oracle = retrieval_top1(w.clean_target.reshape(n, -1), w.target.reshape(n, -1).numpy(), "l2")
        assert (oracle == 1.0) is expect_perfect


def test_held_out_windows_keep_noisy_and_clean_targets_aligned() -> None:
    dataset = ToySequenceDataset(64, 20, "linear", noise=0.0, seed=1)
    w = held_out_windows(dataset, 8, 4)
    np.testing.assert_allclose(w.target.numpy(), w.clean_target, atol=1e-6)


def test_evaluate_reports_every_metric_for_mixed_data() -> None:
    metrics = evaluate(tiny_model(), ToySequenceDataset(300, 20, "mixed", seed=2), 8, 4)
    expected = {
        "cosine", "retrieval", "oracle_retrieval", "retrieval_ratio", "embedding_oracle_retrieval", "rankme",
        "embedding_std", "retrieval_circle", "retrieval_linear",
        "probe_radius_r2", "probe_centre_r2", "probe_start_r2", "probe_velocity_r2", "probe_speed_r2",
        "probe_kind_acc",
    }  # fmt: skip
    assert set(metrics) == expected
    assert all(np.isfinite(v) for v in metrics.values())


def test_the_epoch_monitor_leaves_the_model_unchanged() -> None:
    model = tiny_model()
    before = [p.clone() for p in model.parameters()]
    metrics = EpochMonitor(ToySequenceDataset(300, 20, "mixed", seed=2), 8, 4)(model)
    assert set(metrics) == {"retrieval", "embedding_std", "rankme"}
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
