"""The service's one settings class. Every field is read from a JEPA_-prefixed environment variable."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import Field, SecretStr, field_validator

from training.settings import StorageSettings


class Settings(StorageSettings):
    host: str = "127.0.0.1"
    port: int = 8000
    # API processes accepting on the port (`jepa serve --workers`). On a small host the event
    # loop's thread is what limits one process; a second one nearly doubles single-sequence
    # throughput (README, "Serving speed"). The embedded worker runs in one of them only.
    workers: int = Field(default=1, ge=1, le=64)
    log_level: str = "info"

    default_model: str = "trajectories"
    # Requests that name no version get this alias when it is set, else the latest version.
    default_alias: str = "production"
    # Loaded versions kept in memory, least recently used evicted first.
    model_cache_size: int = 8
    # Torch threads for inference. One thread per API process avoids oversubscribing small hosts:
    # the other core is the event loop's (and, on one machine, the load's). Scale with replicas.
    inference_threads: int = 1
    # Micro-batching: concurrent requests for one version and length bucket (service.engine's
    # length_bucket; padded to the batch's longest) share a forward pass
    # of at most micro_batch sequences; a lone request waits at most batch_wait_ms for company.
    # 0 still batches: whatever queues up while the inference thread is busy goes in together.
    micro_batch: int = 1024
    # ... and at most this many steps (sequences x the batch's longest length) per forward pass, so
    # activations stay bounded whatever the request's shape; longer sequences run alone. It also
    # bounds how long one pass holds the inference thread (about 0.1 s for the series preset on one
    # CPU thread), and so how long a small request waits behind a large one: requests take turns
    # pass by pass, the least served first (service/batcher.py).
    micro_batch_steps: int = 8_192
    batch_wait_ms: float = 0.0
    # Requests in progress on the inference thread (each counts once, however many passes it
    # needs); past this, 429 at once, with nothing queued.
    max_queue: int = 256
    # How long a resolved name/version/alias is reused before the registry is asked again.
    resolve_ttl_s: float = 1.0
    # How often Python hands the GIL between threads (sys.setswitchinterval); small, so the
    # inference thread gets it back quickly from the event loop after each forward pass.
    gil_switch_interval_ms: float = 0.2

    # How long an Idempotency-Key's answer is kept for retries (service.idempotency).
    idempotency_ttl_s: float = Field(default=86_400.0, gt=0)

    # Run a worker thread inside `jepa serve`; turn off when separate `jepa worker`s run.
    embedded_worker: bool = True
    worker_poll_s: float = 1.0
    # Security and limits. With an API key set, every request that changes state needs
    # `Authorization: Bearer <key>`; with auth_reads, every other request too, except /health
    # and /ready. Without a key the service is open, and says so in its log at start.
    api_key: SecretStr | None = None
    auth_reads: bool = False

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_no_key(cls, value: Any) -> Any:
        # An empty key would "match" an empty bearer token (compare_digest(b"", b"") is true);
        # `JEPA_API_KEY=` in a compose file or chart means "no key", and the start-up log says so.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    # A request whose headers take longer than this to arrive has its connection closed (slowloris).
    header_timeout_s: float = 10.0
    # Bodies past this many bytes get 413 before they are read whole (uploads included).
    max_body_bytes: int = 64 * 1024 * 1024
    # Per inference request: at most this many sequences, each at most max_seq_len steps (one
    # setting for serving and training: training/settings.py), and at most max_request_points
    # numbers (N x T x D over all of the request's sequences). The points cap is what bounds a
    # request's memory: a JSON body is refused before it is parsed when it could hold more values
    # than that allows, and an .npy body before its array is allocated.
    max_batch: int = 4096
    max_request_points: int = 2_097_152
    # /similarity answers |a| x |b| cosines; past this many, 422 (a 4096 x 4096 matrix is 165 MB of JSON).
    max_similarity_pairs: int = 1_048_576
    # POST /score takes long series: each of at most this many steps (still within
    # max_request_points). By forecast they are cut into windows holding at most max_score_points
    # numbers in all (windows x (context + target) x features): the windows' memory, and the
    # forward passes' work. By memory the steps x features are counted against it.
    max_score_len: int = 1_000_000
    max_score_points: int = 4_194_304
    # Past this many queued training jobs, POST /train answers 429.
    max_queued_jobs: int = 64

    # On first start with no versions of the default model, queue a job that trains one.
    bootstrap: bool = True
    bootstrap_epochs: int = 50
    bootstrap_num_samples: int = 1000


@lru_cache
def get_settings() -> Settings:
    return Settings()
