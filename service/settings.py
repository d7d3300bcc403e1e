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
    # Torch threads for inference. One thread per API process avoids oversubscribing small hosts:
    # the other core is the event loop's (and, on one machine, the load's). Scale with replicas.
    inference_threads: int = 1
    # Micro-batching: concurrent requests for one version and sequence length share a forward
    # pass of at most max_batch sequences; a lone request waits at most batch_wait_ms for company.
    # 0 still batches: whatever queues up while the inference thread is busy goes in together.
    max_batch: int = 1024
    batch_wait_ms: float = 0.0
    # Requests waiting for the inference thread; past this, 429 at once.
    max_queue: int = 256
    # How long a resolved name/version/alias is reused before the registry is asked again.
    resolve_ttl_s: float = 1.0
    # How often Python hands the GIL between threads (sys.setswitchinterval); small, so the
    # inference thread gets it back quickly from the event loop after each forward pass.
    gil_switch_interval_ms: float = 0.2

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
