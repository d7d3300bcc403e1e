"""Checkpoints: safetensors weights beside a JSON config, written atomically, verified on load.

Nothing here unpickles: weights are read with safetensors and configs with json. The config is
also embedded in the safetensors metadata, so the recorded sha256 covers it and a config.json
that disagrees with the weights is refused rather than used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from jepa_model.config import ModelConfig, TrainConfig
from jepa_model.jepa import JEPA

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "jepa-checkpoint/1"


class CheckpointError(Exception):
    """A checkpoint cannot be used. The message says which file and why."""


class CheckpointMissing(CheckpointError):
    pass


class CheckpointCorrupt(CheckpointError):
    pass


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: JEPA
    model_config: ModelConfig
    train_config: TrainConfig
    meta: dict[str, Any]  # the whole config.json


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync it, then rename over `path`.

    A crash leaves either the old file or the new one, never a partial file under `path`; a
    failed write (a full disk, most often) removes its temporary file, which would otherwise
    keep the disk full, and raises.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(
    model: JEPA,
    directory: str | os.PathLike[str],
    train_config: TrainConfig,
    preset: str,
    package_version: str,
) -> str:
    """Save `model` under `directory` and return the sha256 of its weights file.

    When writing fails, a directory this call created is removed again with whatever it holds:
    a half-written checkpoint is of no use and takes space.
    """
    directory = Path(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return _write_checkpoint_files(model, directory, train_config, preset, package_version)
    except BaseException:
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        raise


def _write_checkpoint_files(
    model: JEPA, directory: Path, train_config: TrainConfig, preset: str, package_version: str
) -> str:
    meta = {
        "format": FORMAT,
        "package_version": package_version,
        "preset": preset,
        "model": model.config.to_dict(),
        "train": train_config.to_dict(),
    }
    meta_json = json.dumps(meta, sort_keys=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    weights = save_safetensors(tensors, metadata={"jepa_config": meta_json})
    # Weights first: a config.json without weights reads as missing, never as a usable model.
    atomic_write(directory / WEIGHTS_FILE, weights)
    atomic_write(directory / CONFIG_FILE, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return sha256_bytes(weights)


def _read_embedded_config(weights: bytes) -> dict[str, Any]:
    # The safetensors header is an 8-byte little-endian length followed by that much JSON.
    try:
        header_len = int.from_bytes(weights[:8], "little")
        header = json.loads(weights[8 : 8 + header_len])
        return json.loads(header["__metadata__"]["jepa_config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointCorrupt(f"{WEIGHTS_FILE}: no readable embedded config ({exc})") from exc


def checkpoint_problem(directory: str | os.PathLike[str], expected_sha256: str) -> str | None:
    """Why the checkpoint cannot be loaded, or None when it can.

    It runs the whole of `load_checkpoint`, so "available" means exactly "loads": a config.json
    that does not parse, was edited, or no longer fits the weights is reported here too.
    """
    try:
        load_checkpoint(directory, expected_sha256)
    except CheckpointError as exc:
        return str(exc)
    return None


def load_checkpoint(directory: str | os.PathLike[str], expected_sha256: str | None = None) -> LoadedCheckpoint:
    """Rebuild the exact saved model, in eval mode. Raises CheckpointError on any mismatch.

    Messages name the files (model.safetensors, config.json), never the directory: they reach
    API clients, who identify the checkpoint by model and version, not by a server path.
    """
    directory = Path(directory)
    weights_path, config_path = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    for path in (weights_path, config_path):
        if not path.is_file():
            raise CheckpointMissing(f"{path.name} is missing")

    try:
        weights = weights_path.read_bytes()
        config_text = config_path.read_text()
    except OSError as exc:
        raise CheckpointMissing(f"the checkpoint cannot be read ({exc.strerror})") from exc
    actual = sha256_bytes(weights)
    if expected_sha256 is not None and actual != expected_sha256:
        raise CheckpointCorrupt(f"{WEIGHTS_FILE}: sha256 {actual} does not match the recorded {expected_sha256}")

    try:
        meta = json.loads(config_text)
    except ValueError as exc:
        raise CheckpointCorrupt(f"{CONFIG_FILE}: unreadable ({exc})") from exc
    if meta != _read_embedded_config(weights):
        raise CheckpointCorrupt(f"{CONFIG_FILE} disagrees with the config embedded in {WEIGHTS_FILE}")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointCorrupt(f"{CONFIG_FILE}: unsupported format {found!r}, expected {FORMAT!r}")

    try:
        model_config = ModelConfig.from_dict(meta["model"])
        train_config = TrainConfig.from_dict(meta["train"])
        state = load_safetensors(weights)
    except (KeyError, TypeError, ValueError, SafetensorError) as exc:
        raise CheckpointCorrupt(f"{CONFIG_FILE} or {WEIGHTS_FILE} does not describe a model: {exc}") from exc

    model = JEPA.from_config(model_config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointCorrupt(f"{WEIGHTS_FILE}: weights do not fit the config: {exc}") from exc
    model.eval()
    return LoadedCheckpoint(model=model, model_config=model_config, train_config=train_config, meta=meta)


def model_to_bytes(model: JEPA) -> bytes:
    """`model` as safetensors bytes with its ModelConfig embedded: how weights travel between
    processes (a Ray worker to its driver) without pickling them."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return save_safetensors(tensors, metadata={"jepa_model": json.dumps(model.config.to_dict(), sort_keys=True)})


def model_from_bytes(data: bytes) -> JEPA:
    """The exact model `model_to_bytes` wrote, in eval mode; CheckpointCorrupt for anything else."""
    try:
        header_len = int.from_bytes(data[:8], "little")
        config = ModelConfig.from_dict(json.loads(json.loads(data[8 : 8 + header_len])["__metadata__"]["jepa_model"]))
        model = JEPA.from_config(config)
        model.load_state_dict(load_safetensors(data), strict=True)
    except (ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        raise CheckpointCorrupt(f"the model's weights do not describe a model: {exc}") from exc
    return model.eval()
