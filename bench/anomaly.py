"""POST /score as an anomaly detector on real series, against the matrix-profile discord and an
autoregression from the same run, through the product's own path.

    python -m bench.anomaly                          # the four real series and the toy paths, seeds 0,1,2
    python -m bench.anomaly --series yahoo,mitdb --seeds 0 --override steps=100
    python -m bench.anomaly --smoke                  # yahoo, seed 0, 20 steps, T = 10,000 only: CI runs this

Series, all inside wheels, nothing downloaded (pip install -e '.[bench]'):
- bleeding: InternalBleeding16, the UCR anomaly archive's series 135 (aeon, `load_kdd_tsad_135`):
  its first 1,200 points are normal and train; the 6,301 after them are scored (one anomaly).
- ecg: ecg-diff-count-3 (aeon, GutenTAG): its normal training series of 10,000 points trains, its
  test series of 10,000 is scored (three anomalies).
- mitdb: `mitdb.csv` (sktime, 7,500 points): the first 2,500 (normal) train, the rest is scored.
- yahoo: `yahoo.csv` (sktime, 1,000 points): the first 400 (normal) train, the rest is scored
  (seven one-point anomalies).
- toy: the seed's 2-D paths, 64 steps: 512 normal ones train, 30 held-out ones are scored, each
  with one injected anomaly (a sudden turn, a speed jump or a frozen sensor, 10 of each).

Ours, per series and seed: the training part is uploaded as a user would upload it, as one series
(POST /datasets' checks, then store_dataset), trained through the job path with {"seed": seed}
(POST /train's checks, enqueue, claim, run_job: bench.realdata.Registry), and the whole series is
scored by service.engine.InferenceEngine.anomalies, the call POST /score makes, with its defaults
(method auto). The toy paths are scored the same way, one request for the 30.

Baselines, on the same parts: the matrix-profile discord (stumpy's AB-join of the scored series
against the training part, the window the training part's dominant period by the rule the product
uses, each window's distance to its nearest training window given to its centre step), and the
one-step error of a least-squares linear autoregression of order 32 fitted on the training part.

Also a check never tuned on, built as the UCR anomaly archive built many of its series: for
GunPoint, ArrowHead, OSULeaf and ACSF1 (UCR classification sets in aeon), 20 series of the
commonest class one after the other train, and 20 test series of that class with one series of
another class planted among them are scored.

Metrics over the scored part: top-1, the UCR archive's rule (a hit when the highest score lands
within max(100, the anomaly's length) of a labelled anomaly; 10 steps for the 64-step toy paths,
as the share of paths hit), and AUC-PR (scikit-learn's average precision). "train s" is the job's
training time (the memory's building included), "score s" the first /score call on the version
(its loading included). Speed: steps scored per second by `anomalies` at T = 10,000 and 100,000
(the first real series' seed-0 version, its whole series tiled), the median and range of 3
requests after a warm-up, one inference thread. Prints markdown tables: mean over seeds ± half
the range, and top-1 as hits out of the runs.
"""

from __future__ import annotations

import argparse
import importlib.resources
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.realdata import Encoder, Registry, check_overrides, parse_overrides
from jepa_model import ToySequenceDataset
from jepa_model.memory import dominant_period

AR_ORDER = 32
TOY_LEN, TOY_TRAIN, TOY_TEST, TOY_ANOMALY = 64, 512, 30, 8
REAL = ("bleeding", "ecg", "mitdb", "yahoo")  # the series the issue names: the targets
# Never tuned on: a foreign shape planted among normal ones, from UCR classification sets in aeon.
PLANTED, PLANTED_SERIES = ("GunPoint", "ArrowHead", "OSULeaf", "ACSF1"), 20
SPEED_LENGTHS, SPEED_REPEATS = (10_000, 100_000), 3
SMOKE_SERIES, SMOKE_STEPS = "yahoo", 20


@dataclass
class Case:
    """Training series (T_i, D); series to score with their labels (T_i,), where scoring starts in
    each, and how near the labelled anomaly top-1 must land at least."""

    train: list[np.ndarray]
    series: list[np.ndarray]
    labels: list[np.ndarray]
    scored_from: list[int]
    tolerance: int


