"""The `jepa` command: serve the API, run a worker, train, encode and list what the registry holds.

`models`, `jobs`, `datasets`, `train` and `encode` work in one of two modes:

- with `--url` (or JEPA_URL) they talk to a running server through `service.client.JEPAClient`,
  sending `--api-key` (or JEPA_API_KEY) as the bearer key;
- without it they open the registry under JEPA_DATA_DIR (default ./data) or JEPA_DATABASE_URL
  directly, and refuse to run where there is none rather than create an empty one there
  (`train` and `datasets upload` create one when given `--init`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
import math
import signal
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from service.settings import Settings

if TYPE_CHECKING:
    import numpy as np

    from jepa_model import LoadedCheckpoint
    from service.client import JEPAClient
    from training.db import SessionFactory
    from training.spec import TrainingSpec

app = typer.Typer(
    help="Train and serve JEPA sequence encoders. `models`, `jobs`, `datasets`, `train` and `encode` "
    "talk to a running server with --url (or JEPA_URL); without it they use the local registry "
    "under JEPA_DATA_DIR (default ./data).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)

# The two options of every command that can talk to a server, defined once.
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="JEPA_URL",
        show_default=False,
        help="Base URL of a running server, e.g. http://localhost:8000: talk to it instead of the local "
        "registry under JEPA_DATA_DIR.",
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="JEPA_API_KEY",
        show_default=False,
        help="With --url: the server's API key (its JEPA_API_KEY), sent as a bearer token. Prefer the "
        "environment variable: a flag shows in the process list.",
    ),
]
IdempotencyKeyOption = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        show_default=False,
        help="With --url: sent as the request's Idempotency-Key, so that running the command again "
        "with the same key (after a timeout, say) answers as the first run did instead of acting twice.",
    ),
]
# How long `jepa train` waits for its job and `jepa logs --follow` follows one, by default: past
# it they stop with an error (the job carries on). One request's own limits are service.client's.
WAIT_TIMEOUT_S = 24 * 3600.0
WaitTimeoutOption = Annotated[
    float,
    typer.Option(
        "--wait-timeout",
        min=0,
        help="Seconds to wait for the job to end (train) or to follow its lines (logs --follow); past them "
        "the command stops with an error and the job carries on.",
    ),
]
MAX_RETRY_WAIT_S = 60.0  # the longest a 429's Retry-After makes `jepa encode` wait before retrying
InitOption = Annotated[
    bool,
    typer.Option(
        "--init",
        help="Without --url: create the registry (JEPA_DATA_DIR/jepa.db) if there is none yet. Without "
        "this flag a directory with no registry is refused, so that a typo never starts an empty one.",
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `message` (plain text, not rich markup) on stderr as one `error:` line, unwrapped and
    its control characters escaped (it may quote a server), and exit with `code`."""
    errors.print(f"[red]error:[/red] {_cell(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _cell(value: Any) -> str:
    """`value` as text for the terminal: rich markup escaped, control characters written as \\x1b
    and the like (newlines kept), so that a server's strings can neither style nor drive it."""
    from service.client import printable

    return escape(printable(str(value)))


def _settings() -> Settings:
    """The JEPA_ settings, or exit 2 saying which of them is wrong (no traceback)."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "\n".join(f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        fail(f"invalid configuration (JEPA_ environment variables):\n{problems}", 2)


def _setup_logging(level: str = "info", fmt: str = "text") -> dict[str, Any]:
    from training.logs import log_config

    config = log_config(level, fmt)
    logging.config.dictConfig(config)
    return config


def _session_factory(settings: Settings) -> SessionFactory:
    """Migrate the database to head, then connect. Imported late: `jepa --help` stays instant."""
    from training.db import create_db_engine, create_session_factory
    from training.migrate import upgrade_to_head

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.resolved_database_url)
    return create_session_factory(create_db_engine(settings.resolved_database_url))


def _registry(settings: Settings, init: bool | None = None) -> SessionFactory:
    """The local registry. Where there is none, exit creating nothing, unless `init` (the --init
    flag of the commands that have one; None for those that have not) says to create it."""
    database = settings.data_dir / "jepa.db"
    if settings.database_url is None and not init and not database.is_file():
        hint = "; or pass --init to create one there" if init is not None else ""
        fail(
            f"no registry at {database.resolve()} (JEPA_DATA_DIR is {settings.data_dir.resolve()}).\n"
            "Point elsewhere: --url http://HOST:PORT (or JEPA_URL) for a running server, JEPA_DATA_DIR=DIR "
            f"for a local data directory, or JEPA_DATABASE_URL for a database server{hint}."
        )
    return _session_factory(settings)


@contextlib.contextmanager
def _remote(url: str, api_key: str | None) -> Iterator[JEPAClient]:
    """A client for the server at `url`; its errors become one clear line and a non-zero exit.

    The client refuses answers over its size limit, past its deadline, or not shaped as due
    (BadResponse); anything else a strange answer might still raise here is the last guard's."""
    import httpx

    from service.client import BadRequest, BadResponse, JEPAClient, JEPAError, JobFailed, Unauthorized

    try:
        with JEPAClient(url, api_key=api_key) as client:
            yield client
    except BadResponse as exc:
        fail(f"unusable answer from {url}: {exc.detail}")
    except JobFailed as exc:
        fail(f"job {exc.job['id']} {exc.job['status']}: {exc.job.get('error')}")
    except Unauthorized as exc:
        if api_key:
            fail(f"{url} answered 401 Unauthorized: {_detail(exc.detail)}; the API key given was refused")
        fail(f"{url} answered 401 Unauthorized: {_detail(exc.detail)}; pass it with --api-key or JEPA_API_KEY")
    except JEPAError as exc:
        fail(f"{url} answered {exc.status}: {_detail(exc.detail)}", 2 if isinstance(exc, BadRequest) else 1)
    except httpx.RemoteProtocolError as exc:  # not HTTP, or cut off
        fail(f"unusable answer from {url}: {type(exc).__name__}: {exc}")
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {type(exc).__name__}: {exc}")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:  # the last guard, never a traceback
        fail(f"unusable answer from {url}: {type(exc).__name__}: {exc}")


def _detail(detail: Any) -> str:
    """A server's `detail`: a string, or FastAPI's list of validation errors."""
    if isinstance(detail, list):
        text = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
            if isinstance(e, dict) and isinstance(e.get("loc", ()), list | tuple)
            else str(e)
            for e in detail
        )
    else:
        text = str(detail)
    return text if len(text) <= 2000 else text[:2000] + f"... ({len(text)} characters)"


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind. [default: JEPA_HOST or 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on. [default: JEPA_PORT or 8000]")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="API processes on the port. [default: JEPA_WORKERS or 1]")
    ] = None,
) -> None:
    """Start the HTTP API (and, unless JEPA_EMBEDDED_WORKER=0, a worker that runs training jobs).

    The database schema is brought to head first. With an empty registry, the default model is
    queued for training and /ready answers 503 until it can be served. With several processes,
    one of them runs the embedded worker and /metrics sums them all (service/processes.py).
    """
    import uvicorn

    from service.processes import prepare_group, remove_group
    from service.protocol import HeaderDeadlineProtocol

    settings = _settings()
    config = _setup_logging(settings.log_level, settings.log_format)
    processes = workers or settings.workers
    group = prepare_group(processes)
    try:
        uvicorn.run(
            "service.app:create_app",
            log_config=config,
            factory=True,
            http=HeaderDeadlineProtocol,
            host=host or settings.host,
            port=port or settings.port,
            workers=processes,
            log_level=settings.log_level,
            timeout_graceful_shutdown=30,
            access_log=False,  # service.middleware writes it, off the event loop
        )
    finally:
        remove_group(group)


