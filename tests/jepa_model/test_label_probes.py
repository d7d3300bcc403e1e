import numpy as np

from jepa_model.label_probes import (
    fit_ridge_classifier,
    knn_accuracy,
    label_metrics,
    linear_probe_accuracy,
    majority_accuracy,
    nearest_neighbours,
    predict_ridge_classifier,
    standardize,
)


def clusters(n_per_class: int, classes: int, dim: int = 8, spread: float = 0.1, seed: int = 0):  # type: ignore[no-untyped-def]
    """(features (C * n, dim), codes (C * n,)): tight clusters around far-apart centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(classes, dim))
    codes = np.repeat(np.arange(classes), n_per_class)
    return centres[codes] + rng.normal(scale=spread, size=(len(codes), dim)), codes


def test_separable_clusters_are_classified_perfectly() -> None:
    train, train_codes = clusters(30, 4, seed=0)
    test, test_codes = clusters(10, 4, seed=0)  # the same centres, fresh noise
    test += np.random.default_rng(1).normal(scale=0.1, size=test.shape)
    assert linear_probe_accuracy(train, train_codes, test, test_codes) == 1.0
    assert knn_accuracy(train, train_codes, test, test_codes) == 1.0
    metrics = label_metrics(train, train_codes, test, test_codes, num_classes=4)
    assert metrics == {"label_probe_accuracy": 1.0, "label_knn_accuracy": 1.0, "label_majority_accuracy": 0.25}


def test_random_labels_score_about_chance() -> None:
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16))
    train_codes, test_codes = rng.integers(0, 4, 2000), rng.integers(0, 4, 2000)
    assert abs(linear_probe_accuracy(train, train_codes, test, test_codes, num_classes=4) - 0.25) < 0.05
    assert abs(knn_accuracy(train, train_codes, test, test_codes) - 0.25) < 0.05


def test_a_probe_needs_the_labels_to_be_linear_and_1nn_does_not() -> None:
    rng = np.random.default_rng(0)
    # Class 1 is a ring around class 0: no line separates them, but neighbours share a class.
    angles = rng.uniform(0, 2 * np.pi, 600)
    radius = np.where(np.arange(600) % 2 == 0, 1.0, 3.0)
    points = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
    codes = (radius > 2).astype(np.int64)
    train, test = points[:400], points[400:]
    assert knn_accuracy(train, codes[:400], test, codes[400:]) == 1.0
    assert linear_probe_accuracy(train, codes[:400], test, codes[400:]) < 0.75


def test_the_pieces_have_the_documented_shapes() -> None:
    rng = np.random.default_rng(0)
    train, test = rng.normal(3.0, 2.0, size=(50, 5)), rng.normal(size=(7, 5))
    a, b = standardize(train, test)
    assert a.shape == (50, 5) and b.shape == (7, 5)
    np.testing.assert_allclose(a.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(a.std(0), 1, atol=1e-6)
    codes = rng.integers(0, 3, 50)
    weights = fit_ridge_classifier(a, codes, num_classes=3)
    assert weights.shape == (6, 3)
    assert predict_ridge_classifier(weights, b).shape == (7,)
    nearest = nearest_neighbours(train, np.vstack([train[4], train[9]]), block=1)
    assert nearest.tolist() == [4, 9]
    assert nearest_neighbours(train, np.zeros((0, 5))).shape == (0,)


def test_a_constant_dimension_and_a_missing_class_do_not_break_the_probe() -> None:
    train, codes = clusters(20, 3, dim=4)
    train[:, 0] = 7.0  # a collapsed embedding dimension
    test = train[::5].copy()
    accuracy = linear_probe_accuracy(train, codes, test, codes[::5], num_classes=5)  # classes 3 and 4 never seen
    assert accuracy == 1.0


def test_the_majority_baseline_answers_the_commonest_training_class() -> None:
    assert majority_accuracy(np.array([2, 2, 1]), np.array([2, 1, 1, 0])) == 0.25
