"""`jepa encode` and `jepa score`: a file's sequences sent to the API within its limits (GET /info),
the answers saved as .npy."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from service.cli_common import ApiKeyOption, ModelOption, UrlOption, VersionOption, api_client, console, fail

if TYPE_CHECKING:
    import numpy as np

    from service.client import JEPAClient

MAX_RETRY_WAIT_S = 60.0  # the longest a 429's Retry-After makes `jepa encode` wait before retrying


def encode(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help=".npy array (N, T, D), or long-format .csv (sequence_id,t,<feature>...)"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the embeddings, an .npy array (N, R).")],
    model: ModelOption = None,
    version: VersionOption = None,
    normalize: Annotated[bool, typer.Option("--normalize", help="L2-normalise each embedding.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Embed every sequence of a file and save the embeddings (N, R), in the file's order, as .npy.

    The server (with --url) or the app in this process embeds them: the sequences go as
    application/x-npy, split into as many requests as its limits (GET /info: max_batch,
    max_request_points) need, one length at a time for a CSV whose sequences differ in length.
    """
    sequences = _read_sequences(path)
    ref: int | str | None = int(version) if version and version.isdigit() else version
    with api_client(url, api_key) as client:
        z = encode_in_requests(client, sequences, model, ref, normalize)
    _save_npy(out, z)
    console.print(f"{z.shape[0]} embeddings of {z.shape[1]} dimensions written to {out}")


def _read_sequences(path: Path) -> np.ndarray | list[np.ndarray]:
    """An (N, T, D) array (memory-mapped) for a .npy file; a list of (T_i, D) float32 arrays for a CSV."""
    import numpy as np

    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            fail(f"{path} is not a readable .npy array: {exc}", 2)
        if array.ndim != 3 or 0 in array.shape:
            fail(f"{path} must hold an array (N, T, D), got shape {array.shape}", 2)
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            fail(f"{path} must hold real numbers, got {array.dtype}", 2)
        return array
    if suffix == ".csv":
        from training.data.datasets import TO_EMBED, parse_csv
        from training.errors import InvalidInput

        try:
            return parse_csv(path.read_bytes(), TO_EMBED)
        except InvalidInput as exc:
            fail(f"{path}: {exc}", 2)
    fail(f"{path}: encode takes an .npy or a .csv file", 2)


def length_groups(sequences: np.ndarray | list[np.ndarray]) -> dict[int, list[int]]:
    """The indices of the sequences of each length, in order."""
    groups: dict[int, list[int]] = {}
    if not isinstance(sequences, list):
        return {sequences.shape[1]: list(range(sequences.shape[0]))}
    for i, seq in enumerate(sequences):
        groups.setdefault(len(seq), []).append(i)
    return groups


NPY_HEADER_ROOM = 4096  # bytes of an .npy body besides its numbers: a request's body holds both


