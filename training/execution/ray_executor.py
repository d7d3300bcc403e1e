"""Train a job on a Ray cluster (JEPA_EXECUTOR=ray): a Ray Train TorchTrainer of the job's
`workers` processes, data-parallel with torch DDP (gloo on CPUs, nccl on GPUs; jepa_model.parallel).

The training process a worker starts (training.execution.runner) stays the job's driver, so the jobs table
stays the source of truth: rank 0 sends each epoch's report through a Ray queue, and the driver
records it as a local run does, and stops the run when the job is no longer its own. The trained
weights come back as rank 0's return value, safetensors bytes, and the driver checkpoints and
registers them through the artifact store exactly as a local run does. Ray nodes need neither
the database, nor secrets, nor a shared disk: the data reaches them through Ray's object store.

A Ray run's actors share the fate of its driver: when the training process ends (finished,
SIGTERMed on cancel, or SIGKILLed with its worker), Ray ends them too.
"""

from __future__ import annotations

import logging
import queue
import signal
import socket
import threading
import time
from typing import Any

import torch
from torch.utils.data import Dataset

from jepa_model import ModelConfig, TrainConfig, __version__, fit
from jepa_model.checkpoint import model_from_bytes, model_to_bytes
from jepa_model.parallel import Shard
from jepa_model.train import EpochCallback, EpochReport, Monitor, TrainResult
from training.errors import ExecutorLost

log = logging.getLogger("jepa.ray")

# How often the driver looks for an epoch report or the end of the run.
POLL_S = 0.5
# How long the driver waits for the cluster's address to answer before calling it lost.
CONNECT_TIMEOUT_S = 5.0


class RunFailed(RuntimeError):
    """The training code itself failed on the cluster; a re-run would fail the same way."""


def _train_loop(config: dict[str, Any]) -> dict[str, Any] | None:
    """Runs in each Ray Train worker. Rank 0 reports epochs and returns the trained model, as
    safetensors bytes (model_to_bytes) with its losses and seconds."""
    import ray
    import ray.train
    import ray.train.torch

    if config["version"] != __version__:
        raise RunFailed(f"this Ray node runs jepa-service {__version__}, the driver {config['version']}")
    context = ray.train.get_context()
    shard = Shard(context.get_world_rank(), context.get_world_size())
    torch.set_num_threads(config["threads"])
    lead = shard.rank == 0
    reports = config["reports"]
    result = fit(
        ray.get(config["dataset"]),
        ModelConfig.from_dict(config["model"]),
        TrainConfig.from_dict(config["train"]),
        on_epoch=reports.put if lead else None,
        monitor=config["monitor"] if lead else None,
        device=ray.train.torch.get_device(),
        shard=shard,
    )
    if not lead:
        return None
    return {"model": model_to_bytes(result.model), "losses": result.losses, "seconds": result.seconds}


