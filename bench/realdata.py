"""The product's embeddings on real series: UCR/UEA datasets bundled with aeon, by linear probe.

    python -m bench.realdata                                  # 5 datasets, seeds 0,1,2
    python -m bench.realdata --unseen                         # 3 bundled datasets not tuned on
    python -m bench.realdata --datasets GunPoint,OSULeaf --seeds 0 --override epochs=10
    python -m bench.realdata --quick                          # one seed, ItalyPowerDemand

Per dataset and seed, the TRAIN split (sequences only, no labels) is stored as a dataset in a
temporary SQLite registry and trained through the product's own path (enqueue, claim, run_job:
what a worker's child runs) with the default preset and {"seed": seed} plus any --override. The
version's checkpoint is loaded back as the server loads it, both splits are embedded with the
served (target-encoder) embedding, and a ridge classifier (standardised features,
RidgeClassifierCV(alphas=logspace(-3, 3, 10)), the MiniRocket protocol) is fitted on the train
embeddings and scored on TEST. Baselines on the same splits: raw values + the same ridge, 1-NN
euclidean on raw values, and MiniRocket + the same ridge (random_state = each seed).

Prints one markdown table (mean ± half the range over seeds), the targets and whether each holds,
and the conditions. Data comes only from the files inside the aeon wheel: nothing is downloaded.
Needs the bench extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from bench.common import summarise, table

DEFAULT_DATASETS = ["GunPoint", "ArrowHead", "ItalyPowerDemand", "BasicMotions", "JapaneseVowels"]
# Bundled with aeon, never used to tune the recipe: long (ACSF1, T=1460), many classes, ragged.
UNSEEN_DATASETS = ["OSULeaf", "ACSF1", "PickupGestureWiimoteZ"]
QUICK_DATASET = "ItalyPowerDemand"
ALPHAS = np.logspace(-3, 3, 10)
EMBED_BATCH = 256  # sequences per forward pass, so long series do not blow memory
COST_LEN, COST_BATCH, COST_REPEATS = 1000, 64, 5  # the T=1000 encoding cost

# Targets
RATIO_TARGET = 0.95  # (a) mean accuracy of ours >= this x MiniRocket's
CHANCE_MARGIN = 0.05  # (c) "at chance": accuracy within this of 1 / #classes
MAX_TRAIN_S = 120.0  # (d)

PADDING = "padded to the longest series (train and test) by repeating each series' last value"


# -- data -------------------------------------------------------------------------------------


@dataclass
class Split:
    """One dataset's TRAIN and TEST splits as the product takes them: (T_i, D) float32 arrays."""

    name: str
    x_train: list[np.ndarray]
    y_train: np.ndarray  # int codes into `classes`
    x_test: list[np.ndarray]
    y_test: np.ndarray
    classes: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.x_train[0].shape[1])

    @property
    def lengths(self) -> tuple[int, int]:
        lengths = [len(x) for x in self.x_train + self.x_test]
        return min(lengths), max(lengths)

    @property
    def ragged(self) -> bool:
        low, high = self.lengths
        return low != high

    def label(self) -> str:
        low, high = self.lengths
        length = str(high) if low == high else f"{low}-{high}"
        return f"{self.name} ({len(self.x_train)}, {len(self.x_test)}, {length}, {self.dim})"


def bundled_root() -> Path:
    """aeon's own data folder inside the installed wheel."""
    import aeon.datasets

    return Path(aeon.datasets.__file__).parent / "data"


def bundled_names() -> list[str]:
    root = bundled_root()
    return sorted(
        d.name for d in root.iterdir() if (d / f"{d.name}_TRAIN.ts").is_file() and (d / f"{d.name}_TEST.ts").is_file()
    )


