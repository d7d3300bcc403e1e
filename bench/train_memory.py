"""The training-memory estimate (jepa_model/budget.py) against what training really peaks at.

    python -m bench.train_memory

Each configuration trains for 2 optimizer steps in a fresh process (one torch thread); the table
compares that process's peak RSS with the estimate POST /train checks against JEPA_TRAIN_MEMORY_MB.
The estimate must stay above the peak: a job it admits must fit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASES = [
    {"dataset": {"num_samples": 1000, "seq_len": 20}, "config": {"epochs": 50}},
    {"dataset": {"num_samples": 2000, "seq_len": 200}, "config": {"preset": "series", "batch_size": 64}},
    {
        "dataset": {"num_samples": 500, "seq_len": 1000},
        "config": {"preset": "series", "batch_size": 64, "hidden_dim": 128},
    },
    {
        "dataset": {"num_samples": 4000, "seq_len": 64},
        "config": {"preset": "trajectory", "batch_size": 1024, "hidden_dim": 256, "num_layers": 4},
    },
    {"dataset": {"num_samples": 20000, "seq_len": 100}, "config": {"preset": "trajectory", "encoder": "transformer"}},
]


def measure(case: dict) -> dict:
    """Runs in a child process: the estimate, then 2 training steps, then the peak RSS."""
    import resource

    import torch

    from jepa_model.train import fit
    from training.execution.spec import TrainingSpec

    torch.set_num_threads(1)
    spec = TrainingSpec.model_validate({"model": "bench", **case})
    model_config, train_config = spec.configs()
    train_config = type(train_config).from_dict({**train_config.to_dict(), "epochs": 1, "steps": 2})
    estimate = spec.estimate().total_bytes
    fit(spec.dataset.build(), model_config, train_config)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"estimate": estimate, "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cases", type=int, default=len(CASES), help="measure the first N configurations")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(json.loads(args.child))))
        return
    print("| data (N x T) | config | estimate MB | peak RSS MB | estimate / peak |")
    print("|---|---|---|---|---|")
    for case in CASES[: args.cases]:
        out = subprocess.run(
            [sys.executable, "-m", "bench.train_memory", "--child", json.dumps(case)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        data = case["dataset"]
        print(
            f"| {data['num_samples']} x {data['seq_len']} | {json.dumps(case['config'])} | "
            f"{result['estimate'] >> 20} | {result['peak'] >> 20} | {result['estimate'] / result['peak']:.2f} |"
        )


if __name__ == "__main__":
    main()
