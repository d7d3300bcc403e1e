"""Training throughput of both presets at the seed's settings, as sequences per second per epoch.

    python -m bench.train_speed [--rounds 5]

The presets take turns, an epoch each per round, in one process on one thread, so both see the
same machine state; the table gives medians over rounds and the ratio to the seed preset.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
from torch.utils.data import DataLoader

from bench.common import NUM_SAMPLES, SEQ_LEN, table
from jepa_model import JEPA, ToySequenceDataset, collate_ragged, resolve_configs
from jepa_model.train import StepSchedule, input_statistics, make_optimizer, train_epoch

PRESETS = ("seed", "trajectory")  # what "default" picks for toy trajectories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pattern", default="mixed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = ToySequenceDataset(NUM_SAMPLES, SEQ_LEN, args.pattern, seed=0)

    runs = {}
    for preset in PRESETS:
        model_config, train_config = resolve_configs(preset, {"seed": 0}, (2, SEQ_LEN))
        if train_config.normalize_inputs:
            mean, std = input_statistics(dataset, model_config)
            model_config = replace(model_config, input_mean=mean, input_std=std)
        model = JEPA.from_config(model_config)
        optimizer = make_optimizer(model, train_config)
        loader = DataLoader(dataset, batch_size=train_config.batch_size, shuffle=True, collate_fn=collate_ragged)
        schedule = StepSchedule(train_config, optimizer, train_config.epochs * len(loader))
        runs[preset] = (model, optimizer, loader, train_config, schedule, [])

    for _ in range(args.rounds + 1):  # the first round warms up and is not counted
        for model, optimizer, loader, config, schedule, seconds in runs.values():
            started = time.perf_counter()
            train_epoch(model, optimizer, loader, config, schedule=schedule)
            seconds.append(time.perf_counter() - started)

    rows = []
    seed_s = statistics.median(runs["seed"][5][1:])
    for preset, run in runs.items():
        epoch_s = statistics.median(run[5][1:])
        rows.append([preset, f"{epoch_s:.3f}", f"{NUM_SAMPLES / epoch_s:,.0f}", f"{epoch_s / seed_s:.2f}×"])
    print(table(["preset", "s/epoch", "sequences/s", "epoch time vs seed"], rows))
    print(
        f"\n{args.rounds} rounds (median), {NUM_SAMPLES} {args.pattern} sequences of length {SEQ_LEN}, "
        "batch 32, one thread; the presets alternate epoch by epoch."
    )


if __name__ == "__main__":
    main()
