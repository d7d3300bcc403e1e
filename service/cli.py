"""The `jepa` command: serve the API, run a worker, or train a version from the shell."""

from __future__ import annotations

import json
import logging
import logging.config
import signal
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from service.settings import Settings

if TYPE_CHECKING:
    from training.db import SessionFactory
    from training.spec import TrainingSpec

app = typer.Typer(help="Train and serve JEPA sequence encoders.", no_args_is_help=True, add_completion=False)
console = Console()


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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind. [default: JEPA_HOST or 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on. [default: JEPA_PORT or 8000]")] = None,
) -> None:
    """Start the HTTP API (and, unless JEPA_EMBEDDED_WORKER=0, a worker that runs training jobs).

    The database schema is brought to head first. With an empty registry, the default model is
    queued for training and /ready answers 503 until it can be served.
    """
    import uvicorn

    from service.protocol import with_header_timeout

    settings = Settings()
    config = _setup_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        "service.app:create_app",
        log_config=config,
        factory=True,
        http=with_header_timeout(settings.header_timeout_s),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )


@app.command()
def worker() -> None:
    """Run a worker: claim queued training jobs and train each in a child process."""
    from training.worker import Worker

    settings = Settings()
    _setup_logging(settings.log_level, settings.log_format)
    w = Worker(settings, _session_factory(settings))
    signal.signal(signal.SIGTERM, lambda *_: w.stop())
    try:
        w.run()
    except KeyboardInterrupt:
        w.stop()


def _load_config_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix == ".toml":
        return tomllib.loads(text)
    return json.loads(text)


@app.command()
def train(
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="JSON or TOML file shaped like the POST /train body; flags override it."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name. [default: JEPA_DEFAULT_MODEL]")] = None,
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
) -> None:
    """Train a new version in this process and record it in the registry, with a progress bar."""
    from pydantic import ValidationError

    from training.spec import TrainingSpec

    settings = Settings()
    body = _load_config_file(config_file) if config_file else {}
    body["model"] = model or body.get("model") or settings.default_model
    dataset_flags = {"pattern": pattern, "num_samples": num_samples, "seq_len": seq_len, "noise": noise}
    dataset_flags["seed"] = data_seed
    config_flags = {"preset": preset, "epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum}
    config_flags |= {"context_len": context_len, "target_len": target_len, "seed": seed}
    config_flags |= {"hidden_dim": hidden_dim, "repr_dim": repr_dim}
    body["dataset"] = {**body.get("dataset", {}), **_given(dataset_flags)}
    body["config"] = {**body.get("config", {}), **_given(config_flags)}
    try:
        spec = TrainingSpec.model_validate(body)
    except ValidationError as exc:
        console.print(f"[red]invalid training config:[/red]\n{exc}")
        raise typer.Exit(2) from None
    number = _train_with_progress(settings, spec)
    console.print(f"registered [bold]{spec.model}[/bold] version [bold]{number}[/bold]")


def _given(flags: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flags.items() if v is not None}


def _train_with_progress(settings: Settings, spec: TrainingSpec) -> int:
    """Record the run as an ordinary job, claimed by this process, and train it here."""
    from training import jobs
    from training.db import in_transaction
    from training.runner import run_job

    factory = _session_factory(settings)
    job_id = in_transaction(factory, lambda s: jobs.enqueue(s, spec).id)
    worker = jobs.worker_id()
    jobs.claim(factory, job_id, worker)
    console.print(f"job {job_id}: training {spec.model!r} ({spec.config.preset} preset) in {settings.data_dir}")
    columns = [
        TextColumn("epoch {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("train", total=spec.configs()[1].epochs, loss="-")

        def show(p: dict[str, Any]) -> None:
            progress.update(task, completed=p["epoch"], loss=f"{p['loss']:.4f}")

        try:
            return run_job(factory, settings, job_id, on_progress=show, worker=worker)
        except BaseException as exc:  # Ctrl-C included: the job must not stay `running`
            jobs.mark_failed(factory, job_id, f"{type(exc).__name__}: {exc}", worker)
            raise


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


datasets_app = typer.Typer(help="Upload and list datasets to train on.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("upload")
def upload_dataset(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npy (N, T, D) or long-format .csv")],
    name: Annotated[str | None, typer.Option(help="Default: the file's name.")] = None,
) -> None:
    """Store a dataset in the registry, as POST /datasets would."""
    from training import datasets
    from training.db import in_transaction
    from training.errors import InvalidInput

    parse = {".npy": datasets.parse_npy, ".csv": datasets.parse_csv_labelled}.get(path.suffix.lower())
    if parse is None:
        raise typer.BadParameter("upload a .npy or .csv file", param_hint="PATH")
    settings = Settings()
    try:
        parsed = parse(path.read_bytes())
    except InvalidInput as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    sequences, labels = parsed if isinstance(parsed, tuple) else (parsed, None)  # a CSV's `label` column
    row = in_transaction(
        _session_factory(settings),
        lambda s: datasets.store_dataset(s, settings.data_dir, name or path.stem, sequences, labels),
    )
    console.print(f"dataset [bold]{row.id}[/bold]: {row.num_sequences} sequences of {row.input_dim} features")


@datasets_app.command("list")
def list_datasets(limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20) -> None:
    """List datasets with their shapes."""
    from training import datasets

    settings = Settings()
    table = Table("id", "name", "sequences", "features", "lengths", "created")
    with _session_factory(settings)() as session:
        for d in datasets.list_datasets(session, limit):
            table.add_row(d.id, d.name, str(d.num_sequences), str(d.input_dim), f"{d.min_len}-{d.max_len}",
                          d.created_at.strftime("%Y-%m-%d %H:%M:%S"))  # fmt: skip
    console.print(table)


@app.command("models")
def list_models() -> None:
    """List models with their versions and aliases."""
    from training.registry import list_models as registry_models

    settings = Settings()
    table = Table("model", "versions", "latest", "aliases")
    with _session_factory(settings)() as session:
        for m in registry_models(session):
            aliases = ", ".join(f"{a.name}→v{a.version.number}" for a in m.aliases)
            latest = str(m.versions[-1].number) if m.versions else "-"
            table.add_row(m.name, str(len(m.versions)), latest, aliases or "-")
    console.print(table)


@app.command("jobs")
def list_jobs(limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20) -> None:
    """List training jobs with their status and progress."""
    from training.jobs import list_jobs as queue_jobs

    settings = Settings()
    table = Table("job", "model", "status", "epoch", "loss", "version", "created")
    with _session_factory(settings)() as session:
        for job in queue_jobs(session, limit=limit):
            p = job.progress or {}
            loss = f"{p['loss']:.4f}" if p.get("loss") is not None else "-"
            version = str(job.version.number) if job.version else "-"
            table.add_row(job.id, job.model_name, job.status, f"{p.get('epoch', 0)}/{p.get('epochs', '?')}", loss,
                          version, job.created_at.strftime("%Y-%m-%d %H:%M:%S"))  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    app()
