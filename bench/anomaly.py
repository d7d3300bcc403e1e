"""Surprise scores (POST /score) as an anomaly detector, against two baselines from the same run.

    python -m bench.anomaly [--seeds 0,1,2] [--datasets internal_bleeding,yahoo,toy]

Data that ships inside packages, nothing downloaded (pip install -e '.[bench]' for the first two;
the toy set needs nothing more than the service):
- InternalBleeding16, the UCR anomaly archive's series 135, inside the `aeon` wheel: the first
  1,200 points are normal and train; the whole series is scored, one labelled anomaly after them.
- Yahoo, the labelled series inside the `sktime` wheel (1,000 points, 7 anomalous): the first 400
  points (normal) train, the rest is scored.
- Toy 2-D trajectories (the seed's circles and lines): 512 normal paths train, and 30 held-out
  paths are scored, each with one injected anomaly, a sudden turn, a speed jump or a frozen
  sensor, 10 in each kind.

A model is trained per dataset and seed as POST /train would, on the training part (cut into
overlapping chunks of 128 steps for a long series), once with an empty config (what "default"
picks) and once with the recipe that scored best here (RECIPES). Each step's score is what
/score computes (jepa_model.surprise, stride 1, the version's windows). The baselines score each
step by the one-step prediction error of a linear autoregression (of orders 8 and 32) fitted on
the training part, and by the z-score of the step's difference against the training part's.

Metrics over the scored steps: top-1, whether the highest-scoring step falls in the labelled
anomaly (the UCR archive's rule: within 100 points of it; 10 for the 64-step toy paths, as the
share of paths hit); AUC-PR (average precision) and the best F1 over thresholds. Prints one
markdown table, mean over seeds (± half the range where they differ).
"""

from __future__ import annotations

import argparse
import importlib.resources
import statistics
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from jepa_model import ToySequenceDataset, fit, resolve_configs
from jepa_model.config import derive_windows
from jepa_model.data import SequenceDataset
from jepa_model.jepa import JEPA
from jepa_model.surprise import series_surprise

CHUNK = 128  # a long training series is cut into chunks of this many steps ...
CHUNK_STRIDE = 4  # ... starting this many steps apart
TOY_LEN, TOY_TRAIN, TOY_TEST, TOY_ANOMALY = 64, 512, 30, 8
# The baseline autoregressions' orders: the presets' context_len, and the default's windows on a
# long series (32): the longer one is the stronger baseline on Yahoo.
AR_ORDERS = (8, 32)
# What a model is trained with: what POST /train does with an empty config, and the recipe that
# scored best on these three datasets (tuned on them: both are reported): the trajectory preset
# with short windows, 8 steps of context and 2 of target.
RECIPES = {
    "default": ("default", {}),
    "trajectory": ("trajectory", {"context_len": 8, "target_len": 2}),
}


@dataclass
class Case:
    """Series to score (T_i, D), their anomaly labels (T_i,), where scoring starts in each, the
    training series, and how near the labelled anomaly top-1 must land."""

    train: list[np.ndarray]
    series: list[np.ndarray]
    labels: list[np.ndarray]
    scored_from: list[int]
    tolerance: int


def internal_bleeding() -> Case:
    from aeon.datasets import load_kdd_tsad_135

    x, y = load_kdd_tsad_135("test")  # the whole series; its first 1,200 points are the train split
    train_len = len(load_kdd_tsad_135("train")[0])
    series = x.astype(np.float32)[:, None]
    return Case([series[:train_len]], [series], [y.astype(bool)], [train_len], tolerance=100)


def yahoo() -> Case:
    path = importlib.resources.files("sktime") / "datasets" / "data" / "yahoo" / "yahoo.csv"
    table = np.loadtxt(str(path), delimiter=",", skiprows=1)
    series, labels, train_len = table[:, :1].astype(np.float32), table[:, 1].astype(bool), 400
    assert not labels[:train_len].any(), "the training part must be normal"
    return Case([series[:train_len]], [series], [labels], [train_len], tolerance=100)


