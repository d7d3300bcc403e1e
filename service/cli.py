"""The `jepa` command: serve the API, run a worker, train, encode and list what the registry holds.

`models`, `jobs`, `datasets`, `train`, `encode`, `score`, `logs` and `delete` are clients of the
API (`service.client.JEPAClient`), in one of two modes:

- with `--url` (or JEPA_URL) they talk to a running server, sending `--api-key` (or JEPA_API_KEY)
  as the bearer key;
- without it they talk to the same app run in this process (service/cli_local.py) on the registry
  under JEPA_DATA_DIR (default ./data) or JEPA_DATABASE_URL, so that both modes answer alike; and
  they refuse to run where there is no registry rather than create an empty one (`train` and
  `datasets upload` create one when given `--init`).
"""

from __future__ import annotations

import logging
import logging.config
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from service.cli_common import (
    WAIT_TIMEOUT_S,
    ApiKeyOption,
    IdempotencyKeyOption,
    InitOption,
    UrlOption,
    WaitTimeoutOption,
    api_client,
    cell,
    console,
    fail,
    load_settings,
    require_registry,
    session_factory,
)
from service.cli_inference import encode, score
from service.cli_train import train

if TYPE_CHECKING:
    from service.client import JEPAClient

app = typer.Typer(
    help="Train and serve JEPA sequence encoders. `models`, `jobs`, `datasets`, `train`, `encode` and the "
    "rest talk to a running server with --url (or JEPA_URL); without it, to the same API run in this "
    "process on the local registry under JEPA_DATA_DIR (default ./data).",
    no_args_is_help=True,
    add_completion=False,
)


def _setup_logging(level: str = "info", fmt: str = "text") -> dict[str, Any]:
    from training.logs import log_config

    config = log_config(level, fmt)
    logging.config.dictConfig(config)
    return config


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
    from training.execution.forkserver import TRAINING_PROCESS_NAME, start_fork_server
    from training.execution.runner import run_forked

    settings = load_settings()
    config = _setup_logging(settings.log_level, settings.log_format)
    processes = workers or settings.workers
    group = prepare_group(processes)
    if processes == 1 and settings.embedded_worker:
        # Before uvicorn starts a thread: each job's process is forked from it.
        start_fork_server(run_forked, TRAINING_PROCESS_NAME)
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
    from training.execution.forkserver import TRAINING_PROCESS_NAME, start_fork_server
    from training.execution.runner import run_forked
    from training.worker import Worker

    settings = load_settings()
    _setup_logging(settings.log_level, settings.log_format)
    start_fork_server(run_forked, TRAINING_PROCESS_NAME)
    w = Worker(settings, session_factory(settings), poll_s=settings.worker_poll_s)
    signal.signal(signal.SIGTERM, lambda *_: w.stop())
    try:
        w.run()
    except KeyboardInterrupt:
        w.stop()


app.command()(train)
app.command()(encode)
app.command()(score)


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
    """Store a dataset in the registry (POST /datasets). A CSV may have a `label` column."""
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv"):
        raise typer.BadParameter("upload a .npy or .csv file", param_hint="PATH")
    if idempotency_key and not url:
        raise typer.BadParameter("only with --url: a local upload is not retried", param_hint="--idempotency-key")
    with api_client(url, api_key, init) as client:
        row = client.upload_dataset(path, name=name or path.stem, idempotency_key=idempotency_key)
    console.print(
        f"dataset [bold]{cell(row['id'])}[/bold]: {cell(row['num_sequences'])} sequences of "
        f"{cell(row['input_dim'])} features"
    )


@datasets_app.command("list")
def list_datasets(limit: LimitOption = 20, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """List datasets with their shapes."""
    with api_client(url, api_key) as client:
        rows = client.datasets(limit=limit)
    table = Table("id", "name", "sequences", "features", "lengths", "created")
    for d in rows:
        table.add_row(cell(d["id"]), cell(d["name"]), cell(d["num_sequences"]), cell(d["input_dim"]),
                      cell(f"{d['min_len']}-{d['max_len']}"), cell(_when(d["created_at"])))  # fmt: skip
    console.print(table)


delete_app = typer.Typer(help="Delete a version, a finished job or a dataset, with what it stored.")
app.add_typer(delete_app, name="delete")


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
    with api_client(url, api_key) as client:
        client.delete_version(model, version, force=force)
    console.print(f"deleted {model} v{version}")


@delete_app.command("job")
def delete_job(job_id: str, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Delete a finished job and its epoch history (the version it made stays)."""
    with api_client(url, api_key) as client:
        client.delete_job(job_id)
    console.print(f"deleted job {job_id}")


@delete_app.command("dataset")
def delete_dataset(dataset_id: str, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Delete a dataset and its file; refused while a queued or running job trains on it."""
    with api_client(url, api_key) as client:
        client.delete_dataset(dataset_id)
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
    with api_client(url, api_key) as client:
        _print_logs(client, job_id, follow, wait_timeout)


def _print_logs(client: JEPAClient, job_id: str, follow: bool, wait_timeout: float) -> None:
    from service.client import JOB_STATES
    from training.store.models import JobStatus

    deadline = time.monotonic() + wait_timeout
    since = 0  # the newest line printed: lines come with increasing ids, and none at or before it is printed again
    while True:
        answer, status = client.job_logs(job_id, since=since), client.job(job_id)["status"]
        fresh = 0
        for line in answer["lines"]:
            if line["id"] <= since:
                continue
            when = f"[dim]{cell(line['created_at'])} #{cell(line['attempt'])}[/dim]"
            console.print(f"{when} {cell(line['level'])}: {cell(line['message'])}", soft_wrap=True)
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
    from training.store.artifacts import open_store

    settings = load_settings()
    store = open_store(settings.artifact_store, settings.data_dir)
    require_registry(settings)
    with session_factory(settings)() as session:
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
    with api_client(url, api_key) as client:
        rows = client.models()
    table = Table("model", "versions", "latest", "aliases")
    for m in rows:
        aliases = ", ".join(f"{alias}→v{number}" for alias, number in m["aliases"].items())
        latest = str(m["latest"]) if m["latest"] is not None else "-"
        table.add_row(cell(m["name"]), str(len(m["versions"])), cell(latest), cell(aliases) or "-")
    console.print(table)


@app.command("jobs")
def list_jobs(limit: LimitOption = 20, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """List training jobs with their status and progress."""
    with api_client(url, api_key) as client:
        rows = client.jobs(limit=limit)
    table = Table("job", "model", "status", "epoch", "loss", "version", "created")
    for job in rows:
        p = job["progress"] or {}
        loss = p.get("loss")
        loss = f"{loss:.4f}" if isinstance(loss, int | float) and not isinstance(loss, bool) else "-"
        version = str(job["version"]) if job["version"] is not None else "-"
        table.add_row(cell(job["id"]), cell(job["model"]), cell(job["status"]),
                      cell(f"{p.get('epoch', 0)}/{p.get('epochs', '?')}"), loss, cell(version),
                      cell(_when(job["created_at"])))  # fmt: skip
    console.print(table)


def _when(created: str) -> str:
    """The API's ISO timestamp, to the second."""
    return str(created).replace("T", " ")[:19]


if __name__ == "__main__":
    app()