def per_request(steps: int, features: int, limits: dict[str, float]) -> int:
    """How many sequences of `steps` x `features` numbers one request may carry under `limits`
    (/info's): at most max_batch sequences and max_request_points numbers, in a body under
    max_body_bytes. A limit /info does not name is left to the server to enforce. Exits when even
    one sequence is too big."""
    numbers = steps * features
    caps = [math.inf]
    if "max_batch" in limits:
        caps.append(int(limits["max_batch"]))
    if "max_request_points" in limits:
        caps.append(int(limits["max_request_points"]) // numbers)
    if "max_body_bytes" in limits:
        caps.append((int(limits["max_body_bytes"]) - NPY_HEADER_ROOM) // (4 * numbers))
    fits = min(caps)
    if steps > limits.get("max_seq_len", math.inf) or fits < 1:
        fail(
            f"a sequence of {steps} steps x {features} features is over the server's per-request limits "
            f"(max_seq_len {limits.get('max_seq_len')}, max_request_points {limits.get('max_request_points')})",
            2,
        )
    return fits if fits != math.inf else sys.maxsize


def encode_in_requests(
    client: JEPAClient,
    sequences: np.ndarray | list[np.ndarray],
    model: str | None,
    version: int | str | None,
    normalize: bool,
    retries: int = 20,
) -> np.ndarray:
    """(N, R) embeddings from the API, as many requests as its limits need (each a rectangular
    .npy batch), reassembled in the input's order; 429s are retried after their Retry-After."""
    import numpy as np

    from service.client import BadResponse, Overloaded

    limits = client.info()["limits"]
    features = sequences.shape[2] if not isinstance(sequences, list) else sequences[0].shape[1]
    result: np.ndarray | None = None
    for steps, indices in length_groups(sequences).items():
        size = per_request(steps, features, limits)
        for start in range(0, len(indices), size):
            chunk = indices[start : start + size]
            if isinstance(sequences, list):
                batch = np.stack([sequences[i] for i in chunk]).astype(np.float32)
            else:
                batch = np.asarray(sequences[chunk[0] : chunk[-1] + 1], dtype=np.float32)
            for attempt in range(retries + 1):
                try:
                    z = client.encode(batch, model=model, version=version, normalize=normalize)
                    break
                except Overloaded as exc:
                    if attempt == retries:
                        raise
                    time.sleep(min(exc.retry_after or 1.0, MAX_RETRY_WAIT_S))
            if result is None:
                result = np.empty((len(sequences), z.shape[1]), dtype=np.float32)
            if z.shape[1] != result.shape[1]:
                raise BadResponse(
                    200, f"POST /encode: embeddings of {z.shape[1]} numbers after ones of {result.shape[1]}"
                )
            result[chunk] = z
    assert result is not None  # a file holds at least one sequence
    return result


def score(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help=".npy array (N, T, D), or long-format .csv (sequence_id,t,<feature>...)"
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Save each step's score, an .npy array (N, T), NaN for the warm-up.")
    ] = None,
    model: ModelOption = None,
    version: VersionOption = None,
    method: Annotated[
        str,
        typer.Option(
            help="memory (distance from the training data), forecast (surprise of each window's future), or "
            "auto (memory where the version has one)."
        ),
    ] = "auto",
    stride: Annotated[int, typer.Option(min=1, help="forecast: steps between one window and the next.")] = 1,
    context_len: Annotated[
        int | None, typer.Option(min=1, help="forecast: context steps (default: the version's).")
    ] = None,
    target_len: Annotated[
        int | None, typer.Option(min=1, help="forecast: target steps (default: the version's).")
    ] = None,
    top: Annotated[int, typer.Option(min=0, max=100, help="Most anomalous segments shown per series.")] = 3,
    threshold: Annotated[
        float, typer.Option(min=0, max=100, help="A segment's steps score at least this percentile.")
    ] = 99.0,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Score long series step by step for anomalies (POST /score), and print each series' most
    anomalous segments.

    The server (with --url) or the app in this process scores them, within its limits (GET /info).
    """
    import numpy as np

    from training.data.arrays import nan_padded

    if method not in ("auto", "memory", "forecast"):
        raise typer.BadParameter("method must be auto, memory or forecast", param_hint="--method")
    sequences = _read_sequences(path)
    ref: int | str | None = int(version) if version and version.isdigit() else version
    options = {"method": method, "context_len": context_len, "target_len": target_len, "stride": stride, "top": top}
    options |= {"threshold": threshold}
    options = {k: v for k, v in options.items() if v is not None}
    with api_client(url, api_key) as client:
        scored = client.score([np.asarray(x, dtype=np.float32) for x in sequences], model, ref, **options)
    table = Table("series", "start", "end", "peak", "score", "percentile")
    for i, series in enumerate(scored["series"]):
        for seg in series["segments"]:
            percentile = "-" if seg["percentile"] is None else f"{seg['percentile']:.1f}"
            table.add_row(
                str(i), str(seg["start"]), str(seg["end"]), str(seg["peak"]), f"{seg['score']:.4f}", percentile
            )
    console.print(table)
    if out is not None:
        steps = nan_padded([np.asarray(series["scores"], dtype=np.float32) for series in scored["series"]])
        _save_npy(out, steps)
        console.print(f"step scores of {len(steps)} series written to {out}")


def _save_npy(out: Path, array: np.ndarray) -> None:
    import numpy as np

    try:
        with out.open("wb") as f:  # np.save(path) would append .npy to a name without it
            np.save(f, array, allow_pickle=False)
    except OSError as exc:
        fail(f"cannot write {out}: {exc}")
