"""The product's embeddings on real series: UCR/UEA datasets bundled with aeon, by linear probe.

    python -m bench.realdata                              # all 8 sets (5 named, 3 unseen), seeds 0,1,2
    python -m bench.realdata --group unseen               # only the 3 sets never tuned on
    python -m bench.realdata --datasets GunPoint,OSULeaf --seeds 0 --override steps=200
    python -m bench.realdata --smoke                      # ItalyPowerDemand, seed 0, 20 steps, small peers
    python -m bench.realdata --list                       # the classification sets bundled with aeon

Ours. Per dataset and seed, the TRAIN split (sequences only, no labels) is stored as POST /datasets
stores an upload (check_sequences, then store_dataset through the configured ArtifactStore) in a
temporary SQLite registry, and trained through the product's job path: POST /train's checks
(resolve_spec, check_memory), enqueue, claim, and run_job (what a worker's child runs), with the
default preset and {"seed": seed} plus any --override. Both splits are then embedded by
service.engine.InferenceEngine, the engine behind POST /encode, built as service/app.py builds it
(the server's micro-batching settings) with one inference thread: it resolves the version in the
registry, fetches and loads its checkpoint, traces its forwards and answers `encode` with /encode's
defaults (the target encoder, not normalised), one request per client-sized chunk. A ridge
classifier (standardised features, RidgeClassifierCV(alphas=logspace(-3, 3, 10)), the MiniRocket
protocol) is fitted on the TRAIN embeddings and scored on TEST.

Peers, on the same splits: raw values + the same ridge; 1-NN euclidean on raw values; and aeon's
MiniRocket, MultiRocket and HydraTransformer, each fitted on TRAIN with random_state = the seed,
then the same RidgeClassifierCV on standardised features. Hydra's features are standardised with
aeon's own sparse scaler, as aeon's HydraClassifier does; Hydra+MultiRocket concatenates the two
scaled feature sets, as aeon's MultiRocketHydraClassifier (the published MultiRocket-Hydra) does.
The peers take equal lengths only: ragged sets are padded to their longest series by repeating each
series' last value, and a set shorter than the kernels' 9 steps would be padded to 9.

Prints one markdown table (mean ± half the range over seeds) with a mean row per group (named,
unseen, other) and over all sets, the targets and whether each holds, and the conditions. A failed
training or peer is recorded and the run goes on, but the exit code is then 1; --smoke stops at
the first failure, so CI catches a bench that no longer runs. Data comes only from the files inside
the aeon wheel: nothing is downloaded. Needs the bench extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from bench.common import summarise, table
from bench.peers import MIN_PEER_LEN, PEERS, RATIOS, SMOKE_SIZES, PeerSizes, run_peers, warm_up_peers
from bench.ucr import PADDING, Split, bundled_names, load_bundled, one_nn, raw_ridge, ridge_accuracy, standardised

# Dataset groups: the named five were looked at while tuning the recipe; the unseen three never
# were (long: ACSF1, T=1460; many classes: OSULeaf; ragged: PickupGestureWiimoteZ).
GROUPS = {
    "named": ["GunPoint", "ArrowHead", "ItalyPowerDemand", "BasicMotions", "JapaneseVowels"],
    "unseen": ["OSULeaf", "ACSF1", "PickupGestureWiimoteZ"],
}
OTHER_GROUP = "other"  # sets given with --datasets that are in neither group
DEFAULT_DATASETS = GROUPS["named"] + GROUPS["unseen"]
SMOKE_DATASET, SMOKE_STEPS = "ItalyPowerDemand", 20  # --smoke: the smallest set, 20 optimizer steps

# Targets: each constant is used here only.
MEAN_VS_MINIROCKET = 1.0  # (a) ours' mean accuracy over all sets >= this x MiniRocket's
GROUP_VS_MINIROCKET = 0.97  # (a) ... and over each group's sets (named, unseen)
TARGET_GROUPS = ("named", "unseen")
CHANCE_MARGIN = 0.05  # (c) "at chance": accuracy within this of 1 / #classes
MAX_TRAIN_S = 180.0  # (d) every set and seed
MAX_MEAN_TRAIN_S = 90.0  # (d) the mean over sets
MAX_ENCODE_MS = 15.0  # (e) per sequence at T=1000, one thread, every set
# (f), reported and not required: ours' mean accuracy >= MultiRocket's.

ENCODE_THREADS = 1  # torch threads of the inference engine: the server's default (inference_threads)
COST_LEN, COST_BATCH, COST_REPEATS = 1000, 64, 5  # the T=1000 encoding cost: one request of 64


def group_of(name: str) -> str:
    return next((group for group, names in GROUPS.items() if name in names), OTHER_GROUP)


# -- ours: the product's training path and the engine behind /encode ------------------------------


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
    from training.execution.spec import TrainingSpec

    spec = job_spec("check", "0" * 32, 0, overrides)
    spec["dataset"] |= {"input_dim": 1, "min_len": 4096}  # a stand-in shape; each job is checked on its own
    try:
        TrainingSpec.model_validate(spec).configs()
    except ValidationError as exc:
        problems = "\n".join(f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"the product's TrainOptions refuse --override {overrides}:\n{problems}") from None
    except ValueError as exc:
        raise SystemExit(f"the product refuses --override {overrides}: {exc}") from None


@dataclass(frozen=True)
class Trained:
    model: str
    number: int
    metrics: dict[str, Any]
    run_job_s: float  # run_job's wall time: training, metrics, checkpoint, plots, registration


class Registry:
    """A throwaway data directory with a SQLite registry at the newest schema, and its artifact
    store, under the server's own Settings (JEPA_* variables apply, as they would to a server)."""

    def __init__(self, data_dir: Path) -> None:
        from service.settings import Settings
        from training.store.artifacts import open_store
        from training.store.db import create_db_engine, create_session_factory
        from training.store.migrate import upgrade_to_head

        data_dir.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(data_dir=data_dir, database_url=None)
        upgrade_to_head(self.settings.resolved_database_url)
        self.engine = create_db_engine(self.settings.resolved_database_url)
        self.factory = create_session_factory(self.engine)
        self.store = open_store(self.settings.artifact_store, self.settings.data_dir)

    def store_dataset(self, name: str, sequences: list[np.ndarray]) -> str:
        """Store sequences (no labels) as POST /datasets does; Refused when its checks refuse them."""
        from training.data import datasets
        from training.errors import InvalidInput
        from training.store.db import in_transaction

        try:
            checked = datasets.check_sequences(sequences)
        except InvalidInput as exc:
            raise Refused(f"dataset refused: {exc}") from None
        return in_transaction(self.factory, lambda s: datasets.store_dataset(s, self.store, name, checked).id)

    def train(self, spec_data: dict[str, Any]) -> Trained:
        """Queue the job as POST /train does, then claim and run it here as a worker's child does."""
        from training.errors import InvalidInput
        from training.execution import jobs
        from training.execution.runner import run_job
        from training.execution.spec import TrainingSpec
        from training.store.db import in_transaction
        from training.store.registry import get_version

        def enqueue(session: Any) -> str:
            resolved = jobs.resolve_spec(session, spec)
            resolved.check_memory(self.settings.train_memory_mb)
            return jobs.enqueue(session, resolved).id

        try:
            spec = TrainingSpec.model_validate(spec_data)
            job_id = in_transaction(self.factory, enqueue)
        except ValidationError as exc:
            raise Refused("job refused: " + "; ".join(e["msg"] for e in exc.errors())) from None
        except (InvalidInput, ValueError) as exc:
            raise Refused(f"job refused: {exc}") from None
        worker = jobs.worker_id()
        if not jobs.claim(self.factory, job_id, worker):
            raise RuntimeError(f"could not claim job {job_id}")
        # As training/execution/runner.py's main does; the engine and Hydra set the process's count too.
        torch.set_num_threads(self.settings.train_threads)
        started = time.perf_counter()
        try:
            number = run_job(self.factory, self.settings, job_id, worker=worker)
        except BaseException as exc:  # the job must not stay `running`
            jobs.mark_failed(self.factory, job_id, f"{type(exc).__name__}: {exc}", worker)
            raise
        seconds = time.perf_counter() - started
        with self.factory() as session:
            metrics = dict(get_version(session, spec.model, number).metrics)
        return Trained(spec.model, number, metrics, seconds)

    def close(self) -> None:
        self.engine.dispose()


