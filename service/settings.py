"""The service's one settings class. Every field is read from a JEPA_-prefixed environment variable."""

from __future__ import annotations

from functools import lru_cache

from training.settings import StorageSettings


class Settings(StorageSettings):
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"

    default_model: str = "trajectories"
    # Requests that name no version get this alias when it is set, else the latest version.
    default_alias: str = "production"
    # Loaded versions kept in memory, least recently used evicted first.
    model_cache_size: int = 8
    # Torch threads for inference. One thread per API process avoids oversubscribing small hosts.
    inference_threads: int = 1

    # Run a worker thread inside `jepa serve`; turn off when separate `jepa worker`s run.
    embedded_worker: bool = True
    worker_poll_s: float = 1.0
    # On first start with no versions of the default model, queue a job that trains one.
    bootstrap: bool = True
    bootstrap_epochs: int = 50
    bootstrap_num_samples: int = 1000


@lru_cache
def get_settings() -> Settings:
    return Settings()