def _prefix_case(x: np.ndarray, labels: np.ndarray, train_len: int) -> Case:
    series = x.astype(np.float32)[:, None]
    assert not labels[:train_len].any(), "the training part must be normal"
    return Case([series[:train_len]], [series], [labels.astype(bool)], [train_len], tolerance=100)


def _sktime_csv(name: str) -> tuple[np.ndarray, np.ndarray]:
    path = importlib.resources.files("sktime") / "datasets" / "data" / name / f"{name}.csv"
    table = np.loadtxt(str(path), delimiter=",", skiprows=1)
    return table[:, 0], table[:, 1] > 0


def bleeding(seed: int) -> Case:
    from aeon.datasets import load_kdd_tsad_135

    x, y = load_kdd_tsad_135("test")  # the whole series; its first 1,200 points are the train split
    return _prefix_case(x, y, len(load_kdd_tsad_135("train")[0]))


def ecg(seed: int) -> Case:
    from aeon.datasets import load_ecg_diff_count_3

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated in aeon 1.6, still shipped
        x_test, y_test, x_train, _ = load_ecg_diff_count_3("semi-supervised")
    series = x_test.astype(np.float32)[:, None]
    return Case([x_train.astype(np.float32)[:, None]], [series], [y_test.astype(bool)], [0], tolerance=100)


def mitdb(seed: int) -> Case:
    return _prefix_case(*_sktime_csv("mitdb"), train_len=2500)


def yahoo(seed: int) -> Case:
    return _prefix_case(*_sktime_csv("yahoo"), train_len=400)


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