def to_sequences(x: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    """aeon's (N, C, T) array, or list of (C, T_i) arrays, as (T_i, C) float32 arrays."""
    return [np.ascontiguousarray(np.asarray(s, dtype=np.float32).T) for s in x]


def encode_labels(y_train: np.ndarray, y_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    classes, codes = np.unique(np.concatenate([y_train, y_test]), return_inverse=True)
    return codes[: len(y_train)], codes[len(y_train) :], [str(c) for c in classes]


def load_bundled(name: str) -> Split:
    """A classification dataset from the files inside the aeon wheel.

    aeon's load_classification also reads these first, but downloads any name that is not bundled;
    reading the .ts files directly makes a download impossible.
    """
    from aeon.datasets import load_from_ts_file

    directory = bundled_root() / name
    paths = [directory / f"{name}_{split}.ts" for split in ("TRAIN", "TEST")]
    if not all(p.is_file() for p in paths):
        raise ValueError(f"{name!r} is not bundled with aeon (nothing is downloaded); bundled: {bundled_names()}")
    (x_train, y_train, meta), (x_test, y_test, _) = (load_from_ts_file(str(p), return_meta_data=True) for p in paths)
    if not meta.get("classlabel"):
        raise ValueError(f"{name!r} is a regression problem, not classification")
    train_codes, test_codes, classes = encode_labels(y_train, y_test)
    return Split(name, to_sequences(x_train), train_codes, to_sequences(x_test), test_codes, classes)


def pad_edge(sequences: list[np.ndarray], length: int) -> np.ndarray:
    """(N, length, D): each (T_i, D) sequence padded by repeating its last step."""
    return np.stack([np.pad(s, ((0, length - len(s)), (0, 0)), mode="edge") for s in sequences])


def padded(split: Split) -> tuple[np.ndarray, np.ndarray]:
    length = split.lengths[1]
    return pad_edge(split.x_train, length), pad_edge(split.x_test, length)


# -- classifiers and baselines ----------------------------------------------------------------


def ridge_accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> float:
    """Standardised features, RidgeClassifierCV(alphas=logspace(-3, 3, 10)); accuracy on test."""
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=ALPHAS))
    classifier.fit(train.reshape(len(train), -1), y_train)
    return float(classifier.score(test.reshape(len(test), -1), y_test))


def raw_ridge(split: Split) -> float:
    train, test = padded(split)
    return ridge_accuracy(train, split.y_train, test, split.y_test)


def one_nn(split: Split) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    train, test = padded(split)
    knn = KNeighborsClassifier(n_neighbors=1, algorithm="brute", metric="euclidean")
    knn.fit(train.reshape(len(train), -1), split.y_train)
    return float(knn.score(test.reshape(len(test), -1), split.y_test))


def minirocket(split: Split, seed: int, n_jobs: int = 1, n_kernels: int = 10_000) -> tuple[float, float]:
    """(accuracy, seconds to transform both splits and fit the ridge): aeon's MiniRocket, which
    takes multivariate series as they are and equal lengths only (ragged series are padded)."""
    from aeon.transformations.collection.convolution_based import MiniRocket

    train, test = (np.ascontiguousarray(x.transpose(0, 2, 1), dtype=np.float64) for x in padded(split))  # (N, D, T)
    started = time.perf_counter()
    transform = MiniRocket(n_kernels=n_kernels, n_jobs=n_jobs, random_state=seed).fit(train)
    accuracy = ridge_accuracy(transform.transform(train), split.y_train, transform.transform(test), split.y_test)
    return accuracy, time.perf_counter() - started


def warm_up_minirocket(n_jobs: int) -> float:
    """Compile (or load from numba's cache) MiniRocket's kernels, so no dataset's time includes it."""
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for channels in (1, 2):
        x = [rng.standard_normal((32, channels)).astype(np.float32) for _ in range(8)]
        minirocket(Split("warm-up", x, np.arange(8) % 2, x, np.arange(8) % 2), 0, n_jobs, n_kernels=84)
    return time.perf_counter() - started


# -- ours: the product's training path ---------------------------------------------------------


class Refused(Exception):
    """The product would not train on this dataset (its upload or its job would be refused)."""


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are read as JSON where they parse (2, 0.5, true), else as strings."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--override wants key=value, got {pair!r}")
        try:
            overrides[key.strip()] = json.loads(value)
        except ValueError:
            overrides[key.strip()] = value
    if "seed" in overrides:
        raise SystemExit("--override seed=... is not allowed: the seed comes from --seeds")
    return overrides


def job_spec(model: str, dataset_id: str, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "dataset": {"kind": "stored", "id": dataset_id}, "config": {**overrides, "seed": seed}}