def client_requests(
    sequences: list[np.ndarray], max_batch: int, max_points: int
) -> Iterator[np.ndarray | list[np.ndarray]]:
    """The sequences as a client must send them to /encode: at most `max_batch` sequences and
    `max_points` numbers a request; one (n, T, D) array where the lengths are equal, as the route
    parses an equal-length body."""
    start = 0
    while start < len(sequences):
        end, points = start, 0
        while end < len(sequences) and end - start < max_batch:
            points += sequences[end].size
            if points > max_points and end > start:
                break
            end += 1
        chunk = sequences[start:end]
        yield np.stack(chunk) if len({len(s) for s in chunk}) == 1 else chunk
        start = end


class Encoder:
    """service.engine.InferenceEngine, the engine POST /encode calls, over the bench's registry.

    Built with the arguments service/app.py gives it, from the same Settings, except for one
    inference thread (the server's default). It runs on its own event loop here; each `encode`
    is one /encode request's call, `engine.encode(served, sequences, "target", normalize=False)`.
    """

    def __init__(self, registry: Registry) -> None:
        from service.engine import InferenceEngine

        settings = self.settings = registry.settings
        self.loop = asyncio.Runner()
        self.engine = InferenceEngine.from_settings(registry.factory, registry.store, settings, threads=ENCODE_THREADS)
        self.loop.run(self._start())

    async def _start(self) -> None:
        self.engine.start()  # the micro-batcher's task, in the loop that will await it

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.run(self.engine.aclose())
        self.loop.close()

    def resolve(self, model: str, number: int) -> Any:
        """The ServedVersion, as a request naming this version resolves it."""
        return self.engine.resolve(model, number, None)

    def encode(self, served: Any, sequences: list[np.ndarray]) -> np.ndarray:
        """(N, R) embeddings, one request per client-sized chunk."""
        limit = self.settings.max_batch, self.settings.max_request_points
        return np.concatenate(
            [
                self.loop.run(self.engine.encode(served, chunk, "target", False))
                for chunk in client_requests(sequences, *limit)
            ]
        )

    def traced(self, served: Any) -> bool:
        """Whether the engine serves this version traced (else eagerly: tracing failed or is off)."""
        forwards = self.loop.run(self.engine.run(self.engine.load, served))  # the inference thread owns the cache
        return isinstance(forwards.full["target"], torch.jit.ScriptModule)


