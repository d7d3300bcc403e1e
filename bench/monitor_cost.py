"""What the per-epoch collapse monitor costs: training time with and without it, in one run.

python -m bench.monitor_cost
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import HELD_OUT, NUM_SAMPLES, SEQ_LEN, table
from jepa_model import ToySequenceDataset, fit, resolve_configs
from jepa_model.metrics import EpochMonitor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each, to even out drift")
    args = parser.parse_args()

    torch.set_num_threads(1)
    model_config, train_config = resolve_configs(args.preset, {"epochs": args.epochs, "seed": 0}, (2, SEQ_LEN))
    train = ToySequenceDataset(NUM_SAMPLES, SEQ_LEN, "mixed", seed=0)
    monitor = EpochMonitor(ToySequenceDataset(HELD_OUT, SEQ_LEN, "mixed", seed=1), 8, 4)
    seconds = {"without monitor": 0.0, "with monitor": 0.0}
    for _ in range(args.repeats):
        for name in seconds:
            started = time.perf_counter()
            fit(
                train,
                model_config,
                train_config,
                on_epoch=lambda _r: None,
                monitor=monitor if "with " in name else None,
            )
            seconds[name] += time.perf_counter() - started
    base = seconds["without monitor"]
    rows = [[name, f"{s / args.repeats / args.epochs:.4f}", f"{s / base:.3f}×"] for name, s in seconds.items()]
    print(table(["training", "s/epoch", "vs without"], rows))
    print(f"\n{args.preset} preset, mixed toy data, {args.epochs} epochs, {args.repeats} alternating repeats")


if __name__ == "__main__":
    main()