def check_overrides(overrides: dict[str, Any]) -> None:
    """Fail fast, naming each bad field, when TrainOptions refuses the overrides."""
    from training.spec import TrainingSpec

    spec = job_spec("check", "0" * 32, 0, overrides)
    spec["dataset"] |= {"input_dim": 1, "min_len": 4096}  # a stand-in shape; each job is checked on its own
    try:
        TrainingSpec.model_validate(spec).configs()
    except ValidationError as exc:
        problems = "\n".join(f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"the product's TrainOptions refuse --override {overrides}:\n{problems}") from None
    except ValueError as exc:
        raise SystemExit(f"the product refuses --override {overrides}: {exc}") from None


class Registry:
    """A throwaway data directory with a SQLite registry at the newest schema."""

    def __init__(self, data_dir: Path) -> None:
        from training.db import create_db_engine, create_session_factory
        from training.migrate import upgrade_to_head
        from training.settings import StorageSettings

        data_dir.mkdir(parents=True, exist_ok=True)
        self.settings = StorageSettings(data_dir=data_dir, database_url=None)
        upgrade_to_head(self.settings.resolved_database_url)
        self.engine = create_db_engine(self.settings.resolved_database_url)
        self.factory = create_session_factory(self.engine)

    def store(self, name: str, sequences: list[np.ndarray]) -> str:
        """Store sequences (no labels) as an upload would; Refused when the checks refuse them."""
        from training import datasets
        from training.db import in_transaction
        from training.errors import InvalidInput

        try:
            checked = datasets.check_sequences(sequences)
        except InvalidInput as exc:
            raise Refused(f"dataset refused: {exc}") from None
        return in_transaction(
            self.factory, lambda s: datasets.store_dataset(s, self.settings.data_dir, name, checked).id
        )

    def train(self, spec_data: dict[str, Any]) -> tuple[Any, dict[str, Any], float]:
        """Enqueue, claim and run the job here; (the loaded model, the version's metrics, run_job's seconds)."""
        from jepa_model import load_checkpoint
        from training import jobs
        from training.db import in_transaction
        from training.errors import InvalidInput
        from training.registry import get_version
        from training.runner import run_job
        from training.spec import TrainingSpec

        try:
            spec = TrainingSpec.model_validate(spec_data)
            job_id = in_transaction(self.factory, lambda s: jobs.enqueue(s, spec).id)
        except ValidationError as exc:
            raise Refused("job refused: " + "; ".join(e["msg"] for e in exc.errors())) from None
        except (InvalidInput, ValueError) as exc:
            raise Refused(f"job refused: {exc}") from None
        worker = jobs.worker_id()
        if not jobs.claim(self.factory, job_id, worker):
            raise RuntimeError(f"could not claim job {job_id}")
        started = time.perf_counter()
        try:
            number = run_job(self.factory, self.settings, job_id, worker=worker)
        except BaseException as exc:  # the job must not stay `running`
            jobs.mark_failed(self.factory, job_id, f"{type(exc).__name__}: {exc}", worker)
            raise
        seconds = time.perf_counter() - started
        with self.factory() as session:  # as the server resolves and loads a version
            row = get_version(session, spec.model, number)
            path, sha256, metrics = row.path, row.sha256, dict(row.metrics)
        model = load_checkpoint(self.settings.data_dir / path, expected_sha256=sha256).model
        return model, metrics, seconds

    def close(self) -> None:
        self.engine.dispose()


@torch.inference_mode()
def embed(model: Any, sequences: list[np.ndarray], batch: int = EMBED_BATCH) -> np.ndarray:
    """The served embedding (target encoder), EMBED_BATCH sequences a forward pass."""
    from jepa_model.metrics import embed_sequences

    model.eval()
    return embed_sequences(model, sequences, batch)


def encode_cost_ms(model: Any, dim: int, seed: int) -> float:
    """Median over COST_REPEATS of embedding COST_BATCH random (COST_LEN, dim) sequences, ms each."""
    x = list(np.random.default_rng(seed).standard_normal((COST_BATCH, COST_LEN, dim)).astype(np.float32))
    embed(model, x)  # warm-up
    times = []
    for _ in range(COST_REPEATS):
        started = time.perf_counter()
        embed(model, x)
        times.append(time.perf_counter() - started)
    return statistics.median(times) / COST_BATCH * 1000


