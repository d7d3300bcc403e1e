"""Both presets at the seed's settings, on circles, lines and a mix, judged on unseen sequences.

    python -m bench.quality                 # 3 seeds, each preset's budget, 1 process (timings comparable)
    python -m bench.quality --seeds 0 --jobs 2

Prints one markdown table: each cell is the mean over seeds, ± half the range.
"""

from __future__ import annotations

import argparse
import time

from bench.common import LABELS, run_all, summarise, table

COLUMNS = list(LABELS)  # every metric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patterns", nargs="+", default=["circle", "linear", "mixed"])
    parser.add_argument("--presets", nargs="+", default=["seed", "default", "series"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: each preset's own (epochs or steps)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel training processes (1 keeps timings clean)")
    args = parser.parse_args()

    tasks = [
        (p, preset, {} if args.epochs is None else {"epochs": args.epochs}, s)
        for p in args.patterns
        for preset in args.presets
        for s in args.seeds
    ]
    started = time.perf_counter()
    results = run_all(tasks, args.jobs)
    rows = []
    for p in args.patterns:
        seed_epoch = None
        for preset in args.presets:
            runs = [r for (tp, tpreset, _, _), r in zip(tasks, results, strict=True) if (tp, tpreset) == (p, preset)]
            epoch_s = sum(r["epoch_s"] for r in runs) / len(runs)
            seed_epoch = epoch_s if preset == "seed" else seed_epoch
            speed = f"{epoch_s / seed_epoch:.2f}×" if seed_epoch else "-"
            rows.append([p, preset] + [summarise(runs, key) for key in COLUMNS] + [speed])
    budget = f"{args.epochs} epochs" if args.epochs else "each preset's own budget"
    header = ["pattern", "preset"] + [LABELS[key] for key in COLUMNS] + ["epoch time vs seed"]
    print(table(header, rows))
    print(
        f"\n{len(args.seeds)} seed(s) {args.seeds}, {budget}, 1000 training sequences, "
        f"1024 held-out sequences from unseen generator seeds; {time.perf_counter() - started:.0f} s in all."
    )


if __name__ == "__main__":
    main()