def encode_cost_ms(encoder: Encoder, served: Any, dim: int, seed: int) -> float:
    """Median over COST_REPEATS requests of COST_BATCH random (COST_LEN, dim) sequences, ms per sequence."""
    x = list(np.random.default_rng(seed).standard_normal((COST_BATCH, COST_LEN, dim)).astype(np.float32))
    encoder.encode(served, x)  # warm-up: oneDNN's primitives for this shape
    times = []
    for _ in range(COST_REPEATS):
        started = time.perf_counter()
        encoder.encode(served, x)
        times.append(time.perf_counter() - started)
    return statistics.median(times) / COST_BATCH * 1000


def run_ours(registry: Registry, split: Split, dataset_id: str, seed: int, overrides: dict[str, Any]) -> dict:
    trained = registry.train(job_spec(f"{split.name}-seed{seed}", dataset_id, seed, overrides))
    with Encoder(registry) as encoder:
        served = encoder.resolve(trained.model, trained.number)
        z_train = encoder.encode(served, split.x_train)  # the first request loads and traces the version
        started = time.perf_counter()
        z_test = encoder.encode(served, split.x_test)
        encode_s = time.perf_counter() - started
        cost_ms = encode_cost_ms(encoder, served, split.dim, seed)
        traced = encoder.traced(served)
    return {
        "accuracy": ridge_accuracy(standardised(z_train, z_test), split.y_train, split.y_test),
        "train_s": float(trained.metrics.get("train_seconds", trained.run_job_s)),
        "run_job_s": trained.run_job_s,
        "encode_seq_s": len(split.x_test) / encode_s,
        "encode_ms_t1000": cost_ms,
        "traced": traced,
        "embedding_dim": int(z_train.shape[1]),
        "version_metrics": trained.metrics,
    }


