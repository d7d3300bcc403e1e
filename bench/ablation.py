"""What each change of the `trajectory` preset (called `default` below, its name when this was
written) buys, measured on unseen sequences.

    python -m bench.ablation --jobs 2

The first rows add the default's changes to the seed one at a time; the rest each change one
thing in the default, to show what was tried and dropped. docs/ablation.md records a run.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import LABELS, run_all, summarise, table

STEPS: list[tuple[str, dict[str, Any]]] = [
    ("seed", {}),
    ("+ standardised inputs, AdamW wd 0.05", {"normalize_inputs": True, "optimizer": "adamw", "weight_decay": 0.05}),
    ("+ centred embeddings (batch norm), MSE", {"output_norm": "batch", "loss": "mse"}),
    ("+ 4 target spans at offsets 0-4, offset told", {"num_targets": 4, "max_offset": 4, "predictor_offsets": 5}),
    ("+ last-step and mean pooling", {"pooling": "last_mean"}),
    ("+ 1-layer LSTM", {"num_layers": 1}),
    ("+ EMA momentum ramp 0.996 -> 1.0", {"momentum": 0.996, "momentum_end": 1.0}),
    ("+ step displacements as inputs too", {"input_deltas": True}),
    ("+ light VICReg terms, 0.3 / 0.01", {"var_weight": 0.3, "cov_weight": 0.01}),
    ("+ one target span, right after the context", {"num_targets": 1, "max_offset": 0}),
    ("+ lr 5e-3 on a cosine schedule", {"lr": 5e-3, "lr_schedule": "cosine"}),
    ("+ first-step pooling, linear skip in the head", {"pooling": "first_last_mean", "head_skip": True}),
    ("+ 40-dimensional embeddings (= default)", {"repr_dim": 40}),
]
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("default, constant EMA momentum 0.99", {"momentum": 0.99, "momentum_end": None}),
    (
        "default, layer-normed targets + smooth L1 (I-JEPA)",
        {"output_norm": "none", "loss": "smooth_l1", "target_norm": "layer"},
    ),
    ("default, VICReg terms 1.0 / 0.04", {"var_weight": 1.0, "cov_weight": 0.04}),
    ("default, InfoNCE instead of MSE", {"loss": "infonce"}),
    ("default, transformer encoder", {"encoder": "transformer"}),
    ("default, bidirectional LSTM", {"bidirectional": True}),
    ("default, context lengths 4..16", {"min_context_len": 4}),
    ("default, 4 target spans at offsets 0-4", {"num_targets": 4, "max_offset": 4}),
    ("default, 2 contexts per sequence", {"num_contexts": 2}),
    ("default, no skip in the head", {"head_skip": False}),
    ("default, 32-dimensional embeddings", {"repr_dim": 32}),
    ("default, 64-dimensional embeddings", {"repr_dim": 64}),
]
COLUMNS = [
    "retrieval", "retrieval_ratio", "rankme", "embedding_std",
    "probe_radius_r2", "probe_centre_r2", "probe_start_r2", "probe_velocity_r2", "epoch_s",
]  # fmt: skip


def configurations() -> list[tuple[str, dict[str, Any]]]:
    rows, cumulative = [], {}
    for name, change in STEPS:
        cumulative = {**cumulative, **change}
        rows.append((name, dict(cumulative)))
    return rows + [(name, {**cumulative, **change}) for name, change in VARIANTS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patterns", nargs="+", default=["circle", "linear", "mixed"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    configs = configurations()
    tasks = [
        (pattern, "seed", {**overrides, "epochs": args.epochs}, seed)
        for _, overrides in configs
        for pattern in args.patterns
        for seed in args.seeds
    ]
    started = time.perf_counter()
    results = iter(run_all(tasks, args.jobs))
    rows = []
    for name, _ in configs:
        for pattern in args.patterns:
            runs = [next(results) for _ in args.seeds]
            rows.append([name, pattern] + [summarise(runs, key) for key in COLUMNS])
    print(table(["configuration", "pattern"] + [LABELS[key] for key in COLUMNS], rows))
    print(
        f"\nseeds {args.seeds}, {args.epochs} epochs, 1000 training and 1024 unseen held-out sequences, "
        f"{args.jobs} runs at a time; {time.perf_counter() - started:.0f} s in all."
    )


if __name__ == "__main__":
    main()