def inject(path: np.ndarray, kind: int, at: int) -> np.ndarray:
    """A copy of a (T, 2) path with an anomaly over steps at .. at + TOY_ANOMALY."""
    x, end = path.copy(), at + TOY_ANOMALY
    steps = np.diff(path, axis=0)  # (T - 1, 2)
    if kind == 0:  # a sudden turn: from `at` on, every step is turned by 90 degrees
        turned = steps[at - 1 :] @ np.array([[0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
        x[at:] = x[at - 1] + np.cumsum(turned, axis=0)
    elif kind == 1:  # a speed jump: 4x the steps for a while, the rest of the path shifted on
        fast = steps.copy()
        fast[at - 1 : end - 1] *= 4
        x[1:] = x[0] + np.cumsum(fast, axis=0)
    else:  # a frozen sensor: the last reading repeated
        x[at:end] = x[at - 1]
    return x


def toy(seed: int) -> Case:
    train = ToySequenceDataset(TOY_TRAIN, TOY_LEN, "mixed", 0.1, seed).data.numpy()
    held_out = ToySequenceDataset(TOY_TEST, TOY_LEN, "mixed", 0.1, seed + 1_000_003).data.numpy()
    rng = np.random.default_rng(seed)
    series, labels = [], []
    for i, path in enumerate(held_out):
        at = int(rng.integers(TOY_LEN // 3, TOY_LEN - TOY_ANOMALY - 4))
        series.append(inject(path, i % 3, at))
        label = np.zeros(TOY_LEN, dtype=bool)
        label[at : at + TOY_ANOMALY] = True
        labels.append(label)
    return Case(list(train), series, labels, [0] * len(series), tolerance=10)


CASES = {"internal_bleeding": lambda seed: internal_bleeding(), "yahoo": lambda seed: yahoo(), "toy": toy}


def chunks(series: np.ndarray) -> list[np.ndarray]:
    if len(series) <= CHUNK:
        return [series]
    return [series[s : s + CHUNK] for s in range(0, len(series) - CHUNK + 1, CHUNK_STRIDE)]


def train_model(case: Case, seed: int, preset: str, overrides: dict) -> tuple[JEPA, int, int]:
    """The model POST /train would make of the training part with `preset` and `overrides`: windows
    not given are derived from the shortest sequence; returns it with its (context_len, target_len)."""
    sequences = [c for s in case.train for c in chunks(s)]
    width, shortest = sequences[0].shape[1], min(len(s) for s in sequences)
    data = (width, max(len(s) for s in sequences))
    model_config, train_config = resolve_configs(preset, {"seed": seed, **overrides}, data)
    fixed = frozenset(name for name in ("context_len", "target_len") if name in overrides)
    context_len, target_len = derive_windows(shortest, train_config.context_len, train_config.target_len, fixed)
    train_config = replace(train_config, context_len=context_len, target_len=target_len)
    model_config = replace(model_config, input_dim=width)
    return fit(SequenceDataset(sequences), model_config, train_config).model, context_len, target_len


def ar_scores(train: list[np.ndarray], series: np.ndarray, order: int) -> np.ndarray:
    """|x_t - x^_t| of a least-squares linear autoregression of `order` fitted on `train`."""

    def lagged(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.stack([x[i : len(x) - order + i] for i in range(order)], axis=1)  # (T - p, p, D)
        return np.concatenate([rows.reshape(len(rows), -1), np.ones((len(rows), 1))], axis=1), x[order:]

    inputs, outputs = zip(*(lagged(x) for x in train if len(x) > order), strict=True)
    weights, *_ = np.linalg.lstsq(np.concatenate(inputs), np.concatenate(outputs), rcond=None)
    rows, actual = lagged(series)
    out = np.full(len(series), np.nan)
    out[order:] = np.linalg.norm(rows @ weights - actual, axis=1)
    return out


def diff_z_scores(train: list[np.ndarray], series: np.ndarray) -> np.ndarray:
    """|diff(x)_t - mean| / std, against the training part's differences, over features."""
    diffs = np.concatenate([np.diff(x, axis=0) for x in train])
    mean, std = diffs.mean(0), diffs.std(0) + 1e-8
    out = np.full(len(series), np.nan)
    out[1:] = np.linalg.norm((np.diff(series, axis=0) - mean) / std, axis=1)
    return out


def measure(case: Case, scores: list[np.ndarray]) -> dict[str, float]:
    hits, flat_scores, flat_labels = [], [], []
    for s, labels, start in zip(scores, case.labels, case.scored_from, strict=True):
        s, labels = s[start:], labels[start:]
        s = np.where(np.isnan(s), np.nanmin(s), s)  # the warm-up ranks lowest
        anomalous = np.flatnonzero(labels)
        top = int(np.argmax(s))
        hits.append(anomalous[0] - case.tolerance <= top <= anomalous[-1] + case.tolerance)
        flat_scores.append(s)
        flat_labels.append(labels)
    precision, recall = precision_recall(np.concatenate(flat_labels), np.concatenate(flat_scores))
    auc_pr = np.sum(np.diff(np.concatenate(([0.0], recall))) * precision)  # average precision, as scikit-learn's
    f1 = np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12))
    return {"top1": float(np.mean(hits)), "auc_pr": float(auc_pr), "f1": float(f1)}


def precision_recall(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score taken as the threshold, highest first."""
    order = np.argsort(-scores, kind="mergesort")
    labels, scores = labels[order], scores[order]
    last_of_each = np.concatenate((np.flatnonzero(np.diff(scores)), [len(scores) - 1]))  # ties count together
    true_positives = np.cumsum(labels)[last_of_each]
    return true_positives / (last_of_each + 1), true_positives / max(int(labels.sum()), 1)


def run(name: str, seed: int) -> dict[str, dict[str, float]]:
    case = CASES[name](seed)
    results = {}
    for recipe, (preset, overrides) in RECIPES.items():
        torch.manual_seed(seed)
        started = time.perf_counter()
        model, context_len, target_len = train_model(case, seed, preset, overrides)
        trained = time.perf_counter() - started
        scores = [series_surprise(model, s, context_len, target_len) for s in case.series]
        results[f"JEPA surprise, {recipe} (C={context_len} L={target_len})"] = measure(case, scores) | {
            "train_s": trained
        }
    for order in AR_ORDERS:
        results[f"linear AR({order}) error"] = measure(case, [ar_scores(case.train, s, order) for s in case.series])
    results["z-score of differences"] = measure(case, [diff_z_scores(case.train, s) for s in case.series])
    return results


def cell(values: list[float], digits: int = 2) -> str:
    mean = statistics.fmean(values)
    half = (max(values) - min(values)) / 2
    return f"{mean:.{digits}f}" + (f"±{half:.{digits}f}" if half >= 0.5 * 10**-digits else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--datasets", default=",".join(CASES))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)
    print("| dataset | scorer | top-1 hit | AUC-PR | best F1 | train s |")
    print("|---|---|---|---|---|---|")
    for name in args.datasets.split(","):
        runs = [run(name, seed) for seed in seeds]
        for scorer in runs[0]:
            got = [r[scorer] for r in runs]
            train_s = cell([g["train_s"] for g in got], 1) if "train_s" in got[0] else ""
            row = [cell([g[m] for g in got]) for m in ("top1", "auc_pr", "f1")]
            print(f"| {name} | {scorer} | {' | '.join(row)} | {train_s} |")
    print(f"\nseeds {args.seeds}; one torch thread; torch {torch.__version__}.")


if __name__ == "__main__":
    main()