@app.command()
def worker() -> None:
    """Run a worker: claim queued training jobs and train each in a child process."""
    from training.worker import Worker

    settings = _settings()
    _setup_logging(settings.log_level, settings.log_format)
    w = Worker(settings, _session_factory(settings), poll_s=settings.worker_poll_s)
    signal.signal(signal.SIGTERM, lambda *_: w.stop())
    try:
        w.run()
    except KeyboardInterrupt:
        w.stop()


SPEC_KEYS = frozenset({"model", "dataset", "config"})


def _load_config_file(path: Path) -> dict[str, Any]:
    """A JSON or TOML file: a whole POST /train body ({model, dataset, config}), or just its `config`."""
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        fail(f"cannot read {path}: {exc}", 2)
    if not isinstance(data, dict):
        fail(f"{path} must hold an object: a training spec or its `config`", 2)
    if data.keys() <= SPEC_KEYS:
        return data
    return {"config": data}


def parse_sets(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs: each value parsed as JSON when it parses (3, 1e-3, true, null,
    [1, 2]), else kept as a string (seed, cosine). Keys are passed on untouched."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="--set")
        try:
            values[key.strip()] = json.loads(raw)
        except ValueError:
            values[key.strip()] = raw
    return values


def _given(flags: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flags.items() if v is not None}


def train_body(
    config_file: Path | None,
    model: str | None,
    dataset_id: str | None,
    sets: list[str],
    dataset_flags: dict[str, Any],
    config_flags: dict[str, Any],
) -> dict[str, Any]:
    """The POST /train body: the file, then `--set`, then the dedicated flags, each over the last."""
    body = _load_config_file(config_file) if config_file else {}
    if model:
        body["model"] = model
    toy = _given(dataset_flags)
    if dataset_id is not None:
        if toy:
            flags = ", ".join("--data-seed" if name == "seed" else f"--{name.replace('_', '-')}" for name in toy)
            raise typer.BadParameter(
                f"toy-data flags ({flags}) do not apply to an uploaded dataset", param_hint="--dataset"
            )
        body["dataset"] = {"kind": "stored", "id": dataset_id}
    elif toy or "dataset" in body:
        body["dataset"] = {**body.get("dataset", {}), **toy}
    body["config"] = {**body.get("config", {}), **parse_sets(sets), **_given(config_flags)}
    return body


@app.command()
def train(
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="JSON or TOML file: a POST /train body ({model, dataset, config}) or just its `config` "
            "object. --set and the other flags override it.",
        ),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Train on an uploaded dataset (its id; see `jepa datasets`).")
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="A training option (any key of the spec's `config`: preset, epochs, lr, hidden_dim, ...). "
            "Repeatable. The value is parsed as JSON when it parses, else kept as a string.",
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model name (default: JEPA_DEFAULT_MODEL; the server's with --url).")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="Recipe preset, e.g. 'seed'.")] = None,
    pattern: Annotated[str | None, typer.Option(help="Toy data: circle, linear or mixed.")] = None,
    num_samples: Annotated[int | None, typer.Option(help="Toy data: number of sequences.")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Toy data: points per sequence.")] = None,
    noise: Annotated[float | None, typer.Option(help="Toy data: Gaussian noise std.")] = None,
    data_seed: Annotated[int | None, typer.Option(help="Toy data: generator seed.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    context_len: Annotated[int | None, typer.Option()] = None,
    target_len: Annotated[int | None, typer.Option()] = None,
    momentum: Annotated[float | None, typer.Option(help="EMA momentum of the target encoder.")] = None,
    hidden_dim: Annotated[int | None, typer.Option()] = None,
    repr_dim: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for weights and window sampling.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="With --url: follow the job with a progress bar until it ends.")
    ] = True,
    wait_timeout: WaitTimeoutOption = WAIT_TIMEOUT_S,
    init: InitOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    idempotency_key: IdempotencyKeyOption = None,
) -> None:
    """Train a new version and register it, with a progress bar (epochs, loss).

    With --url the job is queued on that server (POST /train) and followed by polling GET /jobs/{id}
    (--no-wait: print its id and return). Without it the job trains in this process against the
    local registry, which must exist unless --init is given; a run that fails or is interrupted
    leaves its job `failed`.
    """
    dataset_flags = {"pattern": pattern, "num_samples": num_samples, "seq_len": seq_len, "noise": noise}
    dataset_flags["seed"] = data_seed
    config_flags = {"preset": preset, "epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum}
    config_flags |= {"context_len": context_len, "target_len": target_len, "seed": seed}
    config_flags |= {"hidden_dim": hidden_dim, "repr_dim": repr_dim}
    body = train_body(config_file, model, dataset, sets or [], dataset_flags, config_flags)
    if idempotency_key and not url:
        raise typer.BadParameter("only with --url: a local run is not retried", param_hint="--idempotency-key")
    if url:
        _train_remote(url, api_key, body, wait, idempotency_key, wait_timeout)
    else:
        _train_local(_settings(), body, init)


def _train_remote(
    url: str, api_key: str | None, body: dict[str, Any], wait: bool, key: str | None, wait_timeout: float
) -> None:
    with _remote(url, api_key) as client:
        job_id = client.train(body.get("dataset", {}), body.get("config"), body.get("model"), idempotency_key=key)
        console.print(f"job {job_id} queued on {url}")
        if not wait:
            return
        try:
            job = client.wait_for_job(job_id, timeout=wait_timeout, poll_s=0.5, progress=True)
        except KeyboardInterrupt:
            fail(f"stopped waiting; job {job_id} carries on on the server (POST /jobs/{job_id}/cancel stops it)", 130)
        except TimeoutError:
            fail(f"job {job_id} did not finish within --wait-timeout {wait_timeout:g} s; it carries on on the server")
        console.print(f"registered [bold]{_cell(job['model'])}[/bold] version [bold]{_cell(job['version'])}[/bold]")


def _train_local(settings: Settings, body: dict[str, Any], init: bool) -> None:
    from pydantic import ValidationError

    from training.datasets import resolve_spec
    from training.errors import DomainError
    from training.spec import TrainingSpec

    body.setdefault("model", settings.default_model)
    try:
        spec = TrainingSpec.model_validate(body)
    except ValidationError as exc:
        fail(f"invalid training config:\n{exc}", 2)
    factory = _registry(settings, init)
    try:
        with factory() as session:  # a stored dataset's shape, so its windows and preset are settled
            spec = resolve_spec(session, spec)
    except DomainError as exc:
        fail(str(exc), 2)
    number = _train_with_progress(settings, factory, spec)
    console.print(f"registered [bold]{spec.model}[/bold] version [bold]{number}[/bold]")


class Terminated(SystemExit):
    """SIGTERM during a local training run, raised so that the run can mark its job failed."""


class _TerminateAtEpochEnd:
    """SIGTERM's handler for a local run: it raises Terminated at the end of the current epoch,
    once that epoch's record is written, or at once on a second SIGTERM.

    Raising from the handler itself, wherever the main thread happens to be, could leave a
    database write half done with its lock held; marking the job failed then waited on that lock
    (the local run once ignored SIGTERM for a minute)."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, *_: object) -> None:
        if self.requested:
            raise Terminated(143)
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise Terminated(143)


def _train_with_progress(settings: Settings, factory: SessionFactory, spec: TrainingSpec) -> int:
    """Record the run as an ordinary job, claimed by this process, and train it here.

    Whatever goes wrong once the job exists (an exception, Ctrl-C, SIGTERM) marks it failed, so
    that it never stays `running` and no worker of a server on the same registry runs it again.
    """
    from training import jobs
    from training.db import in_transaction
    from training.errors import DomainError
    from training.runner import JobLost, TrainingDiverged, job_error, run_job

    worker = jobs.worker_id()
    job_id: str | None = None
    claimed = False
    stop_beating = threading.Event()
    terminate = _TerminateAtEpochEnd()
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        job_id = in_transaction(factory, lambda s: jobs.enqueue(s, spec).id)
        claimed = jobs.claim(factory, job_id, worker)
        if not claimed:
            fail(f"job {job_id} was claimed by another worker (a server on this registry?); see `jepa jobs`")
        threading.Thread(
            target=_heartbeat, args=(factory, job_id, worker, settings.job_stale_s / 4, stop_beating), daemon=True
        ).start()
        console.print(f"job {job_id}: training {spec.model!r} ({spec.config.preset} preset) in {settings.data_dir}")
        with Progress(*_progress_columns(), console=console) as progress:
            task = progress.add_task("train", total=spec.configs()[1].epochs, loss="-")

            def show(p: dict[str, Any]) -> None:
                progress.update(task, completed=p["epoch"], total=p["epochs"], loss=f"{p['loss']:.4f}")
                terminate.check()

            terminate.check()  # a SIGTERM before training began

            return run_job(factory, settings, job_id, on_progress=show, worker=worker)
    except typer.Exit:
        raise
    except BaseException as exc:  # Ctrl-C and SystemExit included: the job must not stay `running`
        stop_beating.set()
        if job_id is None:
            raise
        if isinstance(exc, KeyboardInterrupt):
            reason = "interrupted (Ctrl-C)"
        elif isinstance(exc, Terminated):
            reason = "terminated (SIGTERM)"
        else:
            reason = job_error(exc, settings.data_dir)
        with contextlib.suppress(Exception):  # the original error matters more than this one
            jobs.mark_failed(factory, job_id, reason, worker if claimed else None)
        if isinstance(exc, KeyboardInterrupt | Terminated):
            fail(f"job {job_id} {reason}; marked failed", 130 if isinstance(exc, KeyboardInterrupt) else 143)
        if isinstance(exc, DomainError | JobLost | TrainingDiverged):  # said well enough without a traceback
            fail(f"job {job_id} failed: {exc}")
        raise
    finally:
        stop_beating.set()
        signal.signal(signal.SIGTERM, previous)


def _heartbeat(factory: SessionFactory, job_id: str, worker: str, every_s: float, stop: threading.Event) -> None:
    """Keep a local job fresh, so that stale recovery (JEPA_JOB_STALE_S) never re-queues it mid-epoch."""
    from training import jobs

    while not stop.wait(every_s):
        with contextlib.suppress(Exception):
            jobs.heartbeat(factory, job_id, worker)


def _progress_columns() -> list[Any]:
    return [
        TextColumn("epoch {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]


@app.command()
def encode(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help=".npy array (N, T, D), or long-format .csv (sequence_id,t,<feature>...)"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the embeddings, an .npy array (N, R).")],
    model: Annotated[
        str | None, typer.Option(help="Model name (default: JEPA_DEFAULT_MODEL; the server's with --url).")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="Version number or alias (default: JEPA_DEFAULT_ALIAS if set, else the latest).")
    ] = None,
    normalize: Annotated[bool, typer.Option("--normalize", help="L2-normalise each embedding.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Embed every sequence of a file and save the embeddings (N, R), in the file's order, as .npy.

    With --url the server embeds them: the sequences go as application/x-npy, split into as many
    requests as the server's limits (GET /info: max_batch, max_request_points) need, one length at
    a time for a CSV whose sequences differ in length. Without it the version is loaded from the
    local registry (JEPA_DATA_DIR) and run in this process.
    """
    sequences = _read_sequences(path)
    ref: int | str | None = int(version) if version and version.isdigit() else version
    if url:
        with _remote(url, api_key) as client:
            z = encode_remote(client, sequences, model, ref, normalize)
    else:
        z = _encode_local(_settings(), sequences, model, ref, normalize)
    _save_npy(out, z)
    console.print(f"{z.shape[0]} embeddings of {z.shape[1]} dimensions written to {out}")


def _read_sequences(path: Path) -> np.ndarray | list[np.ndarray]:
    """An (N, T, D) array (memory-mapped) for a .npy file; a list of (T_i, D) float32 arrays for a CSV."""
    import numpy as np

    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            fail(f"{path} is not a readable .npy array: {exc}", 2)
        if array.ndim != 3 or 0 in array.shape:
            fail(f"{path} must hold an array (N, T, D), got shape {array.shape}", 2)
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            fail(f"{path} must hold real numbers, got {array.dtype}", 2)
        return array
    if suffix == ".csv":
        from training.datasets import TO_EMBED, parse_csv
        from training.errors import InvalidInput

        try:
            return parse_csv(path.read_bytes(), TO_EMBED)
        except InvalidInput as exc:
            fail(f"{path}: {exc}", 2)
    fail(f"{path}: encode takes an .npy or a .csv file", 2)


def length_groups(sequences: np.ndarray | list[np.ndarray]) -> dict[int, list[int]]:
    """The indices of the sequences of each length, in order."""
    groups: dict[int, list[int]] = {}
    if not isinstance(sequences, list):
        return {sequences.shape[1]: list(range(sequences.shape[0]))}
    for i, seq in enumerate(sequences):
        groups.setdefault(len(seq), []).append(i)
    return groups


def per_request(steps: int, features: int, limits: dict[str, float]) -> int:
    """How many sequences of `steps` x `features` numbers one request may carry under `limits`
    (/info's): at most max_batch sequences and max_request_points numbers, in a body under
    max_body_bytes. Exits when even one sequence is too big."""
    numbers = steps * features
    fits = min(
        int(limits.get("max_batch", 4096)),
        int(limits.get("max_request_points", 2_097_152)) // numbers,
        (int(limits.get("max_body_bytes", 64 * 2**20)) - 4096) // (4 * numbers),
    )
    if steps > limits.get("max_seq_len", math.inf) or fits < 1:
        fail(
            f"a sequence of {steps} steps x {features} features is over the server's per-request limits "
            f"(max_seq_len {limits.get('max_seq_len')}, max_request_points {limits.get('max_request_points')})",
            2,
        )
    return fits


def encode_remote(
    client: JEPAClient,
    sequences: np.ndarray | list[np.ndarray],
    model: str | None,
    version: int | str | None,
    normalize: bool,
    retries: int = 20,
) -> np.ndarray:
    """(N, R) embeddings from the server, as many requests as its limits need (each a rectangular
    .npy batch), reassembled in the input's order; 429s are retried after their Retry-After."""
    import numpy as np

    from service.client import BadResponse, Overloaded

    limits = client.info()["limits"]
    features = sequences.shape[2] if not isinstance(sequences, list) else sequences[0].shape[1]
    result: np.ndarray | None = None
    for steps, indices in length_groups(sequences).items():
        size = per_request(steps, features, limits)
        for start in range(0, len(indices), size):
            chunk = indices[start : start + size]
            if isinstance(sequences, list):
                batch = np.stack([sequences[i] for i in chunk]).astype(np.float32)
            else:
                batch = np.asarray(sequences[chunk[0] : chunk[-1] + 1], dtype=np.float32)
            for attempt in range(retries + 1):
                try:
                    z = client.encode(batch, model=model, version=version, normalize=normalize)
                    break
                except Overloaded as exc:
                    if attempt == retries:
                        raise
                    time.sleep(min(exc.retry_after or 1.0, MAX_RETRY_WAIT_S))
            if result is None:
                result = np.empty((len(sequences), z.shape[1]), dtype=np.float32)
            if z.shape[1] != result.shape[1]:
                raise BadResponse(
                    200, f"POST /encode: embeddings of {z.shape[1]} numbers after ones of {result.shape[1]}"
                )
            result[chunk] = z
    assert result is not None  # a file holds at least one sequence
    return result


def _load_local(
    settings: Settings, sequences: np.ndarray | list[np.ndarray], model: str | None, version: int | str | None
) -> tuple[LoadedCheckpoint, dict[str, Any]]:
    """The version from the local registry (JEPA_DATA_DIR), with its metrics; exits saying why
    when it cannot be loaded or does not take the sequences' features."""
    from jepa_model import CheckpointError, load_checkpoint
    from training.artifacts import open_store
    from training.errors import DomainError
    from training.registry import get_version

    factory = _registry(settings)
    name = model or settings.default_model
    try:
        with factory() as session:
            row = get_version(session, name, version, settings.default_alias)
            sha256, number, metrics = row.sha256, row.number, dict(row.metrics or {})
            directory = open_store(settings.artifact_store, settings.data_dir).fetch(session, row.path)
        loaded = load_checkpoint(directory, expected_sha256=sha256)
    except (DomainError, CheckpointError) as exc:
        fail(str(exc))
    expected = loaded.model_config.input_dim
    features = sequences.shape[2] if not isinstance(sequences, list) else sequences[0].shape[1]
    if features != expected:
        fail(f"{name} v{number} expects {expected} features per step, the file has {features}", 2)
    return loaded, metrics


def _encode_local(
    settings: Settings,
    sequences: np.ndarray | list[np.ndarray],
    model: str | None,
    version: int | str | None,
    normalize: bool,
) -> np.ndarray:
    import numpy as np

    from jepa_model.metrics import embed_sequences

    loaded, _ = _load_local(settings, sequences, model, version)
    groups = length_groups(sequences)
    result: np.ndarray | None = None
    for indices in groups.values():
        batch = [np.array(sequences[i], dtype=np.float32) for i in indices]  # copies: a memmap is read-only
        z = embed_sequences(loaded.model, batch)
        if result is None:
            result = np.empty((len(sequences), z.shape[1]), dtype=np.float32)
        result[indices] = z
    assert result is not None
    if normalize:
        result /= np.maximum(np.linalg.norm(result, axis=1, keepdims=True), 1e-12)
    return result


@app.command()
def score(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help=".npy array (N, T, D), or long-format .csv (sequence_id,t,<feature>...)"
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Save each step's score, an .npy array (N, T), NaN for the warm-up.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model name (default: JEPA_DEFAULT_MODEL; the server's with --url).")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="Version number or alias (default: JEPA_DEFAULT_ALIAS if set, else the latest).")
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="memory (distance from the training data), forecast (surprise of each window's future), or "
            "auto (memory where the version has one)."
        ),
    ] = "auto",
    stride: Annotated[int, typer.Option(min=1, help="forecast: steps between one window and the next.")] = 1,
    context_len: Annotated[
        int | None, typer.Option(min=1, help="forecast: context steps (default: the version's).")
    ] = None,
    target_len: Annotated[
        int | None, typer.Option(min=1, help="forecast: target steps (default: the version's).")
    ] = None,
    top: Annotated[int, typer.Option(min=0, max=100, help="Most anomalous segments shown per series.")] = 3,
    threshold: Annotated[
        float, typer.Option(min=0, max=100, help="A segment's steps score at least this percentile.")
    ] = 99.0,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Score long series step by step for anomalies (POST /score), and print each series' most
    anomalous segments.

    With --url the server scores them; without it the version is loaded from the local registry
    (JEPA_DATA_DIR) and run in this process, with the same method and calibration.
    """
    import numpy as np

    if method not in ("auto", "memory", "forecast"):
        raise typer.BadParameter("method must be auto, memory or forecast", param_hint="--method")
    sequences = _read_sequences(path)
    ref: int | str | None = int(version) if version and version.isdigit() else version
    options = {"method": method, "context_len": context_len, "target_len": target_len, "stride": stride, "top": top}
    options |= {"threshold": threshold}
    options = {k: v for k, v in options.items() if v is not None}
    if url:
        with _remote(url, api_key) as client:
            scored = client.score([np.asarray(x, dtype=np.float32) for x in sequences], model, ref, **options)
    else:
        scored = _score_local(_settings(), sequences, model, ref, options)
    table = Table("series", "start", "end", "peak", "score", "percentile")
    for i, series in enumerate(scored["series"]):
        for seg in series["segments"]:
            percentile = "-" if seg["percentile"] is None else f"{seg['percentile']:.1f}"
            table.add_row(
                str(i), str(seg["start"]), str(seg["end"]), str(seg["peak"]), f"{seg['score']:.4f}", percentile
            )
    console.print(table)
    if out is not None:
        steps = np.full((len(scored["series"]), max(len(s["scores"]) for s in scored["series"])), np.nan, np.float32)
        for row, series in zip(steps, scored["series"], strict=True):
            row[: len(series["scores"])] = series["scores"]
        _save_npy(out, steps)
        console.print(f"step scores of {len(steps)} series written to {out}")


def _score_local(
    settings: Settings,
    sequences: np.ndarray | list[np.ndarray],
    model: str | None,
    version: int | str | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    import numpy as np

    from jepa_model.memory import memory_scores
    from jepa_model.surprise import series_surprise, summarize

    loaded, metrics = _load_local(settings, sequences, model, version)
    memory = loaded.model.memory
    if options["method"] != "forecast" and memory is not None and memory.built:
        calibration = [float(v) for v in memory.calibration]
        scores = [memory_scores(loaded.model.target_encoder, memory, np.asarray(x, np.float32)) for x in sequences]
        return {"series": [summarize(s, calibration, options["threshold"], options["top"]) for s in scores]}
    if options["method"] == "memory":
        fail(
            "this version has no anomaly memory (a window model, or trained before memories): use --method forecast", 2
        )
    context_len = options.get("context_len") or loaded.train_config.context_len
    target_len = options.get("target_len") or loaded.train_config.target_len
    series = []
    for i in range(len(sequences)):
        x = np.array(sequences[i], dtype=np.float32)
        if len(x) < context_len + target_len:
            fail(f"series {i} has {len(x)} steps; scoring needs at least {context_len + target_len}", 2)
        steps = series_surprise(loaded.model, x, context_len, target_len, options["stride"])
        series.append(summarize(steps, metrics.get("surprise_percentiles"), options["threshold"], options["top"]))
    return {"series": series}


def _save_npy(out: Path, array: np.ndarray) -> None:
    import numpy as np

    try:
        with out.open("wb") as f:  # np.save(path) would append .npy to a name without it
            np.save(f, array, allow_pickle=False)
    except OSError as exc:
        fail(f"cannot write {out}: {exc}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where to save the PNGs.")] = Path("demo-output"),
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 50,
    pattern: Annotated[str, typer.Option(help="circle, linear or mixed.")] = "circle",
    preset: Annotated[
        str, typer.Option(help="default (picks by the data), trajectory, series, or seed (the seed's recipe).")
    ] = "default",
    seed: Annotated[int, typer.Option(help="Data and training seed.")] = 0,
) -> None:
    """The seed's main.py: train on toy trajectories, print its lines and the collapse-aware
    metrics, and save sample sequences, the loss curve, a PCA of the representations and
    prediction examples as PNGs. Needs no server or database."""
    from training.demo import run_demo

    if pattern not in ("circle", "linear", "mixed"):
        raise typer.BadParameter("pattern must be circle, linear or mixed", param_hint="--pattern")
    run_demo(out, epochs, pattern, preset, seed, say=console.print)


datasets_app = typer.Typer(help="Upload and list datasets to train on (`jepa datasets` alone lists them).")
app.add_typer(datasets_app, name="datasets")
LimitOption = Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")]


@datasets_app.callback(invoke_without_command=True)
def datasets_default(
    ctx: typer.Context, limit: LimitOption = 20, url: UrlOption = None, api_key: ApiKeyOption = None
) -> None:
    if ctx.invoked_subcommand is None:
        list_datasets(limit, url, api_key)
        return
    for name in ("limit", "url", "api_key"):  # `jepa datasets --url X upload F` would drop them
        source = ctx.get_parameter_source(name)  # an enum of typer's own copy of click
        if source is not None and source.name == "COMMANDLINE":
            option = "--" + name.replace("_", "-")
            fail(f"put {option} after the subcommand: jepa datasets {ctx.invoked_subcommand} ... {option} ...", 2)


@datasets_app.command("upload")
def upload_dataset(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npy (N, T, D) or long-format .csv")],
    name: Annotated[str | None, typer.Option(help="Default: the file's name.")] = None,
    init: InitOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    idempotency_key: IdempotencyKeyOption = None,
) -> None:
    """Store a dataset in the registry (POST /datasets with --url). A CSV may have a `label` column."""
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv"):
        raise typer.BadParameter("upload a .npy or .csv file", param_hint="PATH")
    if idempotency_key and not url:
        raise typer.BadParameter("only with --url: a local upload is not retried", param_hint="--idempotency-key")
    if url:
        with _remote(url, api_key) as client:
            row = client.upload_dataset(path, name=name or path.stem, idempotency_key=idempotency_key)
    else:
        row = _upload_local(_settings(), path, name or path.stem, init)
    console.print(
        f"dataset [bold]{_cell(row['id'])}[/bold]: {_cell(row['num_sequences'])} sequences of "
        f"{_cell(row['input_dim'])} features"
    )


def _upload_local(settings: Settings, path: Path, name: str, init: bool) -> dict[str, Any]:
    from training import datasets
    from training.artifacts import open_store
    from training.db import in_transaction
    from training.errors import InvalidInput

    parse = datasets.parse_npy if path.suffix.lower() == ".npy" else datasets.parse_csv_labelled
    try:
        parsed = parse(path.read_bytes())
    except InvalidInput as exc:
        fail(str(exc), 2)
    sequences, labels = parsed if isinstance(parsed, tuple) else (parsed, None)  # a CSV's `label` column
    factory = _registry(settings, init)
    store = open_store(settings.artifact_store, settings.data_dir)
    row = in_transaction(factory, lambda s: datasets.store_dataset(s, store, name, sequences, labels))
    return {"id": row.id, "num_sequences": row.num_sequences, "input_dim": row.input_dim}


@datasets_app.command("list")
def list_datasets(limit: LimitOption = 20, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """List datasets with their shapes."""
    rows = _fetch(url, api_key, lambda client: client.datasets(limit=limit), _local_datasets, limit)
    table = Table("id", "name", "sequences", "features", "lengths", "created")
    for d in rows:
        table.add_row(_cell(d["id"]), _cell(d["name"]), _cell(d["num_sequences"]), _cell(d["input_dim"]),
                      _cell(f"{d['min_len']}-{d['max_len']}"), _cell(_when(d["created_at"])))  # fmt: skip
    console.print(table)


delete_app = typer.Typer(help="Delete a version, a finished job or a dataset, with what it stored.")
app.add_typer(delete_app, name="delete")


def _delete(
    url: str | None, api_key: str | None, remote: Callable[[JEPAClient], Any], local: Callable[..., Any]
) -> None:
    """Through the server at `url`, or in the local registry (then removing the artifact)."""
    from training import lifecycle
    from training.artifacts import open_store
    from training.db import in_transaction
    from training.errors import DomainError

    try:
        if url:
            with _remote(url, api_key) as client:
                remote(client)
            return
        settings = _settings()
        store = open_store(settings.artifact_store, settings.data_dir)
        path = in_transaction(_registry(settings), lambda session: local(session, store))
        if path is not None:
            lifecycle.remove_artifact(settings.data_dir, path)
    except DomainError as exc:
        fail(str(exc), 2)


@delete_app.command("version")
def delete_version(
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version number.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Delete the default model's only version too (/ready then fails).")
    ] = False,
) -> None:
    """Delete a version and its checkpoint; refused while an alias points at it, and for the
    default model's only version without --force."""
    from training import lifecycle

    def local(session: Any, store: Any) -> str:
        keep_last = model == _settings().default_model and not force
        return lifecycle.delete_version(session, store, model, version, keep_last=keep_last)

    _delete(url, api_key, lambda client: client.delete_version(model, version, force=force), local)
    console.print(f"deleted {model} v{version}")


@delete_app.command("job")
def delete_job(job_id: str, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Delete a finished job and its epoch history (the version it made stays)."""
    from training import lifecycle

    _delete(url, api_key, lambda c: c.delete_job(job_id), lambda s, _: lifecycle.delete_job(s, job_id))
    console.print(f"deleted job {job_id}")


@delete_app.command("dataset")
def delete_dataset(dataset_id: str, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Delete a dataset and its file; refused while a queued or running job trains on it."""
    from training import lifecycle

    _delete(
        url,
        api_key,
        lambda c: c.delete_dataset(dataset_id),
        lambda s, store: lifecycle.delete_dataset(s, store, dataset_id),
    )
    console.print(f"deleted dataset {dataset_id}")


@app.command("logs")
def show_logs(
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job ends.")] = False,
    wait_timeout: WaitTimeoutOption = WAIT_TIMEOUT_S,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Print a training job's log lines (GET /jobs/{id}/logs), every attempt, oldest first.

    Control characters in the lines are printed as escapes (\\x1b); each line is printed once,
    whatever the server's paging cursor does."""
    from service.client import JOB_STATES
    from training.models import JobStatus

    def page(since: int) -> tuple[dict[str, Any], str]:
        if url:
            with _remote(url, api_key) as client:
                return client.job_logs(job_id, since=since), client.job(job_id)["status"]
        with _registry(_settings())() as session:
            return _local_logs(session, job_id, since), _local_job_status(session, job_id)

    deadline = time.monotonic() + wait_timeout
    since = 0  # the newest line printed: lines come with increasing ids, and none at or before it is printed again
    while True:
        answer, status = page(since)
        fresh = 0
        for line in answer["lines"]:
            if line["id"] <= since:
                continue
            when = f"[dim]{_cell(line['created_at'])} #{_cell(line['attempt'])}[/dim]"
            console.print(f"{when} {_cell(line['level'])}: {_cell(line['message'])}", soft_wrap=True)
            since, fresh = line["id"], fresh + 1
        if answer["lines"] and not fresh:
            fail(f"the server answered job {job_id}'s lines after {since} with lines already printed; stopped")
        if status not in JOB_STATES:
            fail(f"job {job_id} has status {status!r}, not one this command knows ({', '.join(JOB_STATES)})")
        if not follow or (status not in JobStatus.ACTIVE and not fresh):
            return
        if time.monotonic() >= deadline:
            fail(f"stopped following job {job_id} after --wait-timeout {wait_timeout:g} s; it is still {status}")
        if not fresh:
            time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))


def _local_logs(session: Any, job_id: str, since: int) -> dict[str, Any]:
    from training import job_logs

    rows = job_logs.read_logs(session, job_id, since, 1000)
    lines = [{"id": r.id, "attempt": r.attempt, "created_at": r.created_at.isoformat(), "level": r.level,
              "message": r.message} for r in rows]  # fmt: skip
    return {"lines": lines, "next_since": lines[-1]["id"] if lines else since}


def _local_job_status(session: Any, job_id: str) -> str:
    from training import jobs
    from training.errors import DomainError

    try:
        return jobs.get_job(session, job_id).status
    except DomainError as exc:
        fail(str(exc), 2)


@app.command("gc")
def collect_garbage(
    min_age_s: Annotated[
        float,
        typer.Option(
            "--min-age-s",
            min=0,
            help="Leave artifacts younger than this: a checkpoint or upload is written just before its row is "
            "committed, so a young orphan may be one in the making.",
        ),
    ] = 3600,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go.")] = False,
) -> None:
    """Remove checkpoints and dataset files under JEPA_DATA_DIR that no version or dataset names
    (left by a crash between a delete's commit and its cleanup, or by a failed job), and say what
    that freed. Run it where the data directory is."""
    from training import lifecycle
    from training.artifacts import open_store

    settings = _settings()
    store = open_store(settings.artifact_store, settings.data_dir)
    with _registry(settings)() as session:
        report = lifecycle.collect_garbage(session, store, min_age_s, dry_run)
    verb = "would remove" if dry_run else "removed"
    for relative in report.removed:
        console.print(f"{verb} {escape(relative)}")
    console.print(
        f"{verb} {len(report.removed)} orphaned artifacts, {report.bytes_freed / 1e6:.1f} MB; "
        f"{report.kept_young} younger than {min_age_s:g} s kept"
    )


@app.command("models")
def list_models(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """List models with their versions and aliases."""
    rows = _fetch(url, api_key, lambda client: client.models(), _local_models)
    table = Table("model", "versions", "latest", "aliases")
    for m in rows:
        aliases = ", ".join(f"{alias}→v{number}" for alias, number in m["aliases"].items())
        latest = str(m["latest"]) if m["latest"] is not None else "-"
        table.add_row(_cell(m["name"]), str(len(m["versions"])), _cell(latest), _cell(aliases) or "-")
    console.print(table)


@app.command("jobs")
def list_jobs(limit: LimitOption = 20, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """List training jobs with their status and progress."""
    rows = _fetch(url, api_key, lambda client: client.jobs(limit=limit), _local_jobs, limit)
    table = Table("job", "model", "status", "epoch", "loss", "version", "created")
    for job in rows:
        p = job["progress"] or {}
        loss = p.get("loss")
        loss = f"{loss:.4f}" if isinstance(loss, int | float) and not isinstance(loss, bool) else "-"
        version = str(job["version"]) if job["version"] is not None else "-"
        table.add_row(_cell(job["id"]), _cell(job["model"]), _cell(job["status"]),
                      _cell(f"{p.get('epoch', 0)}/{p.get('epochs', '?')}"), loss, _cell(version),
                      _cell(_when(job["created_at"])))  # fmt: skip
    console.print(table)


def _fetch(
    url: str | None, api_key: str | None, remote: Callable[[JEPAClient], Any], local: Callable[..., Any], *args: Any
) -> list[dict[str, Any]]:
    """Rows shaped like the API's answers: from the server at `url`, or from the local registry."""
    if url:
        with _remote(url, api_key) as client:
            return remote(client)
    with _registry(_settings())() as session:
        return local(session, *args)


def _local_datasets(session: Any, limit: int) -> list[dict[str, Any]]:
    from training import datasets

    keys = ("id", "name", "num_sequences", "input_dim", "min_len", "max_len", "created_at")
    return [{key: getattr(d, key) for key in keys} for d in datasets.list_datasets(session, limit)]


def _local_models(session: Any) -> list[dict[str, Any]]:
    from training.registry import list_models as registry_models

    return [
        {
            "name": m.name,
            "versions": [v.number for v in m.versions],
            "latest": m.versions[-1].number if m.versions else None,
            "aliases": {a.name: a.version.number for a in m.aliases},
        }
        for m in registry_models(session)
    ]


def _local_jobs(session: Any, limit: int) -> list[dict[str, Any]]:
    from training.jobs import list_jobs as queue_jobs

    return [
        {
            "id": job.id,
            "model": job.model_name,
            "status": job.status,
            "progress": job.progress,
            "version": job.version.number if job.version else None,
            "created_at": job.created_at,
        }
        for job in queue_jobs(session, limit=limit)
    ]


def _when(created: Any) -> str:
    """A datetime, or the API's ISO string, to the second."""
    return str(created).replace("T", " ")[:19]


if __name__ == "__main__":
    app()
