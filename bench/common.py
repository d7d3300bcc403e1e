"""Shared by the benchmarks: train one preset on toy data and evaluate it on unseen sequences."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from jepa_model import ToySequenceDataset, fit, resolve_configs
from jepa_model.metrics import evaluate

# The seed's settings (RECIPE.md): 1000 sequences of length 20, noise 0.1, context 8, target 4.
NUM_SAMPLES, SEQ_LEN, HELD_OUT = 1000, 20, 1024
HELD_OUT_SEED_OFFSET = 10_000  # held-out data comes from a generator seed no training run uses


# Column labels for every metric a table may show, in display order.
LABELS = {
    "cosine": "cosine",
    "retrieval": "retrieval@256",
    "oracle_retrieval": "oracle",
    "retrieval_ratio": "ratio",
    "fixed_oracle_retrieval": "oracle (fixed)",
    "fixed_retrieval_ratio": "ratio (fixed)",
    "embedding_oracle_retrieval": "emb. oracle",
    "retrieval_circle": "retrieval circles (mix)",
    "retrieval_linear": "retrieval lines (mix)",
    "rankme": "RankMe",
    "embedding_std": "emb std",
    "probe_radius_r2": "R² radius",
    "probe_centre_r2": "R² centre",
    "probe_start_r2": "R² start",
    "probe_velocity_r2": "R² velocity",
    "probe_kind_acc": "kind acc",
    "epoch_s": "s/epoch",
    "train_s": "train s",
}


def run_one(pattern: str, preset: str, overrides: dict[str, Any], seed: int) -> dict[str, float]:
    torch.set_num_threads(1)  # one core per run; runs are spread over processes instead
    model_config, train_config = resolve_configs(preset, {**overrides, "seed": seed}, (2, SEQ_LEN))
    train = ToySequenceDataset(NUM_SAMPLES, SEQ_LEN, pattern, seed=seed)
    held_out = ToySequenceDataset(HELD_OUT, SEQ_LEN, pattern, seed=seed + HELD_OUT_SEED_OFFSET)
    result = fit(train, model_config, train_config)
    metrics = evaluate(result.model, held_out, train_config.context_len, train_config.target_len)
    # The seed's protocol too: one window per sequence at a fixed start, where every circle's
    # window shares its phase, so the oracle (and any model) reads lower than at random starts.
    fixed = evaluate(result.model, held_out, train_config.context_len, train_config.target_len, start=0)
    metrics |= {f"fixed_{key}": fixed[key] for key in ("oracle_retrieval", "retrieval_ratio")}
    return metrics | {"train_s": result.seconds, "epoch_s": result.seconds / len(result.losses)}


def run_all(tasks: Iterable[tuple[str, str, dict[str, Any], int]], jobs: int) -> list[dict[str, float]]:
    tasks = list(tasks)
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(run_one, *zip(*tasks, strict=True)))


def summarise(runs: list[dict[str, float]], key: str) -> str:
    values = [run[key] for run in runs if key in run]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    spread = (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
    return f"{mean:.2f}" if spread < 0.005 else f"{mean:.2f}±{spread:.2f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
