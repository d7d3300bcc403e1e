"""`jepa train`: the POST /train body from a file and flags, then the job queued and followed,
on a server (--url) or trained by a worker of this command on the local registry."""

from __future__ import annotations

import contextlib
import json
import signal
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.cli_common import (
    WAIT_TIMEOUT_S,
    ApiKeyOption,
    IdempotencyKeyOption,
    InitOption,
    ModelOption,
    UrlOption,
    WaitTimeoutOption,
    api_client,
    cell,
    console,
    detail_text,
    fail,
    load_settings,
    registry_exists,
    remote_client,
)

if TYPE_CHECKING:
    from service.client import JEPAClient

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
    model: ModelOption = None,
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
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="Follow the job with a progress bar until it ends. --no-wait prints its id and returns; without "
            "--url the job then waits in the local registry for a `jepa worker` or `jepa serve` to train it.",
        ),
    ] = True,
    wait_timeout: WaitTimeoutOption = WAIT_TIMEOUT_S,
    init: InitOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    idempotency_key: IdempotencyKeyOption = None,
) -> None:
    """Train a new version and register it, with a progress bar (epochs, loss).

    The job is queued (POST /train) and followed by polling GET /jobs/{id}. With --url it trains on
    that server, and Ctrl-C only stops waiting. Without it, this command runs a worker that trains
    the job in a child process against the local registry (which must exist unless --init is given;
    jobs queued there before it go first), and Ctrl-C (exit 130) or SIGTERM (143) cancels the job.
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
        _train_local(body, wait, wait_timeout, init)


def _train_remote(
    url: str, api_key: str | None, body: dict[str, Any], wait: bool, key: str | None, wait_timeout: float
) -> None:
    with remote_client(url, api_key) as client:
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
        console.print(f"registered [bold]{cell(job['model'])}[/bold] version [bold]{cell(job['version'])}[/bold]")


def _train_local(body: dict[str, Any], wait: bool, wait_timeout: float, init: bool) -> None:
    settings = load_settings()
    if init and not registry_exists(settings):
        _check_before_creating(body)
    with api_client(None, None, init, trains=wait) as client:
        job_id = client.train(body.get("dataset", {}), body.get("config"), body.get("model"))
        where = settings.safe_database_url if settings.database_url else settings.data_dir.resolve()
        console.print(f"job {job_id} queued in {cell(where)}")
        if not wait:
            console.print("a `jepa worker` or `jepa serve` on this registry trains it")
            return
        try:
            with _cancelled_when_stopped(client, job_id):
                job = client.wait_for_job(job_id, timeout=wait_timeout, poll_s=0.5, progress=True)
        except TimeoutError:
            fail(
                f"job {job_id} did not finish within --wait-timeout {wait_timeout:g} s; it goes back to the queue "
                "for a `jepa worker` or `jepa serve` on this registry"
            )
        console.print(f"registered [bold]{cell(job['model'])}[/bold] version [bold]{cell(job['version'])}[/bold]")


def _check_before_creating(body: dict[str, Any]) -> None:
    """Refuse what POST /train would refuse before --init creates a registry for it: the route's
    own schema, its errors worded as the API's 422 words them."""
    from pydantic import ValidationError

    from service.schemas import TrainRequest

    try:
        TrainRequest.model_validate(body)
    except ValidationError as exc:
        fail(detail_text([{"loc": error["loc"], "msg": error["msg"]} for error in exc.errors()]), 2)


class Terminated(BaseException):
    """SIGTERM while a local `jepa train` waits for its job."""


@contextlib.contextmanager
def _cancelled_when_stopped(client: JEPAClient, job_id: str) -> Iterator[None]:
    """Ctrl-C (exit 130) or SIGTERM (exit 143) cancels the job through the API: its worker stops
    the training process within a heartbeat, and nothing is registered.

    SIGTERM's handler raises where the main thread happens to be, which is safe here: that thread
    only waits for the app's answers, and every database write happens on the app's threads."""

    def terminate(*_: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except (KeyboardInterrupt, Terminated) as exc:
        signal.signal(signal.SIGTERM, previous)  # a second SIGTERM ends the process at once
        interrupted = isinstance(exc, KeyboardInterrupt)
        reason = "interrupted (Ctrl-C)" if interrupted else "terminated (SIGTERM)"
        fail(f"job {job_id} {reason}; {_cancel(client, job_id)}", 130 if interrupted else 143)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cancel(client: JEPAClient, job_id: str) -> str:
    """Cancel the job; what became of it, in words."""
    from service.client import Conflict

    try:
        client.cancel(job_id)
    except Conflict:  # it ended meanwhile
        return f"it had already ended {client.job(job_id)['status']}"
    return "cancelled"