def planted(name: str, seed: int) -> Case:
    """Built as the UCR anomaly archive built many of its series: a UCR classification set's
    commonest class, series after series, with one series of another class planted among them.
    Trains on PLANTED_SERIES of its TRAIN series; scores PLANTED_SERIES of its TEST series with a
    foreign one planted at a seeded place in the middle half. Univariate sets only."""
    from bench.ucr import load_bundled

    split = load_bundled(name)
    normal = int(np.bincount(split.y_train).argmax())
    train = [x for x, y in zip(split.x_train, split.y_train, strict=True) if y == normal][:PLANTED_SERIES]
    test = [x for x, y in zip(split.x_test, split.y_test, strict=True) if y == normal][:PLANTED_SERIES]
    foreign = [x for x, y in zip(split.x_test, split.y_test, strict=True) if y != normal]
    rng = np.random.default_rng(seed)
    at = int(rng.integers(len(test) // 4, 3 * len(test) // 4))
    parts = test[:at] + [foreign[int(rng.integers(len(foreign)))]] + test[at:]
    labels = np.concatenate([np.full(len(x), i == at) for i, x in enumerate(parts)])
    return Case([np.concatenate(train)], [np.concatenate(parts)], [labels], [0], tolerance=100)


CASES: dict[str, Callable[[int], Case]] = {
    "bleeding": bleeding,
    "ecg": ecg,
    "mitdb": mitdb,
    "yahoo": yahoo,
    "toy": toy,
    **{f"planted-{name}": (lambda seed, name=name: planted(name, seed)) for name in PLANTED},
}


# -- the baselines -----------------------------------------------------------------------------


def discord_scores(train: list[np.ndarray], series: np.ndarray) -> np.ndarray:
    """Each step's matrix-profile discord: the z-normalised distance of the window centred on it
    to its nearest window of the training part (stumpy's AB-join), window = the dominant period."""
    import stumpy

    window = dominant_period(train)
    reference = np.concatenate(train)[:, 0].astype(np.float64)
    profile = stumpy.stump(series[:, 0].astype(np.float64), window, reference, ignore_trivial=False)[:, 0]
    out = np.full(len(series), np.nan)
    out[window // 2 : window // 2 + len(profile)] = profile.astype(np.float64)
    return out


def ar_scores(train: list[np.ndarray], series: np.ndarray, order: int = AR_ORDER) -> np.ndarray:
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


# -- metrics -----------------------------------------------------------------------------------


def runs_of(labels: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate(([0], labels.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def measure(case: Case, scores: list[np.ndarray]) -> dict[str, float]:
    """Top-1 (the UCR rule, the share of series hit) and AUC-PR over the scored parts."""
    from sklearn.metrics import average_precision_score

    hits, flat_scores, flat_labels = [], [], []
    for s, labels, start in zip(scores, case.labels, case.scored_from, strict=True):
        s, labels = np.asarray(s[start:], dtype=np.float64), labels[start:]
        s = np.where(np.isnan(s), np.nanmin(s), s)  # a step with no score ranks lowest
        top = int(np.argmax(s))
        hits.append(
            any(a - max(case.tolerance, b - a) <= top < b + max(case.tolerance, b - a) for a, b in runs_of(labels))
        )
        flat_scores.append(s)
        flat_labels.append(labels)
    auc_pr = average_precision_score(np.concatenate(flat_labels), np.concatenate(flat_scores))
    return {"top1": float(np.mean(hits)), "auc_pr": float(auc_pr)}


# -- ours --------------------------------------------------------------------------------------


def run_ours(registry: Registry, name: str, case: Case, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    dataset_id = registry.store_dataset(f"{name}-train", case.train)
    spec = {"model": f"{name}-seed{seed}", "dataset": {"id": dataset_id}, "config": {"seed": seed, **overrides}}
    trained = registry.train(spec)
    with Encoder(registry) as encoder:
        served = encoder.resolve(trained.model, trained.number)
        started = time.perf_counter()
        scored = anomalies(encoder, served, case.series)
        score_s = time.perf_counter() - started
    return measure(case, scored.scores) | {
        "method": scored.method,
        "window": scored.window,
        "train_s": float(trained.metrics.get("train_seconds", trained.run_job_s)),
        "run_job_s": trained.run_job_s,
        "score_s": score_s,
        "model": trained.model,
        "number": trained.number,
    }


def anomalies(encoder: Encoder, served: Any, series: list[np.ndarray]) -> Any:
    """POST /score's call with its defaults (method auto, the version's windows, stride 1)."""
    limit = encoder.settings.max_score_points
    return encoder.loop.run(encoder.engine.anomalies(served, series, "auto", None, None, 1, limit))


def speed(registry: Registry, model: str, number: int, base: np.ndarray, lengths: list[int], repeats: int) -> dict:
    """Steps scored per second at each length: `base` tiled to it, median and range of `repeats`."""
    out = {}
    with Encoder(registry) as encoder:
        served = encoder.resolve(model, number)
        anomalies(encoder, served, [base[:1000]])  # loads the version
        for length in lengths:
            x = np.resize(base, (length, base.shape[1])).astype(np.float32)
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                anomalies(encoder, served, [x])
                times.append(time.perf_counter() - started)
            out[length] = times
    return out


# -- the report --------------------------------------------------------------------------------


def cell(values: list[float], digits: int = 2) -> str:
    mean = statistics.fmean(values)
    half = (max(values) - min(values)) / 2
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if half >= 0.5 * 10**-digits else "")


def hits(values: list[float]) -> str:
    return f"{sum(round(v) for v in values)}/{len(values)}"


def run_case(registry: Registry, name: str, seeds: list[int], overrides: dict[str, Any]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {"ours": [], "discord": [], "ar": []}
    for seed in seeds:
        case = CASES[name](seed)
        rows["ours"].append(run_ours(registry, name, case, seed, overrides))
        rows["discord"].append(measure(case, [discord_scores(case.train, s) for s in case.series]))
        rows["ar"].append(measure(case, [ar_scores(case.train, s) for s in case.series]))
        ours = rows["ours"][-1]
        print(
            f"  {name} seed {seed}: ours top-1 {ours['top1']:.2f} AUC-PR {ours['auc_pr']:.3f} ({ours['method']}, "
            f"train {ours['train_s']:.0f} s); discord {rows['discord'][-1]['auc_pr']:.3f}, "
            f"AR {rows['ar'][-1]['auc_pr']:.3f}",
            file=sys.stderr,
            flush=True,
        )
    return rows


SCORERS = {"ours": "ours: /score, trained with {}", "discord": "matrix-profile discord", "ar": f"AR({AR_ORDER}) error"}


def render(results: dict[str, dict[str, list[dict]]]) -> list[str]:
    lines = ["| series | scorer | top-1 hits | AUC-PR | train s | score s |", "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        for scorer, runs in rows.items():
            top1 = [r["top1"] for r in runs]
            top = hits(top1) if name != "toy" else cell(top1)
            train = cell([r["train_s"] for r in runs], 0) if "train_s" in runs[0] else ""
            score = cell([r["score_s"] for r in runs], 2) if "score_s" in runs[0] else ""
            label = SCORERS[scorer] + (f" ({runs[0]['method']})" if scorer == "ours" else "")
            lines.append(f"| {name} | {label} | {top} | {cell([r['auc_pr'] for r in runs], 3)} | {train} | {score} |")
    for group, members in (
        ("real", [n for n in results if n in REAL]),
        ("planted", [n for n in results if n.startswith("planted-")]),
    ):
        lines.extend(group_summary(results, group, members))
    return lines


def group_summary(results: dict[str, dict[str, list[dict]]], group: str, members: list[str]) -> list[str]:
    """The group's series together: top-1 hits and mean AUC-PR per scorer; for the named real
    series, whether ours reaches the better baseline on each (the issue's targets)."""
    if not members:
        return []
    what = "named real series" if group == "real" else "planted series (never tuned on)"
    lines = ["", f"The {len(members)} {what} together ({', '.join(members)}), all seeds:", ""]
    lines += ["| scorer | top-1 hits | mean AUC-PR |", "|---|---|---|"]
    totals = {}
    for scorer in SCORERS:
        runs = [r for n in members for r in results[n][scorer]]
        mean_auc = statistics.fmean(statistics.fmean(r["auc_pr"] for r in results[n][scorer]) for n in members)
        totals[scorer] = (sum(round(r["top1"]) for r in runs), mean_auc)
        lines.append(f"| {SCORERS[scorer]} | {hits([r['top1'] for r in runs])} | {mean_auc:.3f} |")
    if group == "real":
        best_hits = max(totals[s][0] for s in ("discord", "ar"))
        best_auc = max(totals[s][1] for s in ("discord", "ar"))
        held = (
            "MET" if totals["ours"][0] >= best_hits else "MISSED",
            "MET" if totals["ours"][1] >= best_auc else "MISSED",
        )
        lines += [
            "",
            f"Targets: top-1 hits {totals['ours'][0]} against the better baseline's {best_hits}: {held[0]}; "
            f"mean AUC-PR {totals['ours'][1]:.3f} against the better baseline's {best_auc:.3f}: {held[1]}.",
        ]
    return lines


def render_speed(times: dict[int, list[float]], repeats: int) -> list[str]:
    lines = ["| T (steps) | seconds a request | steps scored a second |", "|---|---|---|"]
    for length, seconds in times.items():
        rates = [length / s for s in seconds]
        lines.append(
            f"| {length:,} | {statistics.median(seconds):.2f} ({min(seconds):.2f}-{max(seconds):.2f}) | "
            f"{statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="a training config field")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_SERIES}, seed 0, steps={SMOKE_STEPS}, T=10,000")
    args = parser.parse_args(argv)
    names = [SMOKE_SERIES] if args.smoke else [n.strip() for n in args.series.split(",") if n.strip()]
    if unknown := [n for n in names if n not in CASES]:
        raise SystemExit(f"unknown series {unknown}; known: {list(CASES)}")
    seeds = [0] if args.smoke else [int(s) for s in args.seeds.split(",")]
    overrides = parse_overrides(args.override) | ({"steps": SMOKE_STEPS} if args.smoke else {})
    check_overrides(overrides)
    lengths, repeats = ([SPEED_LENGTHS[0]], 1) if args.smoke else (list(SPEED_LENGTHS), SPEED_REPEATS)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jepa-anomaly-") as tmp:
        registry = Registry(Path(tmp) / "data")
        try:
            results = {name: run_case(registry, name, seeds, overrides) for name in names}
            first = next((n for n in names if n in REAL), None)
            times = {}
            if first is not None:
                ours = results[first]["ours"][0]
                base = CASES[first](seeds[0]).series[0]
                times = speed(registry, ours["model"], ours["number"], base, lengths, repeats)
        finally:
            registry.close()
    import torch

    print("\n".join(render(results)))
    if times:
        print(f"\n/score speed, the {first} version of seed {seeds[0]}, its series tiled:\n")
        print("\n".join(render_speed(times, repeats)))
    print(
        f"\nseeds {','.join(map(str, seeds))}; overrides {overrides or 'none'}; torch {torch.__version__}, "
        f"{registry.settings.train_threads} training thread(s), 1 inference thread; "
        f"{time.perf_counter() - started:.0f} s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
