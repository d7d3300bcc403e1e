"""The inference engine: resolves versions, keeps recent ones loaded, runs torch off the event loop.

It knows nothing about HTTP. All torch work runs on one dedicated thread, so the event loop never
blocks on a forward pass and models are only ever touched from one thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from jepa_model import JEPA, CheckpointError, load_checkpoint
from jepa_model.data import batch_sequences
from jepa_model.jepa import EncoderName
from training.db import SessionFactory
from training.errors import InvalidInput, ModelUnavailable
from training.registry import VersionRef, get_version

log = logging.getLogger("jepa.engine")

T = TypeVar("T")


@dataclass(frozen=True)
class ServedVersion:
    """A registry version, detached from its database session."""

    model: str
    number: int
    version_id: int
    sha256: str
    path: str
    input_dim: int
    repr_dim: int

    @property
    def label(self) -> str:
        return f"model {self.model!r} v{self.number}"


class InferenceEngine:
    def __init__(self, factory: SessionFactory, data_dir: Path, cache_size: int = 8, threads: int = 1) -> None:
        self.factory = factory
        self.data_dir = data_dir
        self.cache_size = max(cache_size, 1)
        self._models: OrderedDict[int, JEPA] = OrderedDict()  # touched only on the inference thread
        torch.set_num_threads(threads)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    # -- registry -----------------------------------------------------------------------------

    def resolve(self, model: str, version: VersionRef, default_alias: str | None) -> ServedVersion:
        with self.factory() as session:
            row = get_version(session, model, version, default_alias)
            return ServedVersion(
                model=row.model.name,
                number=row.number,
                version_id=row.id,
                sha256=row.sha256,
                path=row.path,
                input_dim=int(row.config["model"]["input_dim"]),
                repr_dim=int(row.config["model"]["repr_dim"]),
            )

    # -- running on the inference thread -----------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def load(self, served: ServedVersion) -> JEPA:
        model = self._models.get(served.version_id)
        if model is not None:
            self._models.move_to_end(served.version_id)
            return model
        started = time.perf_counter()
        try:
            model = load_checkpoint(self.data_dir / served.path, expected_sha256=served.sha256).model
        except CheckpointError as exc:
            raise ModelUnavailable(f"{served.label} is unavailable: {exc}") from exc
        self._models[served.version_id] = model
        while len(self._models) > self.cache_size:
            self._models.popitem(last=False)
        log.info("loaded %s in %.3fs", served.label, time.perf_counter() - started)
        return model

    @torch.inference_mode()
    def _embed(self, model: JEPA, sequences: Sequence[np.ndarray], encoder: EncoderName) -> torch.Tensor:
        return model.encode(*batch_sequences(sequences), encoder)  # (B, R)

    def encode(
        self, served: ServedVersion, sequences: Sequence[np.ndarray], encoder: EncoderName, normalize: bool
    ) -> np.ndarray:
        z = self._embed(self.load(served), sequences, encoder)
        return (F.normalize(z, dim=-1) if normalize else z).numpy()

    @torch.inference_mode()
    def predict(
        self, served: ServedVersion, contexts: Sequence[np.ndarray], targets: Sequence[np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if targets is not None and len(targets) != len(contexts):
            raise InvalidInput(f"got {len(contexts)} contexts but {len(targets)} targets; they pair up one to one")
        model = self.load(served)
        predicted = model.predict(*batch_sequences(contexts))  # (B, R)
        if targets is None:
            return predicted.numpy(), None
        actual = self._embed(model, targets, "target")  # (B, R)
        return predicted.numpy(), F.cosine_similarity(predicted, actual, dim=-1).numpy()

    @torch.inference_mode()
    def similarity(
        self, served: ServedVersion, a: Sequence[np.ndarray], b: Sequence[np.ndarray], encoder: EncoderName
    ) -> np.ndarray:
        model = self.load(served)
        za = F.normalize(self._embed(model, a, encoder), dim=-1)  # (A, R)
        zb = F.normalize(self._embed(model, b, encoder), dim=-1)  # (B, R)
        return (za @ zb.T).numpy()  # (A, B)
