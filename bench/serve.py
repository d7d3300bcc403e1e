"""Serving speed: the raw model in process, a naive FastAPI endpoint, LitServe and the service.

    python -m bench.serve [--rounds 3] [--seconds 4] [--peers naive,litserve,litserve2,service,service2]
                          [--model default|series]

Starts `jepa serve` with its default settings (it trains a small default model first), then, on
that model's checkpoint, the naive endpoint (bench/naive_app.py), LitServe with 1 and with 2
inference workers (bench/litserve_app.py; skipped when litserve is not installed:
`pip install -e '.[bench]'`) and `jepa serve --workers 2` (skipped when the CLI has no --workers),
each as its own process tree, all driven from this process by the closed-loop load generator of
bench/loadgen.py on the same machine.

`--model default` (the default) serves that first-start model: the `trajectory` preset, an LSTM on
2-D paths. `--model series` serves the `series` preset instead (a dilated-convolution step model,
what the `default` preset picks for recorded series): once the service is up, the bench uploads 1-D
random walks (POST /datasets), trains a `series` model on them with a tiny budget (POST /train;
serving speed does not depend on how well it is trained), and every peer serves that version's
checkpoint; the requests to the service name it (a `model` field, `?model=` for .npy bodies). The
sequences sent have as many features as the served model takes.

Each round measures every scenario once for each of its peers, the peers in turn (their order
rotated from round to round), so that a noisy neighbour on a shared machine hits all of them;
the raw model is measured in process at the start of each round. Peers not under load are
paused (SIGSTOP), so that one's idle polling does not take CPU from another's measurement. The
ratios (to the naive endpoint, to the raw model, mixed to equal lengths) are taken within each
round; the table gives, per scenario and peer, the median over rounds and the range (min-max).
Prints one markdown table, then the conditions and each server's resident memory (VmRSS of
every process of its tree) after start-up and after the load.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson
import torch

from bench.common import table
from bench.loadgen import LoadResult, build_request, run_load
from jepa_model import JEPA, LoadedCheckpoint, load_checkpoint
from jepa_model.serving import traced_forwards
from training.execution.forkserver import FORK_SERVER_NAME, TRAINING_PROCESS_NAME

SEQ_LEN, BATCH = 20, 256
MIXED_LOW, MIXED_HIGH = 10, 500  # mixed lengths: uniform in [10, 500], mean 255
EQUAL_LEN = (MIXED_LOW + MIXED_HIGH) // 2
MIXED_PER_REQUEST = 16
SINGLE_CONNECTIONS = 64
ALL_PEERS = ("naive", "litserve", "litserve2", "service", "service2")
LABELS = {
    "naive": "naive FastAPI",
    "litserve": "LitServe, 1 worker",
    "litserve2": "LitServe, 2 workers",
    "service": "service",
    "service2": "service, --workers 2",
}
# The service's settings: its defaults, but for where its data lives and a short first training.
SERVICE_ENV = {"JEPA_BOOTSTRAP_EPOCHS": "5"}
JSON, NPY = "application/json", "application/x-npy"
# --model: the first-start model (the service's default JEPA_DEFAULT_MODEL), or a `series` model the
# bench trains through the API on SERIES_WALKS (count, steps, features) 1-D random walks.
MODELS = ("default", "series")
DEFAULT_MODEL, SERIES_MODEL, SERIES_PRESET = "trajectories", "series", "series"
SERIES_WALKS = (64, 200, 1)
SERIES_CONFIG = {"preset": SERIES_PRESET, "steps": 20, "seed": 0}
NOT_SERVING = ("multiprocessing.resource_tracker", "training.execution.runner")  # in a process's command line
# ...or its name: `jepa serve`'s fork server and the jobs' processes it forks carry the server's command line.
NOT_SERVING_NAMES = (FORK_SERVER_NAME, TRAINING_PROCESS_NAME)


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of() -> dict[int, list[int]]:
    """{ppid: [pid, ...]} of every process on the machine, from /proc."""
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            tree[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree, found, todo = children_of(), [], [pid]
    while todo:
        for child in sorted(tree.get(todo.pop(0), [])):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@dataclass
class Peer:
    key: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    ready_path: str
    rss_started: list[float] = field(default_factory=list)
    rss_loaded: list[float] = field(default_factory=list)
    alive: bool = True

    @property
    def label(self) -> str:
        return LABELS[self.key]

    def processes(self) -> list[int]:
        """The tree's processes that serve: the root and its descendants, but for multiprocessing's
        resource tracker (it only cleans up after the others), the service's fork server (a copy
        of the server's start-up image, shared with it) and its training jobs."""
        tree = [self.proc.pid, *descendants(self.proc.pid)]
        return [
            pid
            for pid in tree
            if not any(name in cmdline(pid) for name in NOT_SERVING) and process_name(pid) not in NOT_SERVING_NAMES
        ]

    def rss(self) -> list[float]:
        return [mb for pid in self.processes() if (mb := rss_mb(pid)) is not None]

    def pause(self) -> None:
        # The root first: a supervisor (uvicorn's, LitServe's) that pinged a worker just before
        # gets its answer from the still-running worker, instead of timing out on resume.
        self._signal([self.proc.pid], signal.SIGSTOP)
        time.sleep(0.02)
        self._signal(descendants(self.proc.pid), signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(descendants(self.proc.pid), signal.SIGCONT)
        time.sleep(0.02)
        self._signal([self.proc.pid], signal.SIGCONT)

    @staticmethod
    def _signal(pids: list[int], sig: signal.Signals) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop(self) -> None:
        self.resume()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # Whatever of its own process group outlived it (it was started as the group's leader).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def launch(key: str, args: list[str], env: dict[str, str], port: int, ready: str, tmp: Path) -> Peer:
    log = tmp / f"{key}.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith("JEPA_")}  # the service's defaults
    proc = subprocess.Popen(
        args, env={**base, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    return Peer(key, port, proc, log, ready)


def wait_ready(peer: Peer, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if peer.proc.poll() is not None:
            raise RuntimeError(f"{peer.label} exited:\n{peer.log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{peer.port}{peer.ready_path}", timeout=2).status_code == 200:
                peer.rss_started = peer.rss()
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{peer.label} never became ready:\n{peer.log.read_text()[-3000:]}")


def serve_has_workers_option() -> bool:
    help_text = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    ).stdout
    return "--workers" in help_text


def train_series(port: int, data: Path) -> tuple[Path, str]:
    """Through the service's API: upload SERIES_WALKS, train SERIES_MODEL on them with
    SERIES_CONFIG and wait for the job. Returns the new version's checkpoint directory (under the
    data directory: checkpoints/<model>/<job>) and its recorded sha256."""
    count, length, dim = SERIES_WALKS
    upload = {"name": "walks", "sequences": walks(np.random.default_rng(1), count, length, dim)}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:

        def call(method: str, url: str, **kwargs: object) -> dict:
            answer = client.request(method, url, **kwargs)  # type: ignore[arg-type]
            if answer.is_error:
                raise RuntimeError(f"{method} {url}: {answer.status_code} {answer.text[:500]}")
            return answer.json()

        body = orjson.dumps(upload, option=orjson.OPT_SERIALIZE_NUMPY)
        dataset = call("POST", "/datasets", content=body, headers={"content-type": JSON})["id"]
        spec = {"model": SERIES_MODEL, "dataset": {"kind": "stored", "id": dataset}, "config": SERIES_CONFIG}
        job_id = call("POST", "/train", json=spec)["job_id"]
        deadline = time.monotonic() + 600
        while (job := call("GET", f"/jobs/{job_id}"))["status"] != "succeeded":
            if job["status"] in ("failed", "cancelled") or time.monotonic() > deadline:
                raise RuntimeError(f"training the {SERIES_MODEL} model: job {job_id} {job['status']}: {job['error']}")
            time.sleep(0.5)
        version = call("GET", f"/models/{SERIES_MODEL}/versions/{job['version']}")
    return data / "checkpoints" / SERIES_MODEL / job_id, version["sha256"]


def describe(name: str, loaded: LoadedCheckpoint) -> str:
    config = loaded.model_config
    return (
        f"`{name}`, preset {loaded.meta.get('preset')}: {config.encoder} encoder ({config.objective} objective), "
        f"{config.input_dim}-D input, {config.repr_dim}-dimensional embeddings"
    )


# --- what is sent --------------------------------------------------------------------------------


def walks(rng: np.random.Generator, count: int, length: int, dim: int) -> np.ndarray:
    return np.cumsum(rng.normal(size=(count, length, dim)), axis=1).astype(np.float32)


def mixed_lengths(rng: np.random.Generator, count: int) -> list[int]:
    """`count` (even) lengths uniform in [MIXED_LOW, MIXED_HIGH], in pairs l, 510 - l: their mean is
    exactly EQUAL_LEN, so the mixed and the equal scenarios carry the same points."""
    half = rng.integers(MIXED_LOW, MIXED_HIGH + 1, count // 2)
    lengths = np.concatenate([half, MIXED_LOW + MIXED_HIGH - half])
    return [int(n) for n in rng.permutation(lengths)]


def json_body(sequences: np.ndarray | list[np.ndarray], model: str | None = None) -> bytes:
    """{"sequences": ...}, and {"model": model} where one is named (the service reads it; the
    naive endpoint and LitServe, which serve one checkpoint, ignore it)."""
    named = {} if model is None else {"model": model}
    if isinstance(sequences, np.ndarray):
        return orjson.dumps({"sequences": sequences, **named}, option=orjson.OPT_SERIALIZE_NUMPY)
    return orjson.dumps({"sequences": [s.tolist() for s in sequences], **named})


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@dataclass(frozen=True)
class Scenario:
    key: str
    name: str
    unit: str  # what `units` counts: req/s, seq/s, points/s
    peers: tuple[str, ...]
    bodies: list[bytes]
    units: list[float]
    connections: int
    raw: str  # the raw figure this scenario's throughput is compared with
    content_type: str = JSON
    equal: str | None = None  # for a mixed-length scenario: its equal-length twin
    path: str = "/encode"

    def requests(self, port: int) -> list[bytes]:
        return [build_request(self.path, body, self.content_type, self.content_type, port) for body in self.bodies]


def scenarios(throughput_connections: int, dim: int, model: str | None = None) -> list[Scenario]:
    """The scenarios, their sequences `dim` features wide; with `model`, every request names it."""
    rng = np.random.default_rng(0)
    batch = walks(rng, BATCH, SEQ_LEN, dim)
    c, one = throughput_connections, [1.0]
    every = ("naive", "litserve", "litserve2", "service", "service2")
    long_peers = ("naive", "litserve", "service", "service2")
    ragged_peers = ("litserve", "service", "service2")  # the naive endpoint takes equal lengths only
    single_lengths = mixed_lengths(rng, 256)
    per_request = [mixed_lengths(rng, MIXED_PER_REQUEST) for _ in range(64)]
    equal_points = float(MIXED_PER_REQUEST * EQUAL_LEN)
    n, m = SINGLE_CONNECTIONS, model
    npy_path = "/encode" if model is None else f"/encode?model={model}"  # a .npy body's options: the query
    return [
        Scenario("single", f"1 sequence, {n} conn.", "req/s", every, [json_body(batch[:1], m)], one, n, "seq20"),
        Scenario(
            "json", f"256 sequences, JSON, {c} conn.", "seq/s", every, [json_body(batch, m)], [256.0], c, "seq20"
        ),
        Scenario(
            "npy", f"256 sequences, .npy, {c} conn.", "seq/s", ("service", "service2"), [npy(batch)], [256.0], c,
            "seq20", NPY, path=npy_path,
        ),
        Scenario(
            "equal1", f"1 sequence of {EQUAL_LEN} steps, {n} conn.", "points/s", long_peers,
            [json_body(walks(rng, 1, EQUAL_LEN, dim), m)], [float(EQUAL_LEN)], n, "points",
        ),
        Scenario(
            "mixed1", f"1 sequence of {MIXED_LOW}-{MIXED_HIGH} steps, {n} conn.", "points/s", long_peers,
            [json_body(walks(rng, 1, length, dim), m) for length in single_lengths],
            [float(x) for x in single_lengths], n, "points", equal="equal1",
        ),
        Scenario(
            "equal16", f"{MIXED_PER_REQUEST} sequences of {EQUAL_LEN} steps, {c} conn.", "points/s", ragged_peers,
            [json_body(walks(rng, MIXED_PER_REQUEST, EQUAL_LEN, dim), m)], [equal_points], c, "points",
        ),
        Scenario(
            "mixed16", f"{MIXED_PER_REQUEST} sequences of {MIXED_LOW}-{MIXED_HIGH} steps, {c} conn.", "points/s",
            ragged_peers, [json_body([walks(rng, 1, x, dim)[0] for x in lengths], m) for lengths in per_request],
            [float(sum(lengths)) for lengths in per_request], c, "points", equal="equal16",
        ),
    ]  # fmt: skip


# --- the raw model ---------------------------------------------------------------------------------


def raw_meter(model: JEPA) -> Callable[[float], dict[str, float]]:
    """A function measuring the model in this process for `seconds`: sequences/s in batches of 256
    x 20 steps ("seq20") and points/s in batches of 256 x 255 steps ("points")."""
    torch.set_num_threads(1)  # what the service gives its inference thread
    encode = traced_forwards(model)["target"]  # the service's own forward pass
    dim = model.config.input_dim
    short, long = torch.randn(BATCH, SEQ_LEN, dim), torch.randn(BATCH, EQUAL_LEN, dim)

    def rate(x: torch.Tensor, seconds: float) -> float:
        with torch.inference_mode():
            for _ in range(3):
                encode(x)
            n, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                encode(x)
                n += 1
        return n / (time.perf_counter() - started)

    def measure(seconds: float) -> dict[str, float]:
        return {
            "seq20": rate(short, seconds / 2) * BATCH,
            "points": rate(long, seconds / 2) * BATCH * EQUAL_LEN,
        }

    return measure


# --- the table -----------------------------------------------------------------------------------------


def spread(values: Sequence[float], fmt: str, suffix: str = "") -> str:
    if not values:
        return "-"
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:{fmt}}{suffix}"
    return f"{mid:{fmt}}{suffix} ({min(values):{fmt}}–{max(values):{fmt}})"


@dataclass
class Cell:
    rate: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    vs_naive: list[float] = field(default_factory=list)
    vs_raw: list[float] = field(default_factory=list)
    vs_equal: list[float] = field(default_factory=list)


def summarise(
    plan: list[Scenario],
    rounds: list[dict[tuple[str, str], LoadResult]],
    raws: list[dict[str, float]],
    labels: dict[str, str],
) -> list[list[str]]:
    raw_seq, raw_points = spread([r["seq20"] for r in raws], ",.0f"), spread([r["points"] for r in raws], ",.0f")
    lines = [
        [f"raw model in process, 256 x {SEQ_LEN} steps a batch (seq/s)", "-", raw_seq, "-", "-", "1.00", "-"],
        [f"raw model in process, 256 x {EQUAL_LEN} steps a batch (points/s)", "-", raw_points, "-", "-", "1.00", "-"],
    ]
    for scenario in plan:
        cells: dict[str, Cell] = defaultdict(Cell)
        for results, raw in zip(rounds, raws, strict=True):
            naive = results.get((scenario.key, "naive"))
            for peer in scenario.peers:
                if (result := results.get((scenario.key, peer))) is None or not result.requests:
                    continue
                cell, rate = cells[peer], result.units_per_second
                cell.rate.append(rate)
                cell.p99_ms.append(result.percentile(0.99) * 1e3)
                cell.vs_raw.append(rate / raw[scenario.raw])
                if naive is not None and naive.units and peer != "naive":
                    cell.vs_naive.append(rate / naive.units_per_second)
                if scenario.equal and (equal := results.get((scenario.equal, peer))) is not None and equal.units:
                    cell.vs_equal.append(rate / equal.units_per_second)
        for peer in scenario.peers:
            if peer not in cells:
                continue
            cell = cells[peer]
            lines.append(
                [
                    f"{scenario.name} ({scenario.unit})",
                    labels[peer],
                    spread(cell.rate, ",.0f"),
                    spread(cell.p99_ms, ".1f"),
                    spread(cell.vs_naive, ".1f", "×") if peer != "naive" else "1.0×",
                    spread(cell.vs_raw, ".3f" if cell.vs_raw and max(cell.vs_raw) < 0.1 else ".2f"),
                    spread(cell.vs_equal, ".2f"),
                ]
            )
    return lines


HEADER = ["scenario (unit)", "peer", "throughput", "p99 ms", "vs naive", "vs raw", "mixed / equal"]


# --- the run ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the table gives the median and range")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per scenario and peer")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each measurement")
    parser.add_argument("--throughput-connections", type=int, default=4)
    parser.add_argument("--peers", default=",".join(ALL_PEERS), help=f"a subset of {','.join(ALL_PEERS)}")
    parser.add_argument(
        "--model", choices=MODELS, default="default",
        help="the model every peer serves: the service's first-start model (trajectory preset, 2-D), or a "
        f"`{SERIES_PRESET}` preset model the bench trains on 1-D random walks",
    )  # fmt: skip
    args = parser.parse_args()
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    if unknown := set(wanted) - set(ALL_PEERS):
        parser.error(f"unknown peers {sorted(unknown)}; choose from {', '.join(ALL_PEERS)}")
    if "service" not in wanted:
        wanted.append("service")  # it trains the model every other peer serves

    began, load_before = time.monotonic(), os.getloadavg()
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        print(f"note: {text}", file=sys.stderr, flush=True)

    if {"litserve", "litserve2"} & set(wanted) and importlib.util.find_spec("litserve") is None:
        note("litserve is not installed (pip install -e '.[bench]'): the LitServe peers are skipped")
        wanted = [p for p in wanted if not p.startswith("litserve")]
    if "service2" in wanted and not serve_has_workers_option():
        note("`jepa serve --help` shows no --workers option yet: the 2-process service is skipped")
        wanted.remove("service2")

    peers: dict[str, Peer] = {}
    rounds: list[dict[tuple[str, str], LoadResult]] = []
    raws: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        try:
            service_cmd = [sys.executable, "-m", "service.cli", "serve", "--port"]
            port = free_port()
            data = tmp_dir / "data"
            peers["service"] = launch(
                "service", [*service_cmd, str(port)], {**SERVICE_ENV, "JEPA_DATA_DIR": str(data)}, port, "/ready",
                tmp_dir,
            )  # fmt: skip
            wait_ready(peers["service"])
            if args.model == "series":
                print(f"training the {SERIES_MODEL} model through the API", file=sys.stderr, flush=True)
                checkpoint, sha256 = train_series(port, data)
                served, named = load_checkpoint(checkpoint, sha256), SERIES_MODEL
                # The service loads a version on its first request: once, before its memory is read.
                first = json_body(walks(np.random.default_rng(2), 1, SEQ_LEN, served.model_config.input_dim), named)
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/encode", content=first, headers={"content-type": JSON}, timeout=60
                )
                if answer.status_code != 200 or answer.json()["model"] != SERIES_MODEL:
                    raise RuntimeError(f"the service does not serve {SERIES_MODEL}: {answer.text[:500]}")
                peers["service"].rss_started = peers["service"].rss()
                peers["service"].pause()
            else:
                peers["service"].pause()
                (checkpoint,) = (data / "checkpoints" / DEFAULT_MODEL).iterdir()
                served, named = load_checkpoint(checkpoint), None
            model_note = describe(named or DEFAULT_MODEL, served)
            plan = scenarios(args.throughput_connections, served.model_config.input_dim, named)
            starting: list[Peer] = []
            for key in wanted:
                port = free_port()
                if key == "naive":
                    cmd = [sys.executable, "-m", "uvicorn", "bench.naive_app:app", "--port", str(port)]
                    starting.append(
                        launch(key, cmd, {"JEPA_NAIVE_CHECKPOINT": str(checkpoint)}, port, "/docs", tmp_dir)
                    )
                elif key.startswith("litserve"):
                    workers = "2" if key == "litserve2" else "1"
                    cmd = [sys.executable, "-m", "bench.litserve_app", "--checkpoint", str(checkpoint)]
                    cmd += ["--port", str(port), "--workers", workers]
                    starting.append(launch(key, cmd, {}, port, "/health", tmp_dir))
                elif key == "service2":
                    # Its own copy of the registry, taken while the first service is paused, so
                    # that neither waits on a lock the other holds while paused.
                    shutil.copytree(data, tmp_dir / "data2")
                    env = {**SERVICE_ENV, "JEPA_DATA_DIR": str(tmp_dir / "data2")}
                    starting.append(
                        launch(key, [*service_cmd, str(port), "--workers", "2"], env, port, "/ready", tmp_dir)
                    )
            for peer in starting:
                peers[peer.key] = peer
                try:
                    wait_ready(peer)
                except (RuntimeError, TimeoutError) as exc:
                    last = [line for line in str(exc).splitlines() if line.strip()][-1]
                    note(f"{peer.label} did not start, skipped; its log ends: {last.strip()}")
                    print(exc, file=sys.stderr)
                    peer.alive = False
                peer.pause()
            order = [key for key in ALL_PEERS if key in peers and peers[key].alive]
            print(f"peers: {', '.join(order)}; starting {args.rounds} round(s)", file=sys.stderr, flush=True)

            measure_raw = raw_meter(served.model)
            for r in range(args.rounds):
                raws.append(measure_raw(args.seconds))
                results: dict[tuple[str, str], LoadResult] = {}
                rotation = order[r % len(order) :] + order[: r % len(order)]
                for scenario in plan:
                    for key in rotation:
                        peer = peers[key]
                        if key not in scenario.peers or not peer.alive:
                            continue
                        peer.resume()
                        try:
                            result = run_load(
                                peer.port, scenario.requests(peer.port), scenario.connections, args.seconds,
                                args.warmup, scenario.units,
                            )  # fmt: skip
                        except OSError as exc:
                            note(f"round {r + 1}, {scenario.name}, {peer.label}: {exc!r}; the peer is dropped")
                            peer.alive = False
                            continue
                        finally:
                            peer.pause()
                        bad = {s: n for s, n in result.statuses.items() if s != 200}
                        if bad:
                            note(f"round {r + 1}, {scenario.name}, {peer.label}: non-200 answers {bad}")
                        results[(scenario.key, key)] = result
                rounds.append(results)
                print(f"round {r + 1} done at {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
            for peer in peers.values():
                if peer.alive:
                    peer.rss_loaded = peer.rss()
        finally:
            for peer in peers.values():
                peer.stop()

    labels = {key: peer.label for key, peer in peers.items()}
    print(table(HEADER, summarise(plan, rounds, raws, labels)))
    litserve = _version("litserve")
    dim = served.model_config.input_dim
    if args.model == "series":
        count, length, width = SERIES_WALKS
        trained = (
            f"trained by the bench through the API (POST /datasets, POST /train) on {count} {width}-D random walks "
            f"of {length} steps with config {orjson.dumps(SERIES_CONFIG).decode()}; every request to the service "
            "names it (a `model` field, `?model=` for .npy)"
        )
    else:
        trained = "the service's first-start model"
    print(f"\nModel served by every peer: {model_note}; {trained}.")
    affinity = len(os.sched_getaffinity(0))
    print(
        f"\n{args.rounds} round(s); in each, every peer runs every one of its scenarios once, the peers in turn "
        f"(order rotated each round), {args.seconds:g} s measured after {args.warmup:g} s of warm-up; peers not "
        "under load are paused (SIGSTOP). Cells: median over rounds (min–max); each ratio is taken within a round, "
        f"then its median (min–max). Sequences are {dim}-D random walks; points = sequence steps. {SEQ_LEN}-step "
        f"sequences unless said; mixed lengths uniform in {MIXED_LOW}-{MIXED_HIGH} (mean {EQUAL_LEN}), compared "
        "with equal-length requests carrying the same points. vs raw: the peer's throughput over the raw model's "
        "in the same round (256 x 20 steps for req/s and seq/s, 256 x 255 steps for points/s)."
    )
    print(
        f"\nMachine: {os.cpu_count()} cores ({affinity} usable), load average {load_before[0]:.2f} at start and "
        f"{os.getloadavg()[0]:.2f} at the end (other work may share the machine); torch {torch.__version__}, "
        f"1 thread for the raw model, the service's inference thread (default JEPA_INFERENCE_THREADS=1) and each "
        f"LitServe inference worker; load generator and servers on the same machine; "
        f"{time.monotonic() - began:.0f} s in all."
    )
    print(
        "Settings: the service runs with its defaults (inherited JEPA_* variables removed), but for JEPA_DATA_DIR "
        f"(a fresh directory) and {', '.join(f'{k}={v}' for k, v in SERVICE_ENV.items())} (the first-start model "
        "trains in seconds); `--workers 2` where offered. Naive: `uvicorn bench.naive_app:app` with its defaults. "
        f"LitServe {litserve}: bench/litserve_app.py, max_batch_size 64 requests, batch_timeout 1 ms, one forward "
        "pass per sequence length, orjson responses encoded in the inference worker, fast_queue (ZeroMQ), "
        "log_level warning, 1 or 2 inference workers with as many API server processes."
    )
    print("\nResident memory (VmRSS, MB, each process of the server's tree), after start-up -> after the load:")
    for peer in peers.values():
        if peer.rss_started:
            loaded = _mb(peer.rss_loaded) if peer.rss_loaded else "-"
            print(f"- {peer.label}: {_mb(peer.rss_started)} -> {loaded}")
    if notes:
        print("\nNotes:")
        for text in notes:
            print(f"- {text}")


def _mb(values: list[float]) -> str:
    each = " + ".join(f"{v:.0f}" for v in values)
    return f"{each} = {sum(values):.0f}" if len(values) > 1 else each


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "(not installed)"


if __name__ == "__main__":
    main()