# -- the report --------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def ok_runs(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in result["runs"] if r["status"] == "ok"]


def peer_ok(result: dict[str, Any], peer: str) -> list[dict[str, Any]]:
    return [r for r in result["peers"][peer] if "accuracy" in r]


def dataset_summary(result: dict[str, Any]) -> dict[str, Any]:
    """Per-dataset means over seeds (None where nothing ran), and what went wrong."""
    ok = ok_runs(result)
    problems = [f"seed {r['seed']} {r['status']}: {r['error']}" for r in result["runs"] if r["status"] != "ok"]
    problems += [
        f"{PEERS[peer]} seed {r['seed']} failed: {r['error']}"
        for peer in PEERS
        for r in result["peers"][peer]
        if "error" in r
    ]
    return {
        "name": result["name"],
        "group": result["group"],
        "raw_ridge": result["raw_ridge"],
        "one_nn": result["one_nn"],
        **{peer: _mean([r["accuracy"] for r in peer_ok(result, peer)]) for peer in PEERS},
        "ours": _mean([r["accuracy"] for r in ok]),
        "train_s": _mean([r["train_s"] for r in ok]),
        "encode_ms_t1000": _mean([r["encode_ms_t1000"] for r in ok]),
        "chance": 1.0 / result["classes"],
        "problems": problems,
    }


def seed_ratios(result: dict[str, Any], peer: str) -> list[dict[str, float]]:
    """ours / peer for each seed where both ran."""
    by_seed = {r["seed"]: r["accuracy"] for r in peer_ok(result, peer)}
    return [{"r": r["accuracy"] / by_seed[r["seed"]]} for r in ok_runs(result) if by_seed.get(r["seed"])]


def dataset_row(result: dict[str, Any]) -> list[str]:
    ok = ok_runs(result)
    ours = summarise(ok, "accuracy") if ok else result["runs"][0]["status"] if result["runs"] else "-"
    return (
        [result["label"], f"{result['raw_ridge']:.2f}", f"{result['one_nn']:.2f}"]
        + [summarise(peer_ok(result, peer), "accuracy") if peer_ok(result, peer) else "failed" for peer in PEERS]
        + [ours]
        + [summarise(seed_ratios(result, peer), "r") for peer in RATIOS]
        + [summarise(ok, "train_s"), summarise(ok, "encode_ms_t1000")]
    )


MEAN_KEYS = ["raw_ridge", "one_nn", *PEERS, "ours"]


