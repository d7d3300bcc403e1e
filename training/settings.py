"""Where the registry and checkpoints live. The service's Settings extends this class."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from jepa_model.devices import DeviceName

# The environment variables that size a process's OpenMP and BLAS thread pools (numpy's OpenBLAS,
# MKL where it is the BLAS).
THREAD_POOL_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class StorageSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JEPA_", extra="ignore")

    data_dir: Path = Path("./data")
    # Overrides the SQLite default, e.g. postgresql+psycopg://user@host/db. May hold a password:
    # log `safe_database_url`, never this.
    database_url: str | None = None
    # Threads for a training process: torch's, and its OpenMP and BLAS pools (numpy's probes). One
    # keeps a training job from starving the inference thread on a small machine; raise it on a
    # dedicated worker host.
    train_threads: int = 1
    # A running job whose worker has not heartbeated for this long is re-queued.
    job_stale_s: float = 60.0
    # How long a training job's database writes (progress, registration, failure) keep retrying
    # while the database is unreachable before the job gives up. Keep it at most job_stale_s: a
    # worker cut off for longer is also given up on by the other processes' stale recovery, and
    # both are compare-and-sets on the job, so only one of them takes effect. An outage of the
    # database itself never makes jobs look stale: recovery waits job_stale_s after its own.
    db_retry_s: float = 60.0
    job_max_attempts: int = 3
    # Where checkpoints, datasets and plots are kept (training.store.artifacts): "file", the data
    # directory, which hosts must then share; or "database", the registry database, with each
    # process's data directory only its cache.
    artifact_store: Literal["file", "database"] = "file"
    # Finished jobs (succeeded, failed, cancelled) are deleted this many days after they finished,
    # with their epoch history; the versions they made stay. Unset: kept for ever.
    retain_jobs_days: float | None = Field(default=None, gt=0)
    # A training job whose estimated memory (jepa_model/budget.py: parameters with their optimizer
    # state, a batch's activations, the data) exceeds this many MB is refused when submitted.
    train_memory_mb: int = 4096
    # The longest sequence a model reads at once, in training or serving: each sequence of an
    # inference request (POST /encode, /predict, /similarity), a toy dataset's seq_len, every
    # training option counted in steps (context_len, target_len, max_crop_len...) and /score's
    # forecast windows. The API reads it from here, and the training process too, so raising it
    # raises it everywhere.
    max_seq_len: int = Field(default=4096, ge=2)
    # An uploaded dataset's series, each of at most this many steps: longer than max_seq_len, since
    # training reads long series as overlapping pieces (jepa_model.data.training_pieces) and /score
    # reads them whole (JEPA_MAX_SCORE_LEN).
    max_dataset_len: int = Field(default=1_048_576, ge=2)
    # "json": one JSON object per line (what log pipelines want), or "text" for reading by eye.
    log_format: Literal["json", "text"] = "json"
    # Where models train and serve: `auto` uses CUDA when torch sees it, else the CPU. `cuda`
    # without it stops the server at start and fails training jobs, saying why.
    device: DeviceName = "auto"
    # Where a worker runs the jobs it claims: "local", a training process on its own host; or
    # "ray", a Ray Train run of the job's `workers` processes on the Ray cluster at ray_address
    # (training/execution/ray_executor.py), for which Ray must be installed: pip install 'jepa-service[ray]'.
    executor: Literal["local", "ray"] = "local"
    # The cluster's address, as `ray.init` takes it: host:port of the head's GCS, or ray://host:10001.
    ray_address: str | None = None

    @model_validator(mode="after")
    def _executor_can_start(self) -> Self:
        if self.executor == "ray":
            if importlib.util.find_spec("ray") is None:
                raise ValueError(
                    "JEPA_EXECUTOR=ray needs Ray, which is not installed: pip install 'jepa-service[ray]' "
                    "(or unset JEPA_EXECUTOR to train on this host)"
                )
            if not self.ray_address:
                raise ValueError("JEPA_EXECUTOR=ray needs JEPA_RAY_ADDRESS, the Ray cluster's address (host:port)")
        return self

    def process_env(self, inherited: Mapping[str, str]) -> dict[str, str]:
        """`inherited` with every StorageSettings field set to this object's value, for a child
        process that rebuilds its settings from the environment (the worker's training process).

        Derived from the fields, so one added later reaches the child too. Paths and the database
        URL are resolved, so a relative data_dir means the same directory in the child; an unset
        field is removed, so the child does not read a stale value its parent was built without.
        The values may hold a password (database_url): hand them to the child, never to a log.
        The child's OpenMP and BLAS pools get train_threads threads (read when it imports them):
        more would not train faster, and their idle threads spin on a busy machine."""
        env = dict(inherited) | dict.fromkeys(THREAD_POOL_VARIABLES, str(self.train_threads))
        prefix = self.model_config.get("env_prefix", "")
        for name in StorageSettings.model_fields:
            key = f"{prefix}{name}".upper()
            value = self.resolved_database_url if name == "database_url" else getattr(self, name)
            if value is None:
                env.pop(key, None)
            else:
                env[key] = _env_value(value)
        return env

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'jepa.db').resolve()}"

    @property
    def safe_database_url(self) -> str:
        return make_url(self.resolved_database_url).render_as_string(hide_password=True)


def _env_value(value: object) -> str:
    """A setting's value as its environment variable spells it."""
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, str | int | float):  # bools are ints: "True"/"False" parse back
        return str(value)
    raise TypeError(f"no environment spelling for a setting of type {type(value).__name__}")
