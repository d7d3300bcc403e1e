"""The benchmarks still run in tiny settings and print complete tables of finite numbers.

Each bench runs in a subprocess; the markdown table it prints first is parsed, and must have the
header it documents and every row its plan makes, in order, with every cell filled: a finite
number (with a unit, a ± spread or a (min–max) range), or the exact placeholder the bench prints
where a figure does not apply (a circle probe on lines, the naive peer's ratio to itself). The
figures are not compared with anything: at these sizes they mean nothing. A bench module added
without a run here (or a --smoke run in a test file of its own) fails test_every_bench_is_run.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench import ablation, quality, ray_scaling, serve, train_memory, train_speed
from bench.common import LABELS
from tests.extras import needs

WITHOUT_RAY = needs("ray", extra="ray")
BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"

NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
# 0.95, 1,234, 1.00×, 1.05x, 0.45±0.02, 12 (10–14), 3.2× (3.0–3.4), 12 (10-14)
NUMBER_CELL = re.compile(rf"{NUMBER}(?:±{NUMBER})?[×x]?(?: \({NUMBER}[–-]{NUMBER}\))?")

Labels = tuple[str, ...]
# The placeholder a bench prints in (row, column) where no figure applies; None where one must.
Placeholder = Callable[[Labels, str], str | None]


def no_placeholder(_labels: Labels, _column: str) -> None:
    return None


@dataclass(frozen=True)
class Bench:
    module: str
    args: list[str]
    header: list[str]
    rows: list[Labels]  # each row's leading label cells, in the order printed
    placeholder: Placeholder = no_placeholder
    exact: dict[str, str] = field(default_factory=dict)  # a column every row must hold this value in
    check: Callable[[list[list[str]]], None] | None = None  # what the rows must show besides


def cells(line: str) -> list[str]:
    assert line.startswith("|") and line.endswith("|"), f"not a table row: {line!r}"
    return [cell.strip() for cell in line[1:-1].split("|")]


def first_table(stdout: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the markdown table that `stdout` starts with."""
    assert stdout.startswith("|"), f"the output does not start with a table:\n{stdout[:2000]}"
    header, rule, *rows = [
        cells(line.rstrip()) for line in itertools.takewhile(lambda s: s.startswith("|"), stdout.splitlines())
    ]
    assert set("".join(rule)) == {"-"} and len(rule) == len(header), f"no rule under the header: {rule}"
    return header, rows


def assert_finite_number(cell: str, where: str) -> None:
    assert NUMBER_CELL.fullmatch(cell), f"{where}: {cell!r} is not a number"
    values = [float(number.replace(",", "")) for number in re.findall(r"\d[\d,]*(?:\.\d+)?", cell)]
    assert all(math.isfinite(value) for value in values), f"{where}: {cell!r}"


def assert_complete_table(bench: Bench, stdout: str) -> None:
    header, rows = first_table(stdout)
    assert header == bench.header
    keys = len(bench.rows[0])
    assert [tuple(row[:keys]) for row in rows] == bench.rows, f"rows missing, extra or out of order:\n{stdout}"
    for row in rows:
        assert len(row) == len(header), f"{len(row)} cells under {len(header)} columns: {row}"
        labels = tuple(row[:keys])
        for column, cell in zip(header[keys:], row[keys:], strict=True):
            where = f"{' / '.join(labels)}, {column}"
            if column in bench.exact:
                assert cell == bench.exact[column], f"{where}: {cell!r}"
            elif (placeholder := bench.placeholder(labels, column)) is not None:
                assert cell == placeholder, f"{where}: {cell!r}, where the bench prints {placeholder!r}"
            else:
                assert_finite_number(cell, where)
    if bench.check is not None:
        bench.check(rows)


def run_bench(module: str, args: list[str]) -> str:
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    return result.stdout


# --- each bench's plan ---------------------------------------------------------------------------


def quality_plan() -> Bench:
    # Lines have no circle to probe and no mix to split: those columns print "-".
    not_on_lines = {"retrieval circles (mix)", "retrieval lines (mix)", "R² radius", "R² centre", "kind acc"}
    return Bench(
        "bench.quality",
        ["--epochs", "1", "--seeds", "0", "--patterns", "linear"],
        ["pattern", "preset", *(LABELS[key] for key in quality.COLUMNS), "epoch time vs seed"],
        [("linear", preset) for preset in ("seed", "default", "series")],
        lambda _labels, column: "-" if column in not_on_lines else None,
    )


