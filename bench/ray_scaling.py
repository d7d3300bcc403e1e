"""Training time with 1 and 2 data-parallel Ray workers (JEPA_EXECUTOR=ray) against a local run.

    python -m bench.ray_scaling [--rounds 3] [--cases small,large]

Starts its own Ray head on free ports (`ray start --head --block --num-cpus 2`), then, for each
case and round, trains the same seeded job three ways: `fit` in this process (the local
executor's training, 1 torch thread), and `fit_on_ray` with workers=1 and workers=2 (1 torch
thread each), the executor a worker uses. "train s" is rank 0's time inside fit; "wall s" adds
Ray's start of the run (actors, imports, data through the object store) and its teardown.
Prints one markdown table: median (min-max) over the rounds, and the speed-up of 2 workers over
1 as the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from bench.serve import free_port
from jepa_model import ToySequenceDataset, fit, resolve_configs
from jepa_model.train import TrainResult

# The seed's recipe on toy trajectories; the global batch and lr are the same for every run.
CASES = {
    "small": ({"num_samples": 1024, "seq_len": 20}, {"epochs": 4, "batch_size": 32}),
    "large": ({"num_samples": 16_384, "seq_len": 64}, {"epochs": 4, "batch_size": 256}),
}


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, pythonpath: Path | None = None) -> Iterator[str]:
    """A Ray head in the foreground on free ports; yields its address, and stops it (and its
    cluster) on exit. Ray's socket paths must fit 107 bytes, hence the short temp dir."""
    ray = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    command = [ray, "start", "--head", "--block", "--port", str(port), "--num-cpus", str(num_cpus)]
    command += ["--include-dashboard", "false", "--temp-dir", temp_dir]
    command += ["--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    log = Path(temp_dir) / "head.log"
    with log.open("wb") as out:
        head = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([ray, "status", "--address", address], capture_output=True, env=env).returncode:
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not start:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(5)
        # Whatever of the cluster outlived the head (its agents may) goes too: the group is all its.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        subprocess.run(["rm", "-rf", temp_dir])


def timed(run: Callable[[], TrainResult]) -> tuple[float, float, float]:
    """(wall seconds, seconds inside fit, final loss)."""
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result.seconds, result.losses[-1]


def measure(address: str, case: str, rounds: int) -> dict[str, list[tuple[float, float, float]]]:
    from training.execution.ray_executor import fit_on_ray

    data, train = CASES[case]
    model_config, train_config = resolve_configs("seed", {**train, "seed": 0})
    dataset = ToySequenceDataset(**data, pattern_type="mixed", seed=0)
    runs: dict[str, list[tuple[float, float, float]]] = {"local": [], "ray, 1 worker": [], "ray, 2 workers": []}
    torch.set_num_threads(1)
    for _ in range(rounds):
        runs["local"].append(timed(lambda: fit(dataset, model_config, train_config)))
        for workers, name in ((1, "ray, 1 worker"), (2, "ray, 2 workers")):
            config = type(train_config).from_dict({**train_config.to_dict(), "workers": workers})
            ray_run = lambda c=config: fit_on_ray(  # noqa: E731
                address, dataset, model_config, c, lambda _: None, None, 1, False, f"bench-{case}"
            )
            runs[name].append(timed(ray_run))
    return runs


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    columns = ["data (sequences x steps), epochs, batch", "run", "train s", "wall s", "final loss"]
    print("| " + " | ".join([*columns, "speed-up, 2 workers over 1"]) + " |")
    print("|---|---|---|---|---|---|")
    with ray_head(pythonpath=Path(__file__).resolve().parents[1]) as address:
        for case in args.cases.split(","):
            runs = measure(address, case, args.rounds)
            data, train = CASES[case]
            label = f"{data['num_samples']:,} x {data['seq_len']}, {train['epochs']}, {train['batch_size']}"
            one, two = runs["ray, 1 worker"], runs["ray, 2 workers"]
            ratios = [a[1] / b[1] for a, b in zip(one, two, strict=True)]
            for name, measured in runs.items():
                speedup = "" if name != "ray, 2 workers" else f"{statistics.median(ratios):.2f}x"
                train_s, wall_s = [m[1] for m in measured], [m[0] for m in measured]
                loss = statistics.median(m[2] for m in measured)
                print(f"| {label} | {name} | {spread(train_s)} | {spread(wall_s)} | {loss:.4f} | {speedup} |")
    print(f"\n{args.rounds} rounds; {os.cpu_count()} CPUs; torch {torch.__version__}; 1 torch thread per process.")


if __name__ == "__main__":
    main()