def run_ours(registry: Registry, split: Split, dataset_id: str, seed: int, overrides: dict[str, Any]) -> dict:
    model_name = f"{split.name}-seed{seed}"
    model, metrics, run_s = registry.train(job_spec(model_name, dataset_id, seed, overrides))
    z_train = embed(model, split.x_train)
    started = time.perf_counter()
    z_test = embed(model, split.x_test)
    encode_s = time.perf_counter() - started
    return {
        "accuracy": ridge_accuracy(z_train, split.y_train, z_test, split.y_test),
        "train_s": float(metrics.get("train_seconds", run_s)),
        "run_job_s": run_s,
        "encode_seq_s": len(split.x_test) / encode_s,
        "encode_ms_t1000": encode_cost_ms(model, split.dim, seed),
        "embedding_dim": int(z_train.shape[1]),
        "version_metrics": metrics,
    }


# -- the report --------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _throughput(values: list[float]) -> str:
    if not values:
        return "-"
    mean, spread = statistics.fmean(values), (max(values) - min(values)) / 2
    return f"{mean:.0f}" if spread < 0.5 else f"{mean:.0f}±{spread:.0f}"


def dataset_summary(result: dict[str, Any]) -> dict[str, Any]:
    """Per-dataset means over seeds (None where nothing ran)."""
    ok = [r for r in result["runs"] if r["status"] == "ok"]
    return {
        "raw_ridge": result["raw_ridge"],
        "one_nn": result["one_nn"],
        "minirocket": _mean([m["accuracy"] for m in result["minirocket"]]),
        "ours": _mean([r["accuracy"] for r in ok]),
        "train_s": _mean([r["train_s"] for r in ok]),
        "encode_seq_s": _mean([r["encode_seq_s"] for r in ok]),
        "encode_ms_t1000": _mean([r["encode_ms_t1000"] for r in ok]),
        "chance": 1.0 / result["classes"],
        "problems": [f"seed {r['seed']} {r['status']}: {r['error']}" for r in result["runs"] if r["status"] != "ok"],
    }