def _reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether host:port (or ray://host:port) accepts a connection: ray.init itself waits minutes
    on an address where nothing answers."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _connect(address: str) -> None:
    import ray

    if address != "auto" and not _reachable(address):
        raise ExecutorLost(
            f"cannot reach the Ray cluster at {address} (nothing answered within {CONNECT_TIMEOUT_S:g} s)"
        )
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, or whatever ray.init raises for an address
        raise ExecutorLost(f"cannot reach the Ray cluster at {address} ({type(exc).__name__}: {exc})") from exc
    finally:
        # Ray installs its own; the runner's turns a cancel into SystemExit, which shuts the run down.
        signal.signal(signal.SIGTERM, on_sigterm)


def _check_resources(workers: int, use_gpu: bool) -> None:
    """Refuse a run the whole cluster could never hold, instead of waiting on it for ever."""
    import ray

    resource = "GPU" if use_gpu else "CPU"
    total = ray.cluster_resources().get(resource, 0)
    if total < workers:
        raise RunFailed(
            f"the job asks for {workers} workers, each with 1 {resource}; the Ray cluster has {total:g} "
            f"{resource}s in all: lower `workers` or grow the cluster"
        )


def _classify(exc: BaseException) -> Exception:
    """ExecutorLost for a lost worker, node or controller; RunFailed for the training's own error."""
    from ray.exceptions import RayActorError
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError, WorkerHealthCheckTimeoutError
    from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

    # Ray Train reports a worker whose process or node died as a failed (or hung) health check.
    gone = (RayActorError, WorkerHealthCheckFailedError, WorkerHealthCheckTimeoutError)
    if isinstance(exc, WorkerGroupError):
        failures = exc.worker_failures
        lost = [rank for rank, error in failures.items() if isinstance(error, gone)]
        if lost:
            return ExecutorLost(f"Ray worker of rank {', '.join(map(str, lost))} died during the run")
        rank, first = min(failures.items()) if failures else (0, exc)
        return RunFailed(f"rank {rank} failed: {str(first).strip().splitlines()[-1]}")
    if isinstance(exc, ControllerError | RayActorError | ConnectionError):
        return ExecutorLost(f"the Ray run was lost ({type(exc).__name__}: {str(exc).strip()[:300]})")
    return RunFailed(f"{type(exc).__name__}: {exc}")


def fit_on_ray(
    address: str,
    dataset: Dataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    on_epoch: EpochCallback,
    monitor: Monitor | None,
    threads: int,
    use_gpu: bool,
    run_name: str,
) -> TrainResult:
    """`jepa_model.fit` on the cluster at `address`, with `train_config.workers` processes.

    `on_epoch` runs here, in the driver, for every epoch rank 0 reports; if it raises, the run is
    abandoned (its actors end with the driver's connection). Raises ExecutorLost when the cluster
    or a Ray worker is lost, RunFailed when the training itself fails.
    """
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    _connect(address)
    try:
        _check_resources(train_config.workers, use_gpu)
        if train_config.seed is None:  # every process must draw the same batches (jepa_model.parallel)
            train_config = TrainConfig.from_dict({**train_config.to_dict(), "seed": int(time.time_ns() % 2**32)})
        reports = Queue(actor_options={"num_cpus": 0})
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={
                "version": __version__,
                "dataset": ray.put(dataset),
                "model": model_config.to_dict(),
                "train": train_config.to_dict(),
                "monitor": monitor,
                "threads": threads,
                "reports": reports,
            },
            scaling_config=ScalingConfig(num_workers=train_config.workers, use_gpu=use_gpu),
            # A lost worker ends the run; the job's own attempts decide whether it runs again.
            run_config=RunConfig(name=run_name, failure_config=FailureConfig(max_failures=0)),
        )
        outcome = _run_reporting(trainer, reports, on_epoch)
    finally:
        ray.shutdown()  # ends the run's actors if it is still going (cancelled, or on_epoch raised)
    return TrainResult(model_from_bytes(outcome["model"]), outcome["losses"], outcome["seconds"])


def _run_reporting(trainer: Any, reports: Any, on_epoch: EpochCallback) -> dict[str, Any]:
    """Run `trainer` on a thread and pass rank 0's epoch reports to `on_epoch` here as they come."""
    finished: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue()

    def run() -> None:
        try:
            finished.put((trainer.fit(), None))
        except BaseException as exc:  # noqa: BLE001 - handed to the driver's thread
            finished.put((None, exc))

    threading.Thread(target=run, name="jepa-ray-run", daemon=True).start()
    while True:
        _drain(reports, on_epoch)
        try:
            result, error = finished.get(timeout=POLL_S)
        except queue.Empty:
            continue
        _drain(reports, on_epoch)  # the last epochs' reports may still be in the queue
        if error is not None:
            raise _classify(error) from error
        if result.error is not None:
            raise _classify(result.error) from result.error
        if not isinstance(result.return_value, dict):
            raise RunFailed("the Ray run finished without returning the trained model")
        return result.return_value


def _drain(reports: Any, on_epoch: EpochCallback) -> None:
    """Pass the epoch reports waiting in the queue to `on_epoch`. The queue is an actor on the
    cluster: when it cannot be reached, neither can the run (ExecutorLost)."""
    from ray.exceptions import RayError

    try:
        waiting: list[EpochReport] = reports.get_nowait_batch(reports.qsize())
    except RayError as exc:
        raise ExecutorLost(f"lost the Ray cluster during the run ({type(exc).__name__})") from exc
    for report in waiting:
        on_epoch(report)  # its own errors (the job lost, the loss diverged) pass through unchanged