def complete(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sets where ours and every peer have an accuracy: the ones means compare fairly."""
    return [s for s in summaries if all(s[key] is not None for key in MEAN_KEYS)]


def mean_of(summaries: list[dict[str, Any]], key: str) -> float:
    return statistics.fmean(s[key] for s in summaries)


def mean_row(label: str, summaries: list[dict[str, Any]]) -> list[str]:
    """Means over the group's complete sets; the ratios are of those means."""
    done = complete(summaries)
    count = f"{len(done)} of {_sets(len(summaries))}" if len(done) < len(summaries) else _sets(len(done))
    cells = [f"**mean, {label} ({count})**"]
    if not done:
        return cells + ["-"] * (len(MEAN_KEYS) + len(RATIOS) + 2)
    cells += [f"{mean_of(done, key):.2f}" for key in MEAN_KEYS]
    cells += [f"{mean_of(done, 'ours') / mean_of(done, peer):.2f}" if mean_of(done, peer) else "-" for peer in RATIOS]
    return cells + [f"{mean_of(done, 'train_s'):.2f}", f"{mean_of(done, 'encode_ms_t1000'):.2f}"]


def by_group(summaries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The summaries by group, in the order named, unseen, other; groups without sets left out."""
    groups = {group: [s for s in summaries if s["group"] == group] for group in [*GROUPS, OTHER_GROUP]}
    return {group: members for group, members in groups.items() if members}


HEADER = [
    "dataset (N train, N test, T, D)",
    "raw+ridge",
    "1-NN",
    *PEERS.values(),
    "ours",
    *RATIOS.values(),
    "train s",
    "encode ms/seq at T=1000",
]


@dataclass
class Target:
    key: str
    condition: str
    holds: bool
    detail: str
    required: bool = True
    values: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        verdict = ("holds" if self.holds else "DOES NOT HOLD") + ("" if self.required else ", reported, not required")
        return f"({self.key}) {self.condition}: {verdict} ({self.detail})"


def target_a(summaries: list[dict[str, Any]]) -> Target:
    """Ours against MiniRocket: over all sets, and over each target group's."""
    condition = (
        f"mean accuracy of ours >= {MEAN_VS_MINIROCKET} x MiniRocket's over all sets, "
        f">= {GROUP_VS_MINIROCKET} x over each group's ({', '.join(TARGET_GROUPS)})"
    )
    checks = [("all", summaries, MEAN_VS_MINIROCKET)]
    checks += [(g, members, GROUP_VS_MINIROCKET) for g, members in by_group(summaries).items() if g in TARGET_GROUPS]
    parts, values, holds = [], {}, True
    for name, members, factor in checks:
        done = [s for s in members if s["ours"] is not None and s["minirocket"] is not None]
        if len(done) < len(members):
            missing = ", ".join(s["name"] for s in members if s not in done)
            parts.append(f"{name}: {missing} did not run, so it cannot hold")
            holds = False
            continue
        ours, minirocket = mean_of(done, "ours"), mean_of(done, "minirocket")
        holds &= ours >= factor * minirocket
        values[name] = {"ours": ours, "minirocket": minirocket, "factor": factor, "sets": len(done)}
        parts.append(
            f"{name} ({_sets(len(done))}): {ours:.3f} vs {factor} x {minirocket:.3f} = {factor * minirocket:.3f}"
        )
    return Target("a", condition, holds and bool(summaries), "; ".join(parts), values=values)


def target_b(summaries: list[dict[str, Any]]) -> Target:
    losing = [
        f"{s['name']} {_acc(s['ours'])} vs {max(s['raw_ridge'], s['one_nn']):.3f}"
        for s in summaries
        if s["ours"] is None or s["ours"] <= max(s["raw_ridge"], s["one_nn"])
    ]
    detail = f"not on {', '.join(losing)}" if losing else f"on all {len(summaries)}"
    return Target("b", "on every set ours beats max(raw+ridge, 1-NN)", not losing, detail)


def target_c(summaries: list[dict[str, Any]]) -> Target:
    problems = [f"{s['name']} {p}" for s in summaries for p in s["problems"]]
    problems += [
        f"at chance: {s['name']} ({s['ours']:.3f}, chance {s['chance']:.3f})"
        for s in summaries
        if s["ours"] is not None and s["ours"] <= s["chance"] + CHANCE_MARGIN
    ]
    condition = f"no set refused or failed (ours or a peer), none at chance (within {CHANCE_MARGIN} of 1/#classes)"
    return Target("c", condition, not problems, "; ".join(problems) or "none")


def target_d(results: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> Target:
    times = [(r["name"], run["seed"], run["train_s"]) for r in results for run in ok_runs(r)]
    slow = [f"{name} seed {seed} {t:.1f} s" for name, seed, t in times if t > MAX_TRAIN_S]
    trained = [s for s in summaries if s["train_s"] is not None]
    condition = f"training <= {MAX_TRAIN_S:.0f} s on every set and seed, <= {MAX_MEAN_TRAIN_S:.0f} s mean over sets"
    if not times or len(trained) < len(summaries):
        return Target("d", condition, False, "not every set trained")
    longest, mean = max(t for _, _, t in times), mean_of(trained, "train_s")
    holds = not slow and mean <= MAX_MEAN_TRAIN_S
    detail = f"longest {longest:.1f} s, mean {mean:.1f} s" + (f"; over: {', '.join(slow)}" if slow else "")
    return Target("d", condition, holds, detail, values={"longest_s": longest, "mean_s": mean})


def target_e(results: list[dict[str, Any]]) -> Target:
    costs = [(r["name"], run["encode_ms_t1000"]) for r in results for run in ok_runs(r)]
    condition = f"encoding at T=1000 <= {MAX_ENCODE_MS:.0f} ms per sequence on {ENCODE_THREADS} thread, every set"
    trained = {r["name"] for r in results if ok_runs(r)}
    if not costs or len(trained) < len(results):
        return Target("e", condition, False, "not every set trained")
    worst = max(costs, key=lambda c: c[1])
    over = [f"{name} {ms:.2f} ms" for name, ms in costs if ms > MAX_ENCODE_MS]
    detail = f"slowest {worst[0]} {worst[1]:.2f} ms" + (f"; over: {', '.join(over)}" if over else "")
    return Target("e", condition, not over, detail, values={"slowest_ms": worst[1]})


def target_f(summaries: list[dict[str, Any]]) -> Target:
    done = complete(summaries)
    condition = "beyond: mean accuracy of ours >= MultiRocket's"
    if not done or len(done) < len(summaries):
        return Target("f", condition, False, "not every set ran", required=False)
    ours, multirocket = mean_of(done, "ours"), mean_of(done, "multirocket")
    detail = f"{ours:.3f} vs {multirocket:.3f} over {_sets(len(done))}"
    return Target("f", condition, ours >= multirocket, detail, False, {"ours": ours, "multirocket": multirocket})


def render(results: list[dict[str, Any]]) -> tuple[str, dict[str, Target]]:
    """The markdown table (a row per set, a mean row per group and over all), the target lines,
    and the targets."""
    summaries = [dataset_summary(r) for r in results]
    rows = [dataset_row(r) for r in results]
    groups = by_group(summaries)
    rows += [mean_row(group, members) for group, members in groups.items()]
    rows.append(mean_row("all", summaries))
    checks = [
        target_a(summaries),
        target_b(summaries),
        target_c(summaries),
        target_d(results, summaries),
        target_e(results),
        target_f(summaries),
    ]
    lines = [table(HEADER, rows), "", *(t.line() for t in checks)]
    return "\n".join(lines), {t.key: t for t in checks}


def _sets(count: int) -> str:
    return f"{count} set" if count == 1 else f"{count} sets"


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def failures(results: list[dict[str, Any]]) -> list[str]:
    """What crashed: failed trainings and peers (a refusal is the product's answer, not a crash)."""
    failed = [f"{r['name']} seed {run['seed']}" for r in results for run in r["runs"] if run["status"] == "failed"]
    failed += [
        f"{r['name']} {PEERS[peer]} seed {run['seed']}"
        for r in results
        for peer in PEERS
        for run in r["peers"][peer]
        if "error" in run
    ]
    return failed


def conditions(train_threads: int, sizes: PeerSizes, warm_up_s: float, device: str) -> dict[str, Any]:
    import aeon
    import sklearn

    return {
        "train_threads": train_threads,
        "encode_threads": ENCODE_THREADS,
        "device": device,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "aeon": aeon.__version__,
        "sklearn": sklearn.__version__,
        "python": sys.version.split()[0],
        "peer_n_jobs": train_threads,
        "peer_sizes": sizes.__dict__,
        "peer_warm_up_s": round(warm_up_s, 2),
    }


def notes(results: list[dict[str, Any]], seeds: list[int], overrides: dict[str, Any], warm_up_s: float) -> str:
    """What the table measured, and how."""
    ragged = [r["name"] for r in results if r["ragged"]]
    short = [f"{r['name']} (to {r['peer_length']})" for r in results if r["peer_length"] > r["lengths"][1]]
    traced = {run["traced"] for r in results for run in ok_runs(r)}
    served = {frozenset({True}): "traced", frozenset({False}): "eager"}.get(frozenset(traced), "traced or eager")
    lines = [
        f"{len(seeds)} seed(s) {seeds}; default preset"
        + (f" with overrides {overrides}" if overrides else " with no overrides")
        + "; ours is trained through enqueue/claim/run_job on the TRAIN split without labels and embedded by "
        f"the /encode engine (service.engine.InferenceEngine, {served} forwards, target encoder, not normalised). "
        "Accuracy on TEST of RidgeClassifierCV(alphas=logspace(-3, 3, 10)) on standardised features; 1-NN "
        "euclidean on raw values. Mean rows: means over the group's sets, ratios of those means. train s: the "
        f"version's train_seconds; ms/seq at T=1000: median of {COST_REPEATS} /encode calls of {COST_BATCH} "
        f"random sequences, {ENCODE_THREADS} inference thread."
    ]
    if ragged:
        lines.append(
            f"Ragged ({', '.join(ragged)}): ours trains and embeds each series at its own length; raw+ridge, "
            f"1-NN and the aeon peers (equal lengths only) see each series {PADDING}."
        )
    lines.append(
        f"Padded for the peers' minimum length ({MIN_PEER_LEN} steps): {', '.join(short)}."
        if short
        else f"No set is shorter than the peers' minimum length ({MIN_PEER_LEN} steps): none padded beyond its longest."
    )
    for peer, label in PEERS.items():
        seconds = ", ".join(
            f"{r['name']} {statistics.fmean(m['seconds'] for m in peer_ok(r, peer)):.1f} s"
            for r in results
            if peer_ok(r, peer)
        )
        lines.append(f"{label} fit+transform+ridge, mean over seeds: {seconds or 'none ran'}.")
    lines.append(f"Peers' numba and torch warm-up {warm_up_s:.1f} s, not counted.")
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    """What one invocation runs."""

    seeds: list[int]
    overrides: dict[str, Any]
    sizes: PeerSizes
    threads: int  # torch threads for training, and n_jobs for the peers
    strict: bool  # raise the first failure (--smoke) instead of recording it


def run_dataset(registry: Registry, split: Split, plan: Plan) -> dict[str, Any]:
    result: dict[str, Any] = {
        "name": split.name,
        "group": group_of(split.name),
        "label": split.label(),
        "n_train": len(split.x_train),
        "n_test": len(split.x_test),
        "lengths": list(split.lengths),
        "peer_length": max(split.lengths[1], MIN_PEER_LEN),
        "dim": split.dim,
        "classes": len(split.classes),
        "ragged": split.ragged,
        "raw_ridge": raw_ridge(split),
        "one_nn": one_nn(split),
        "peers": {peer: [] for peer in PEERS},
        "runs": [],
    }
    log(f"{split.label()}: raw+ridge {result['raw_ridge']:.3f}, 1-NN {result['one_nn']:.3f}")
    for seed in plan.seeds:
        for peer, run in run_peers(split, seed, plan.sizes, plan.threads, plan.strict).items():
            result["peers"][peer].append(run)
            outcome = f"{run['accuracy']:.3f} ({run['seconds']:.1f} s)" if "accuracy" in run else run["error"]
            log(f"  {PEERS[peer]} seed {seed}: {outcome}")
    try:
        dataset_id = registry.store_dataset(f"{split.name}-train", split.x_train)
    except Refused as exc:
        if plan.strict:
            raise
        result["runs"] = [{"seed": s, "status": "refused", "error": str(exc)} for s in plan.seeds]
        log(f"  ours: {exc}")
        return result
    for seed in plan.seeds:
        try:
            run = {"seed": seed, "status": "ok"} | run_ours(registry, split, dataset_id, seed, plan.overrides)
            log(f"  ours seed {seed}: {run['accuracy']:.3f} (train {run['train_s']:.1f} s)")
        except Refused as exc:
            if plan.strict:
                raise
            run = {"seed": seed, "status": "refused", "error": str(exc)}
            log(f"  ours seed {seed}: {exc}")
        except Exception as exc:
            if plan.strict:
                raise
            # One failed training must not lose the others' results; main exits 1 at the end.
            run = {"seed": seed, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            log(f"  ours seed {seed}: FAILED {run['error']}")
        result["runs"].append(run)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", help=f"comma-separated bundled names (default: {','.join(DEFAULT_DATASETS)})")
    parser.add_argument("--group", choices=list(GROUPS), help="only this group's datasets")
    parser.add_argument("--unseen", action="store_true", help=argparse.SUPPRESS)  # the old spelling of --group unseen
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated (default 0,1,2)")
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="a training config field, repeatable"
    )
    parser.add_argument("--json", type=Path, help="write every run's raw results and the targets here")
    parser.add_argument(
        "--smoke",
        "--quick",
        action="store_true",
        help=f"the same paths in seconds: {SMOKE_DATASET} (unless --datasets), seed 0, steps={SMOKE_STEPS}, "
        "small peers; stops at the first failure",
    )
    parser.add_argument("--list", action="store_true", help="list the datasets bundled with aeon and exit")
    return parser.parse_args(argv)


def chosen_datasets(args: argparse.Namespace) -> list[str]:
    if args.datasets:
        return [n.strip() for n in args.datasets.split(",") if n.strip()]
    if args.unseen or args.group:
        return GROUPS[args.group or "unseen"]
    return [SMOKE_DATASET] if args.smoke else DEFAULT_DATASETS


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print("\n".join(bundled_names()))
        return 0
    names = chosen_datasets(args)
    unknown = [n for n in names if n not in bundled_names()]
    if unknown:
        raise SystemExit(
            f"not a classification set bundled with aeon (nothing is downloaded): {unknown}; bundled: {bundled_names()}"
        )
    try:
        splits = [load_bundled(name) for name in names]
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    overrides = parse_overrides(args.override)
    if args.smoke:  # the product's own budget field, so the smoke trains as a full run does, only shorter
        overrides = {"steps": SMOKE_STEPS} | overrides
    check_overrides(overrides)

    from jepa_model.devices import resolve_device
    from training.settings import StorageSettings

    threads = StorageSettings().train_threads
    plan = Plan(
        seeds=[0] if args.smoke else [int(s) for s in args.seeds.split(",") if s.strip()],
        overrides=overrides,
        sizes=SMOKE_SIZES if args.smoke else PeerSizes(),
        threads=threads,
        strict=args.smoke,
    )
    started = time.perf_counter()
    warm_up_s = warm_up_peers(plan.sizes, threads, plan.strict)
    results = []
    with tempfile.TemporaryDirectory(prefix="jepa-realdata-") as tmp:
        registry = Registry(Path(tmp) / "data")
        device = str(resolve_device(registry.settings.device))
        try:
            for split in splits:
                results.append(run_dataset(registry, split, plan))
        finally:
            registry.close()
    report, targets = render(results)
    conds = conditions(threads, plan.sizes, warm_up_s, device)
    print(report)
    print()
    print(notes(results, plan.seeds, overrides, warm_up_s))
    print(
        f"Peers: {plan.sizes.describe()}, n_jobs {threads}. Conditions: torch {conds['torch']} on {device}, "
        f"{threads} training thread(s) (JEPA_TRAIN_THREADS), {ENCODE_THREADS} inference thread, "
        f"{conds['cores']} core(s) available, aeon {conds['aeon']}, scikit-learn {conds['sklearn']}, "
        f"Python {conds['python']}; {time.perf_counter() - started:.0f} s in all."
    )
    if args.json:
        payload = {
            "conditions": conds,
            "seeds": plan.seeds,
            "overrides": overrides,
            "smoke": args.smoke,
            "targets": {key: t.__dict__ for key, t in targets.items()},
            "datasets": results,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    failed = failures(results)
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
