"""bench.realdata: its pure pieces on tiny synthetic data (loading, padding, the baselines and aeon
peers, the table, the group means and the targets), and `--smoke` end to end in a subprocess.
Skipped without the bench extra (aeon, scikit-learn)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.extras import require

require("aeon", "sklearn", extra="bench")

from bench import peers, realdata, ucr  # noqa: E402


def synthetic(n: int, length: int, dim: int, seed: int, ragged: bool = False) -> ucr.Split:
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
    return ucr.Split("synthetic", x_train, y_train, x_test, y_test, ["sine", "ramp"])


def test_aeon_layouts_become_time_by_feature_sequences_and_labels_become_codes() -> None:
    equal = ucr.to_sequences(np.zeros((3, 2, 5)))  # (N, C, T)
    ragged = ucr.to_sequences([np.zeros((2, 5)), np.zeros((2, 7))])  # [(C, T_i)]
    assert [s.shape for s in equal] == [(5, 2)] * 3 and [s.shape for s in ragged] == [(5, 2), (7, 2)]
    assert all(s.dtype == np.float32 for s in equal + ragged)
    train, test, classes = ucr.encode_labels(np.array(["b", "a"]), np.array(["c", "a"]))
    assert classes == ["a", "b", "c"] and train.tolist() == [1, 0] and test.tolist() == [2, 0]


def test_bundled_data_is_read_from_the_wheel_and_nothing_else() -> None:
    split = ucr.load_bundled("ItalyPowerDemand")
    assert split.label() == "ItalyPowerDemand (67, 1029, 24, 1)" and len(split.classes) == 2
    with pytest.raises(ValueError, match="not bundled"):
        ucr.load_bundled("NoSuchDataset")
    assert set(realdata.DEFAULT_DATASETS) <= set(realdata.bundled_names())


def test_datasets_fall_in_their_groups() -> None:
    named, unseen = realdata.GROUPS["named"], realdata.GROUPS["unseen"]
    assert len(named) == 5 and len(unseen) == 3 and [*named, *unseen] == realdata.DEFAULT_DATASETS
    assert realdata.group_of("GunPoint") == "named" and realdata.group_of("ACSF1") == "unseen"
    assert realdata.group_of("Beef") == "other"


def test_ragged_series_are_padded_with_their_last_value() -> None:
    padded = ucr.pad_edge([np.array([[1.0], [2.0]]), np.array([[3.0], [4.0], [5.0]])], 4)
    assert padded[:, :, 0].tolist() == [[1, 2, 2, 2], [3, 4, 5, 5]]


def test_baselines_separate_easy_classes() -> None:
    split = synthetic(20, 30, 2, seed=0, ragged=True)
    assert split.ragged and split.dim == 2
    assert ucr.raw_ridge(split) >= 0.9
    assert ucr.one_nn(split) >= 0.9


def test_every_peer_separates_easy_classes_and_leaves_torch_threads_alone() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # not the peers' n_jobs (1), so that a count they leave behind shows
    try:
        for dim, ragged in ((1, False), (2, True)):
            runs = peers.run_peers(synthetic(20, 30, dim, seed=0, ragged=ragged), 0, peers.SMOKE_SIZES, 1, True)
            assert set(runs) == set(realdata.PEERS)
            for peer, run in runs.items():
                assert run["accuracy"] >= 0.9 and run["seconds"] > 0 and run["seed"] == 0, peer
        # Hydra's fit sets the process's torch threads to its n_jobs; training would inherit it.
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_peers_take_series_shorter_than_their_kernels_padded() -> None:
    split = synthetic(12, 7, 1, seed=1, ragged=True)  # 3 to 7 steps; MiniRocket and MultiRocket need 9
    train, test = peers.peer_input(split)
    assert train.shape == (12, 1, peers.MIN_PEER_LEN) and test.shape == (12, 1, peers.MIN_PEER_LEN)
    runs = peers.run_peers(split, 0, peers.SMOKE_SIZES, 1, strict=True)
    assert all("accuracy" in run for run in runs.values())


def test_a_failed_peer_is_recorded_unless_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> ucr.Features:
        raise RuntimeError("kernels on fire")

    monkeypatch.setitem(peers.TRANSFORMS, "hydra", broken)
    split = synthetic(10, 20, 1, seed=0)
    runs = peers.run_peers(split, 3, peers.SMOKE_SIZES, 1, strict=False)
    assert runs["hydra"] == {"seed": 3, "error": "RuntimeError: kernels on fire"}
    assert "error" in runs["hydra_multirocket"] and "accuracy" in runs["multirocket"]
    with pytest.raises(RuntimeError, match="on fire"):
        peers.run_peers(split, 3, peers.SMOKE_SIZES, 1, strict=True)


def test_encode_requests_stay_within_the_servers_limits() -> None:
    equal = [np.zeros((10, 2), np.float32)] * 7
    chunks = list(realdata.client_requests(equal, max_batch=3, max_points=1000))
    assert [c.shape for c in chunks] == [(3, 10, 2), (3, 10, 2), (1, 10, 2)]  # arrays, as an equal-length body
    ragged = [np.zeros((n, 1), np.float32) for n in (5, 5, 8, 2)]
    chunks = list(realdata.client_requests(ragged, max_batch=10, max_points=12))
    assert [[len(s) for s in c] for c in chunks] == [[5, 5], [8, 2]]
    assert [len(c) for c in realdata.client_requests([np.zeros((50, 1))], 10, 12)] == [1]  # alone, if too long


def test_overrides_are_read_as_json_where_they_parse() -> None:
    assert realdata.parse_overrides(["epochs=2", "encoder=lstm", "lr=0.5"]) == {
        "epochs": 2,
        "encoder": "lstm",
        "lr": 0.5,
    }
    with pytest.raises(SystemExit):
        realdata.parse_overrides(["seed=3"])


def test_arguments_choose_the_datasets() -> None:
    def chosen(*argv: str) -> list[str]:
        return realdata.chosen_datasets(realdata.parse_args(list(argv)))

    assert chosen() == realdata.DEFAULT_DATASETS
    assert chosen("--smoke") == chosen("--quick") == [realdata.SMOKE_DATASET]
    assert chosen("--group", "unseen") == chosen("--unseen") == realdata.GROUPS["unseen"]
    assert chosen("--datasets", "Beef, GunPoint") == ["Beef", "GunPoint"]


# -- the report, on made-up results ---------------------------------------------------------------


def result(
    name: str,
    classes: int,
    ours: list[float] | None,
    minirocket: float = 0.9,
    group: str = "named",
    train_s: float = 10.0,
    encode_ms: float = 1.5,
) -> dict:
    runs = (
        [{"seed": 0, "status": "refused", "error": "job refused: too short"}]
        if ours is None
        else [
            {"seed": s, "status": "ok", "accuracy": a, "train_s": train_s, "encode_ms_t1000": encode_ms}
            for s, a in enumerate(ours)
        ]
    )
    seeds = range(len(runs))
    peers = {"minirocket": minirocket, "multirocket": 0.92, "hydra": 0.91, "hydra_multirocket": 0.94}
    return {
        "name": name,
        "group": group,
        "label": f"{name} (10, 10, 24, 1)",
        "lengths": [24, 24],
        "peer_length": 24,
        "classes": classes,
        "ragged": False,
        "raw_ridge": 0.7,
        "one_nn": 0.75,
        "peers": {peer: [{"seed": s, "accuracy": acc, "seconds": 1.0} for s in seeds] for peer, acc in peers.items()},
        "runs": runs,
    }


def holds(targets: dict[str, realdata.Target]) -> dict[str, bool]:
    return {key: target.holds for key, target in targets.items()}


def test_table_has_a_row_per_set_and_mean_rows_per_group() -> None:
    results = [
        result("A", 2, [0.9, 0.92]),
        result("B", 4, [0.88, 0.86]),
        result("C", 3, [0.96, 0.96], group="unseen"),
        result("D", 2, [0.8, 0.8], minirocket=0.8, group="other"),
    ]
    text, targets = realdata.render(results)
    assert text.startswith(
        "| dataset (N train, N test, T, D) | raw+ridge | 1-NN | MiniRocket | MultiRocket | Hydra | Hydra+MultiRocket "
        "| ours | ours/MiniRocket | ours/MultiRocket | ours/Hydra+MR | train s | encode ms/seq at T=1000 |"
    )
    # ratios per seed, then summarised: 0.9/0.9 and 0.92/0.9
    assert "| A (10, 10, 24, 1) | 0.70 | 0.75 | 0.90 | 0.92 | 0.91 | 0.94 | 0.91±0.01 | 1.01±0.01 |" in text
    assert "| **mean, named (2 sets)** | 0.70 | 0.75 | 0.90 | 0.92 | 0.91 | 0.94 | 0.89 | 0.99 | 0.97 |" in text
    assert "| **mean, unseen (1 set)** | 0.70 | 0.75 | 0.90 | 0.92 | 0.91 | 0.94 | 0.96 | 1.07 |" in text
    assert "| **mean, other (1 set)** | 0.70 | 0.75 | 0.80 |" in text
    assert "| **mean, all (4 sets)** | 0.70 | 0.75 | 0.88 | 0.92 | 0.91 | 0.94 | 0.89 |" in text
    lines = text.splitlines()
    assert lines.index(next(line for line in lines if "mean, named" in line)) < lines.index(
        next(line for line in lines if "mean, all" in line)
    )
    # (a): all 0.8875 >= 0.875; named 0.89 >= 0.97 x 0.9; unseen 0.96 >= 0.97 x 0.9; "other" has no group target
    assert holds(targets) == {"a": True, "b": True, "c": True, "d": True, "e": True, "f": False}
    assert set(targets["a"].values) == {"all", "named", "unseen"}
    assert not targets["f"].required and "reported, not required" in targets["f"].line()


def test_a_group_below_its_share_of_minirocket_fails_a() -> None:
    # over all: (0.99 + 0.85) / 2 = 0.92 >= 0.9; unseen alone: 0.85 < 0.97 x 0.9 = 0.873
    text, targets = realdata.render([result("A", 2, [0.99]), result("C", 2, [0.85], group="unseen")])
    assert not targets["a"].holds and "unseen (1 set): 0.850 vs 0.97 x 0.900 = 0.873" in text
    assert "(a) mean accuracy of ours >= 1.0 x MiniRocket's" in text and "DOES NOT HOLD" in text


def test_refusals_chance_and_slow_runs_fail_their_targets() -> None:
    text, targets = realdata.render([result("A", 2, [0.52]), result("B", 4, None)])
    assert "| refused |" in text and "B seed 0 refused" in text and "at chance: A" in text
    assert "mean, named (1 of 2 sets)" in text
    assert holds(targets) == {"a": False, "b": False, "c": False, "d": False, "e": False, "f": False}

    slow = realdata.render([result("A", 2, [0.95], train_s=200.0), result("B", 2, [0.95], encode_ms=20.0)])[1]
    assert holds(slow) | {"f": True} == {"a": True, "b": True, "c": True, "d": False, "e": False, "f": True}
    mean_slow = realdata.render([result("A", 2, [0.95], train_s=100.0), result("B", 2, [0.95], train_s=95.0)])[1]
    assert not mean_slow["d"].holds and mean_slow["d"].values["mean_s"] == pytest.approx(97.5)


def test_a_failed_peer_shows_in_the_table_the_targets_and_the_exit_code() -> None:
    broken = result("A", 2, [0.95])
    broken["peers"]["hydra"] = [{"seed": 0, "error": "RuntimeError: no"}]
    text, targets = realdata.render([broken])
    assert "| failed |" in text and "Hydra seed 0 failed" in text and not targets["c"].holds
    assert "mean, named (0 of 1 set)" in text
    assert realdata.failures([broken]) == ["A Hydra seed 0"]
    assert realdata.failures([result("B", 2, None)]) == []  # a refusal is the product's answer, not a crash


# -- end to end ---------------------------------------------------------------------------------------


def test_smoke_runs_every_path_and_prints_a_full_row() -> None:
    """Trains through the product's job path, embeds through the /encode engine, runs every peer."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.realdata", "--smoke"], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    row = next(line for line in lines if line.startswith("| ItalyPowerDemand ("))
    cells = dict(zip(header, (cell.strip() for cell in row.strip("|").split("|")), strict=True))
    for column in [*realdata.PEERS.values(), "raw+ridge", "1-NN", "ours", *realdata.RATIOS.values()]:
        assert 0 < float(cells[column].split("±")[0]) < 2, (column, cells[column])
    assert float(cells["train s"]) > 0 and float(cells["encode ms/seq at T=1000"]) > 0
    assert "**mean, all (1 set)**" in done.stdout
    assert all(f"({key}) " in done.stdout for key in "abcdef")
