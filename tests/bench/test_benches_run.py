"""The benchmarks still run and print their tables (tiny settings; no figure is asserted)."""

import importlib.util
import subprocess
import sys

import pytest

WITHOUT_RAY = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")


@pytest.mark.parametrize(
    ("module", "args", "header"),
    [
        ("bench.quality", ["--epochs", "1", "--seeds", "0", "--patterns", "linear"], "| pattern | preset | cosine"),
        ("bench.ablation", ["--epochs", "1", "--patterns", "circle"], "| configuration | pattern |"),
        ("bench.monitor_cost", ["--epochs", "1", "--repeats", "1"], "| training | s/epoch |"),
        ("bench.train_speed", ["--rounds", "1"], "| preset | s/epoch | sequences/s |"),
        ("bench.serve", ["--seconds", "0.3", "--warmup", "0.2", "--rounds", "1"], "| scenario (unit) | peer |"),
        ("bench.train_memory", ["--cases", "1"], "| data (N x T) | config | estimate MB |"),
        ("bench.access_log_cost", ["--rounds", "1", "--seconds", "0.5"], "| access log | single sequences"),
        ("bench.wakeups", ["--jobs", "1"], "| database, wake-up | queued"),  # PostgreSQL, as the suite has
        ("bench.fairness", ["--smoke"], "| load | small p50 ms | small p99 ms |"),
        pytest.param(
            "bench.ray_scaling",
            ["--rounds", "1", "--cases", "small"],
            "| data (sequences x steps), epochs, batch | run |",
            marks=WITHOUT_RAY,
        ),
    ],
)
def test_bench_prints_its_table(module: str, args: list[str], header: str) -> None:
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(header)


def test_serve_bench_serves_a_series_model() -> None:
    """`bench.serve --model series`: every peer serves the conv step model it trains through the API."""
    args = ["--model", "series", "--seconds", "0.3", "--warmup", "0.2", "--rounds", "1"]
    result = subprocess.run([sys.executable, "-m", "bench.serve", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("| scenario (unit) | peer |")
    assert "Model served by every peer: `series`, preset series: conv encoder (steps objective), 1-D input" in (
        result.stdout
    )
    assert "did not start" not in result.stdout and "non-200" not in result.stdout, result.stdout