def ablation_plan() -> Bench:
    return Bench(
        "bench.ablation",
        ["--epochs", "1", "--patterns", "circle"],
        ["configuration", "pattern", *(LABELS[key] for key in ablation.COLUMNS)],
        [(name, "circle") for name, _ in ablation.configurations()],
        lambda _labels, column: "-" if column in {"R² start", "R² velocity"} else None,  # line probes
    )


def serve_plan(model: str, input_dim: int, peers: tuple[str, ...] = serve.ALL_PEERS) -> Bench:
    """Every scenario with each of `peers` that can run here, after the raw model's two rows."""
    runnable = [p for p in peers if importlib.util.find_spec("litserve") or not p.startswith("litserve")]
    raw_rows = [
        (f"raw model in process, 256 x {serve.SEQ_LEN} steps a batch (seq/s)", "-"),
        (f"raw model in process, 256 x {serve.EQUAL_LEN} steps a batch (points/s)", "-"),
    ]
    plan = serve.scenarios(4, input_dim, None if model == "default" else model)
    rows = raw_rows + [
        (f"{scenario.name} ({scenario.unit})", serve.LABELS[peer])
        for scenario in plan
        for peer in scenario.peers
        if peer in runnable
    ]
    # Ratios with no peer to compare with: the naive endpoint (it takes JSON of equal lengths only),
    # and the equal-length twin (for mixed lengths only).
    unpaired = {
        (f"{scenario.name} ({scenario.unit})", column)
        for scenario in plan
        for column, paired in (("vs naive", "naive" in scenario.peers), ("mixed / equal", scenario.equal))
        if not paired
    }

    def placeholder(labels: Labels, column: str) -> str | None:
        if labels in raw_rows:
            return None if column in {"throughput", "vs raw"} else "-"
        return "-" if (labels[0], column) in unpaired else None

    return Bench(
        "bench.serve",
        ["--model", model, "--seconds", "0.3", "--warmup", "0.2", "--rounds", "1", "--peers", ",".join(peers)],
        serve.HEADER,
        rows,
        placeholder,
    )


def ray_scaling_plan() -> Bench:
    data, train = ray_scaling.CASES["small"]
    case = f"{data['num_samples']:,} x {data['seq_len']}, {train['epochs']}, {train['batch_size']}"
    speedup = "speed-up, 2 workers over 1"

    def one_and_two_workers_agree(rows: list[list[str]]) -> None:
        # The same seed and global batch: both runs see the same windows, and DDP's averaged
        # gradient is the whole batch's, so the losses agree to float rounding (printed to 4 places).
        loss = {row[1]: float(row[4]) for row in rows}
        assert loss["ray, 2 workers"] == pytest.approx(loss["ray, 1 worker"], abs=1.5e-4), loss

    return Bench(
        "bench.ray_scaling",
        ["--rounds", "1", "--cases", "small"],
        ["data (sequences x steps), epochs, batch", "run", "train s", "wall s", "final loss", speedup],
        [(case, run) for run in ("local", "ray, 1 worker", "ray, 2 workers")],
        lambda labels, column: "" if column == speedup and labels[1] != "ray, 2 workers" else None,
        check=one_and_two_workers_agree,
    )