def render(results: list[dict[str, Any]]) -> tuple[str, dict[str, bool]]:
    """The markdown table, the target lines, and whether each target holds."""
    rows, summaries = [], []
    for result in results:
        s = dataset_summary(result)
        summaries.append((result, s))
        ok = [r for r in result["runs"] if r["status"] == "ok"]
        by_seed = {m["seed"]: m["accuracy"] for m in result["minirocket"]}
        ratios = [{"r": r["accuracy"] / by_seed[r["seed"]]} for r in ok if by_seed.get(r["seed"])]
        ours = summarise(ok, "accuracy") if ok else result["runs"][0]["status"] if result["runs"] else "-"
        rows.append(
            [
                result["label"],
                f"{result['raw_ridge']:.2f}",
                f"{result['one_nn']:.2f}",
                summarise(result["minirocket"], "accuracy"),
                ours,
                summarise(ratios, "r"),
                summarise(ok, "train_s"),
                _throughput([r["encode_seq_s"] for r in ok]),
                summarise(ok, "encode_ms_t1000"),
            ]
        )
    ran = [s for _, s in summaries if s["ours"] is not None]
    if ran:

        def mean_of(key: str) -> float:
            return statistics.fmean(s[key] for s in ran)

        ratio = mean_of("ours") / mean_of("minirocket") if mean_of("minirocket") else float("nan")
        rows.append(
            [f"**mean over {len(ran)} of {len(results)} datasets**"]
            + [f"{mean_of(k):.2f}" for k in ("raw_ridge", "one_nn", "minirocket", "ours")]
            + [f"{ratio:.2f}", f"{mean_of('train_s'):.2f}", f"{mean_of('encode_seq_s'):.0f}"]
            + [f"{mean_of('encode_ms_t1000'):.2f}"]
        )
    header = [
        "dataset (N train, N test, T, D)",
        "raw+ridge",
        "1-NN",
        "MiniRocket",
        "ours",
        "ours/MiniRocket",
        "train s",
        "encode seq/s",
        "encode ms/seq at T=1000",
    ]
    lines = [table(header, rows), ""]

    not_ran = [r["name"] for r, s in summaries if s["ours"] is None]
    problems = [f"{r['name']} {p}" for r, s in summaries for p in s["problems"]]
    holds: dict[str, bool] = {}
    # (a)
    if ran:
        ours_mean, mr_mean = statistics.fmean(s["ours"] for s in ran), statistics.fmean(s["minirocket"] for s in ran)
        holds["a"] = ours_mean >= RATIO_TARGET * mr_mean and not not_ran
        note = f"; {', '.join(not_ran)} did not train, so it cannot hold" if not_ran else ""
        detail = f"{ours_mean:.3f} vs {RATIO_TARGET} x {mr_mean:.3f} = {RATIO_TARGET * mr_mean:.3f}{note}"
    else:
        holds["a"], detail = False, "nothing trained"
    lines.append(f"(a) mean accuracy of ours >= {RATIO_TARGET} x MiniRocket's: {_yes(holds['a'])} ({detail})")
    # (b)
    losing = [
        f"{r['name']} ({_acc(s['ours'])} vs {max(s['raw_ridge'], s['one_nn']):.3f})"
        for r, s in summaries
        if s["ours"] is None or s["ours"] <= max(s["raw_ridge"], s["one_nn"])
    ]
    holds["b"] = not losing
    lines.append(
        f"(b) on every dataset ours beats max(raw+ridge, 1-NN): {_yes(holds['b'])}"
        + (f" (not on {', '.join(losing)})" if losing else "")
    )
    # (c)
    at_chance = [
        f"{r['name']} ({s['ours']:.3f}, chance {s['chance']:.3f})"
        for r, s in summaries
        if s["ours"] is not None and s["ours"] <= s["chance"] + CHANCE_MARGIN
    ]
    holds["c"] = not problems and not at_chance
    issues = problems + [f"at chance: {a}" for a in at_chance]
    lines.append(
        f"(c) no dataset refused, none at chance (within {CHANCE_MARGIN} of 1/#classes): {_yes(holds['c'])}"
        + (f" ({'; '.join(issues)})" if issues else "")
    )
    # (d)
    train_s = [(r["name"], run["seed"], run["train_s"]) for r in results for run in r["runs"] if run["status"] == "ok"]
    slow = [f"{name} seed {seed}: {t:.1f} s" for name, seed, t in train_s if t > MAX_TRAIN_S]
    holds["d"] = bool(train_s) and not slow
    longest = f"longest {max(t for _, _, t in train_s):.1f} s" if train_s else "nothing trained"
    lines.append(
        f"(d) every training <= {MAX_TRAIN_S:.0f} s: {_yes(holds['d'])} ({longest}"
        + (f"; over: {', '.join(slow)})" if slow else ")")
    )
    return "\n".join(lines), holds


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _yes(ok: bool) -> str:
    return "holds" if ok else "DOES NOT HOLD"


def conditions(threads: int, warm_up_s: float) -> dict[str, Any]:
    import aeon
    import sklearn

    return {
        "torch_threads": torch.get_num_threads(),
        "train_threads_setting": threads,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "aeon": aeon.__version__,
        "sklearn": sklearn.__version__,
        "python": sys.version.split()[0],
        "minirocket_n_jobs": threads,
        "minirocket_warm_up_s": round(warm_up_s, 2),
    }


