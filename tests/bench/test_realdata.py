"""bench.realdata's pure pieces in a few seconds: loading, padding, the baselines, the table and the
targets, on tiny synthetic data (no training). Skipped without the bench extra (aeon, scikit-learn)."""

import numpy as np
import pytest

pytest.importorskip("aeon")
pytest.importorskip("sklearn")

from bench import realdata  # noqa: E402


def synthetic(n: int, length: int, dim: int, seed: int, ragged: bool = False) -> realdata.Split:
    """Two classes anyone can tell apart: sines and ramps, with a little noise."""
    rng = np.random.default_rng(seed)

    def make(count: int) -> tuple[list[np.ndarray], np.ndarray]:
        labels = np.arange(count) % 2
        sequences = []
        for label in labels:
            t = np.arange(length - (rng.integers(0, 5) if ragged else 0), dtype=np.float32)
            base = np.sin(t / 3) if label == 0 else t / length
            noise = rng.normal(0, 0.1, (len(t), dim))
            sequences.append((base[:, None] + noise).astype(np.float32))
        return sequences, labels

    (x_train, y_train), (x_test, y_test) = make(n), make(n)
    return realdata.Split("synthetic", x_train, y_train, x_test, y_test, ["sine", "ramp"])


def test_aeon_layouts_become_time_by_feature_sequences_and_labels_become_codes() -> None:
    equal = realdata.to_sequences(np.zeros((3, 2, 5)))  # (N, C, T)
    ragged = realdata.to_sequences([np.zeros((2, 5)), np.zeros((2, 7))])  # [(C, T_i)]
    assert [s.shape for s in equal] == [(5, 2)] * 3 and [s.shape for s in ragged] == [(5, 2), (7, 2)]
    assert all(s.dtype == np.float32 for s in equal + ragged)
    train, test, classes = realdata.encode_labels(np.array(["b", "a"]), np.array(["c", "a"]))
    assert classes == ["a", "b", "c"] and train.tolist() == [1, 0] and test.tolist() == [2, 0]


def test_bundled_data_is_read_from_the_wheel_and_nothing_else() -> None:
    split = realdata.load_bundled("ItalyPowerDemand")
    assert split.label() == "ItalyPowerDemand (67, 1029, 24, 1)" and len(split.classes) == 2
    with pytest.raises(ValueError, match="not bundled"):
        realdata.load_bundled("NoSuchDataset")


def test_ragged_series_are_padded_with_their_last_value() -> None:
    padded = realdata.pad_edge([np.array([[1.0], [2.0]]), np.array([[3.0], [4.0], [5.0]])], 4)
    assert padded[:, :, 0].tolist() == [[1, 2, 2, 2], [3, 4, 5, 5]]


def test_baselines_separate_easy_classes() -> None:
    split = synthetic(20, 30, 2, seed=0, ragged=True)
    assert split.ragged and split.dim == 2
    assert realdata.raw_ridge(split) >= 0.9
    assert realdata.one_nn(split) >= 0.9
    accuracy, seconds = realdata.minirocket(split, seed=0, n_kernels=840)
    assert accuracy >= 0.9 and seconds > 0


def test_overrides_are_read_as_json_where_they_parse() -> None:
    assert realdata.parse_overrides(["epochs=2", "encoder=lstm", "lr=0.5"]) == {
        "epochs": 2,
        "encoder": "lstm",
        "lr": 0.5,
    }
    with pytest.raises(SystemExit):
        realdata.parse_overrides(["seed=3"])


def result(name: str, classes: int, ours: list[float] | None, minirocket: float = 0.9) -> dict:
    runs = (
        [{"seed": 0, "status": "refused", "error": "job refused: too short"}]
        if ours is None
        else [
            {"seed": s, "status": "ok", "accuracy": a, "train_s": 10.0, "encode_seq_s": 5000.0, "encode_ms_t1000": 1.5}
            for s, a in enumerate(ours)
        ]
    )
    seeds = range(len(runs))
    return {
        "name": name,
        "label": f"{name} (10, 10, 24, 1)",
        "classes": classes,
        "ragged": False,
        "raw_ridge": 0.7,
        "one_nn": 0.75,
        "minirocket": [{"seed": s, "accuracy": minirocket, "seconds": 1.0} for s in seeds],
        "runs": runs,
    }


def test_table_and_targets() -> None:
    text, holds = realdata.render([result("A", 2, [0.9, 0.92]), result("B", 4, [0.88, 0.86])])
    assert text.startswith("| dataset (N train, N test, T, D) | raw+ridge | 1-NN | MiniRocket | ours |")
    assert "| A (10, 10, 24, 1) | 0.70 | 0.75 | 0.90 | 0.91±0.01 |" in text
    assert "**mean over 2 of 2 datasets**" in text
    assert holds == {"a": True, "b": True, "c": True, "d": True}

    text, holds = realdata.render([result("A", 2, [0.52]), result("B", 4, None)])
    assert "| refused |" in text and "B seed 0 refused" in text and "at chance: A" in text
    assert holds == {"a": False, "b": False, "c": False, "d": True}