BENCHES = [
    pytest.param(quality_plan(), id="quality"),
    pytest.param(ablation_plan(), id="ablation"),
    pytest.param(
        Bench(
            "bench.monitor_cost",
            ["--epochs", "1", "--repeats", "1"],
            ["training", "s/epoch", "vs without"],
            [("without monitor",), ("with monitor",)],
        ),
        id="monitor_cost",
    ),
    pytest.param(
        Bench(
            "bench.train_speed",
            ["--rounds", "1"],
            ["preset", "s/epoch", "sequences/s", "epoch time vs seed"],
            [(preset,) for preset in train_speed.PRESETS],
        ),
        id="train_speed",
    ),
    # The first-start model, served by the service and the naive endpoint (the ratios' baseline)
    # only: every peer starts and serves in test_serve_bench_serves_a_series_model, and the LitServe
    # and 2-process peers' start-up (ten processes, each importing torch) is paid there once.
    pytest.param(serve_plan("default", 2, ("naive", "service")), id="serve"),
    pytest.param(
        Bench(
            "bench.train_memory",
            ["--cases", "1"],
            ["data (N x T)", "config", "estimate MB", "peak RSS MB", "estimate / peak"],
            [
                (f"{case['dataset']['num_samples']} x {case['dataset']['seq_len']}", json.dumps(case["config"]))
                for case in train_memory.CASES[:1]
            ],
        ),
        id="train_memory",
    ),
    pytest.param(
        Bench(
            "bench.access_log_cost",
            ["--rounds", "1", "--seconds", "0.5"],
            ["access log", "single sequences, 64 conn. (req/s)", "with log / without"],
            [("on (JEPA_LOG_LEVEL=info, the default)",), ("off (JEPA_LOG_LEVEL=warning)",)],
        ),
        id="access_log_cost",
    ),
    pytest.param(
        Bench(
            "bench.wakeups",  # PostgreSQL, as the suite has
            ["--jobs", "1"],
            ["database, wake-up", "queued → claimed (ms)", "cancel → training process gone (ms)"],
            [("PostgreSQL, LISTEN/NOTIFY",), ("SQLite, polling every 1 s",)],
        ),
        id="wakeups",
    ),
    pytest.param(
        Bench(
            "bench.fairness",
            ["--smoke"],
            ["load", "small p50 ms", "small p99 ms", "small max ms", "small requests", "heavy answered", "non-200"],
            [("idle",), ("forecast x4",), ("memory x4",)],
            exact={"non-200": "0"},  # a refused small or heavy request is a failure, not a figure
        ),
        id="fairness",
    ),
    pytest.param(ray_scaling_plan(), id="ray_scaling", marks=WITHOUT_RAY),
]


@pytest.mark.parametrize("bench", BENCHES)
def test_bench_prints_a_complete_table(bench: Bench) -> None:
    assert_complete_table(bench, run_bench(bench.module, bench.args))


def test_serve_bench_serves_a_series_model() -> None:
    """`bench.serve --model series`: every peer serves the conv step model it trains through the API."""
    bench = serve_plan("series", 1)
    stdout = run_bench(bench.module, bench.args)
    assert_complete_table(bench, stdout)
    assert "Model served by every peer: `series`, preset series: conv encoder (steps objective), 1-D input" in stdout
    assert "did not start" not in stdout and "non-200" not in stdout, stdout


# --- every bench is run somewhere ------------------------------------------------------------------

# Benches whose --smoke runs in a test file of their own, which checks their several tables.
SMOKED_ELSEWHERE = {"bench.anomaly": "test_anomaly.py", "bench.realdata": "test_realdata.py"}
# Not benches: servers that bench.serve starts as its peers.
PEER_APPS = {"bench.litserve_app"}


def bench_sources() -> dict[str, str]:
    return {f"bench.{path.stem}": path.read_text() for path in sorted(BENCH_DIR.glob("*.py"))}


def test_every_bench_is_run() -> None:
    sources = bench_sources()
    runnable = {module for module, source in sources.items() if 'if __name__ == "__main__":' in source}
    smoke = {module for module, source in sources.items() if '"--smoke"' in source}
    run_here = {param.values[0].module: param.values[0].args for param in BENCHES}
    assert runnable - set(run_here) - set(SMOKED_ELSEWHERE) - PEER_APPS == set(), "benches no test runs"
    assert {module for module in smoke & set(run_here) if "--smoke" not in run_here[module]} == set()
    for module, test_file in SMOKED_ELSEWHERE.items():
        assert module in smoke, f"{module} has no --smoke mode for {test_file} to run"
        assert f'"{module}", "--smoke"' in (Path(__file__).parent / test_file).read_text(), test_file
    assert set(sources) >= set(run_here) | set(SMOKED_ELSEWHERE) | PEER_APPS, "a listed bench no longer exists"


def test_the_table_check_refuses_gaps_and_non_numbers() -> None:
    """The checks above would pass anything if these did not fail."""
    bench = Bench("bench.example", [], ["name", "rate"], [("a",), ("b",)])
    assert_complete_table(bench, "| name | rate |\n|---|---|\n| a | 1,234 (1,200–1,300) |\n| b | 0.95× |\n")
    for broken in (
        "| name | rate |\n|---|---|\n| a | 1.0 |\n",  # a row missing
        "| name | rate |\n|---|---|\n| a | 1.0 |\n| b |  |\n",  # an empty cell
        "| name | rate |\n|---|---|\n| a | 1.0 |\n| b | nan |\n",
        "| name | rate |\n|---|---|\n| a | inf (1.0–inf) |\n| b | 2.0 |\n",
        "| name | rate |\n|---|---|\n| a | - |\n| b | 2.0 |\n",  # a placeholder the bench does not print there
    ):
        with pytest.raises(AssertionError):
            assert_complete_table(bench, broken)