# -- main --------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_dataset(
    registry: Registry, split: Split, seeds: list[int], overrides: dict[str, Any], threads: int
) -> dict[str, Any]:
    name = split.name
    result: dict[str, Any] = {
        "name": name,
        "label": split.label(),
        "n_train": len(split.x_train),
        "n_test": len(split.x_test),
        "lengths": list(split.lengths),
        "dim": split.dim,
        "classes": len(split.classes),
        "ragged": split.ragged,
        "raw_ridge": raw_ridge(split),
        "one_nn": one_nn(split),
        "minirocket": [],
        "runs": [],
    }
    log(f"{split.label()}: raw+ridge {result['raw_ridge']:.3f}, 1-NN {result['one_nn']:.3f}")
    for seed in seeds:
        accuracy, seconds = minirocket(split, seed, n_jobs=threads)
        result["minirocket"].append({"seed": seed, "accuracy": accuracy, "seconds": seconds})
        log(f"  MiniRocket seed {seed}: {accuracy:.3f} ({seconds:.1f} s)")
    try:
        dataset_id = registry.store(f"{name}-train", split.x_train)
    except Refused as exc:
        result["runs"] = [{"seed": s, "status": "refused", "error": str(exc)} for s in seeds]
        log(f"  ours: {exc}")
        return result
    for seed in seeds:
        try:
            run = {"seed": seed, "status": "ok"} | run_ours(registry, split, dataset_id, seed, overrides)
            log(f"  ours seed {seed}: {run['accuracy']:.3f} (train {run['train_s']:.1f} s)")
        except Refused as exc:
            run = {"seed": seed, "status": "refused", "error": str(exc)}
            log(f"  ours seed {seed}: {exc}")
        except Exception as exc:  # noqa: BLE001 - one failed training must not lose the others' results
            run = {"seed": seed, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            log(f"  ours seed {seed}: FAILED {run['error']}")
        result["runs"].append(run)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", help=f"comma-separated bundled names (default: {','.join(DEFAULT_DATASETS)})")
    parser.add_argument("--unseen", action="store_true", help=f"the datasets not tuned on: {','.join(UNSEEN_DATASETS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated (default 0,1,2)")
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="a training config field, repeatable"
    )
    parser.add_argument("--json", type=Path, help="write every run's raw results here")
    parser.add_argument("--quick", action="store_true", help=f"smoke test: seed 0 only, {QUICK_DATASET} by default")
    parser.add_argument("--list", action="store_true", help="list the datasets bundled with aeon and exit")
    args = parser.parse_args()

    if args.list:
        print("\n".join(bundled_names()))
        return
    names = DEFAULT_DATASETS if not args.quick else [QUICK_DATASET]
    if args.unseen:
        names = UNSEEN_DATASETS
    if args.datasets:
        names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",") if s.strip()]
    unknown = [n for n in names if n not in bundled_names()]
    if unknown:
        raise SystemExit(f"not bundled with aeon (nothing is downloaded): {unknown}; bundled: {bundled_names()}")
    try:
        splits = [load_bundled(name) for name in names]
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    overrides = parse_overrides(args.override)
    check_overrides(overrides)

    from training.settings import StorageSettings

    threads = StorageSettings().train_threads
    torch.set_num_threads(threads)  # as training/runner.py main does
    started = time.perf_counter()
    warm_up_s = warm_up_minirocket(threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="jepa-realdata-") as tmp:
        registry = Registry(Path(tmp) / "data")
        try:
            for split in splits:
                results.append(run_dataset(registry, split, seeds, overrides, threads))
        finally:
            registry.close()
    report, holds = render(results)
    conds = conditions(threads, warm_up_s)
    minirocket_s = ", ".join(
        f"{r['name']} {statistics.fmean(m['seconds'] for m in r['minirocket']):.1f} s" for r in results
    )
    ragged = [r["name"] for r in results if r["ragged"]]
    print(report)
    print(
        f"\n{len(seeds)} seed(s) {seeds}; default preset"
        + (f" with overrides {overrides}" if overrides else " with no overrides")
        + "; ours is trained through enqueue/claim/run_job on the TRAIN split without labels. Accuracy on TEST "
        "of RidgeClassifierCV(alphas=logspace(-3, 3, 10)) on standardised features; 1-NN euclidean on raw values. "
        f"train s: the version's train_seconds; encode seq/s: embedding the TEST split {EMBED_BATCH} a batch; "
        f"ms/seq at T=1000: median of {COST_REPEATS} passes over {COST_BATCH} random sequences."
    )
    if ragged:
        print(
            f"Ragged ({', '.join(ragged)}): ours trains and embeds each series at its own length; raw+ridge, "
            f"1-NN and MiniRocket (aeon's takes equal lengths only) see each series {PADDING}."
        )
    print(
        f"MiniRocket (aeon, 10,000 kernels, multivariate as is, random_state = seed, mean over seeds): "
        f"fit+transform+ridge {minirocket_s}; numba warm-up {warm_up_s:.1f} s, not counted."
    )
    print(
        f"Conditions: torch {conds['torch']} with {conds['torch_threads']} thread(s) (JEPA_TRAIN_THREADS), "
        f"{conds['cores']} core(s) available, aeon {conds['aeon']}, scikit-learn {conds['sklearn']}, "
        f"Python {conds['python']}; {time.perf_counter() - started:.0f} s in all."
    )
    if args.json:
        payload = {"conditions": conds, "seeds": seeds, "overrides": overrides, "targets": holds, "datasets": results}
        args.json.write_text(json.dumps(payload, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
