"""bench.anomaly: its metrics and baselines on synthetic series, and `--smoke` end to end in a
subprocess (a real series through upload, the job path and the engine /score calls). Skipped
without the bench extra (aeon, scikit-learn, sktime, stumpy)."""

import subprocess
import sys

import numpy as np
import pytest

from tests.extras import require

require("aeon", "sklearn", "sktime", "stumpy", extra="bench")

from bench import anomaly  # noqa: E402


def periodic_case(anomaly_at: int = 1500) -> anomaly.Case:
    t = np.arange(2000)
    x = np.sin(2 * np.pi * t / 40).astype(np.float32)[:, None]
    x[anomaly_at : anomaly_at + 30] = 0.0  # a flat stretch no normal window holds
    labels = np.zeros(2000, dtype=bool)
    labels[anomaly_at : anomaly_at + 30] = True
    return anomaly.Case([x[:1000]], [x], [labels], [1000], tolerance=100)


def test_the_ucr_rule_counts_a_hit_within_max_100_and_the_anomalys_length() -> None:
    case = periodic_case()
    near = np.zeros(2000)
    near[1500 + 30 + 99] = 1.0  # 99 steps past the anomaly's end: a hit
    far = np.zeros(2000)
    far[1500 + 30 + 101] = 1.0
    early = np.zeros(2000)
    early[900] = 5.0  # before the scored part: not counted
    early[1400] = 1.0  # 100 steps before the anomaly: a hit
    assert anomaly.measure(case, [near])["top1"] == 1.0
    assert anomaly.measure(case, [far])["top1"] == 0.0
    assert anomaly.measure(case, [early])["top1"] == 1.0
    exact = anomaly.measure(case, [case.labels[0].astype(float)])
    assert exact == {"top1": 1.0, "auc_pr": pytest.approx(1.0)}


def test_the_baselines_find_a_plain_anomaly() -> None:
    case = periodic_case()
    for scores in (anomaly.discord_scores(case.train, case.series[0]), anomaly.ar_scores(case.train, case.series[0])):
        assert scores.shape == (2000,)
        assert 1400 <= int(np.nanargmax(scores)) < 1630
        assert anomaly.measure(case, [scores])["top1"] == 1.0


def test_smoke_runs_the_product_path_and_prints_its_tables() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.anomaly", "--smoke"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("| series | scorer | top-1 hits | AUC-PR | train s | score s |")
    assert "| yahoo | ours: /score, trained with {} (memory) | 1/1 |" in result.stdout  # hit or miss, a count
    assert "| yahoo | matrix-profile discord |" in result.stdout and "| yahoo | AR(32) error |" in result.stdout
    assert "| 10,000 |" in result.stdout
