"""Hostile inputs, each sent to a real server: every one gets the 4xx it deserves, never a 5xx.

Each case is one distinct input that once answered 500, 503 or 200 where it should not have, or a
close variant of one. The README's Reliability section states how many there are.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

POINT = [0.0, 1.0]
ONE = {"sequences": [[POINT]]}
NPY = {"content-type": "application/x-npy"}


def npy_header_only(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\0" * 64


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    files: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    says: str = ""  # a phrase the detail must contain


SUPERSCRIPT_TWO = "\u00b2"
CASES = [
    # Version references: digits that are not ASCII, too many digits, numbers past the column.
    Case("superscript version", "POST", "/encode", 422, json={**ONE, "version": SUPERSCRIPT_TWO}),
    Case("4,301-digit version", "POST", "/encode", 422, json={**ONE, "version": "1" * 4301}),
    Case("version 2^63", "POST", "/encode", 422, json={**ONE, "version": 2**63}, says="at most 2147483647"),
    Case("version 2^31", "POST", "/encode", 422, json={**ONE, "version": 2**31}, says="at most 2147483647"),
    Case("version 2^31 as text", "POST", "/encode", 422, json={**ONE, "version": str(2**31)}),
    Case("version 0", "POST", "/encode", 422, json={**ONE, "version": 0}),
    Case("version true", "POST", "/encode", 422, json={**ONE, "version": True}),
    Case("version 1.5", "POST", "/encode", 422, json={**ONE, "version": 1.5}),
    Case("predict superscript version", "POST", "/predict", 422, json={"contexts": [[POINT]], "version": "\u00b3"}),
    Case(
        "similarity version 2^63", "POST", "/similarity", 422, json={"a": [[POINT]], "b": [[POINT]], "version": 2**63}
    ),
    Case(
        "npy ?version=superscript",
        "POST",
        f"/encode?version={SUPERSCRIPT_TWO}",
        422,
        content=npy_bytes(np.zeros((1, 2, 2), np.float32)),
        headers=NPY,
    ),
    Case(
        "npy ?version=2^63",
        "POST",
        f"/encode?version={2**63}",
        422,
        content=npy_bytes(np.zeros((1, 2, 2), np.float32)),
        headers=NPY,
    ),
    Case("GET version superscript", "GET", f"/models/trajectories/versions/{SUPERSCRIPT_TWO}", 422),
    Case("GET version 2^63", "GET", f"/models/trajectories/versions/{2**63}", 422),
    Case("GET version 2^31", "GET", f"/models/trajectories/versions/{2**31}", 422),
    Case("GET version 5,000 digits", "GET", "/models/trajectories/versions/" + "9" * 5000, 422),
    Case("plot of version 2^63", "GET", f"/models/trajectories/versions/{2**63}/plots/loss.png", 422),
    Case("alias body version superscript", "PUT", "/models/trajectories/aliases/x1", 422, json={"version": "\u00b2"}),
    Case("alias body version 2^63", "PUT", "/models/trajectories/aliases/x2", 422, json={"version": 2**63}),
    Case("alias body version true", "PUT", "/models/trajectories/aliases/x3", 422, json={"version": True}),
    # Names with a trailing newline, which `$` alone lets through.
    Case("alias with a trailing newline", "PUT", "/models/trajectories/aliases/prod%0A", 422, json={"version": 1}),
    Case(
        "JSON dataset name with a newline",
        "POST",
        "/datasets",
        422,
        json={"name": "abc\n", "sequences": [[POINT, POINT]] * 2},
    ),
    Case(
        "multipart dataset name with a newline",
        "POST",
        "/datasets",
        422,
        files={"file": ("d.npy", npy_bytes(np.zeros((2, 3, 1), np.float32)))},
        data={"name": "abc\n"},
    ),
    Case("model name with a newline", "POST", "/train", 422, json={"model": "m\n", "config": {"epochs": 1}}),
    # Scalars that must not be coerced.
    Case("normalize 'yes'", "POST", "/encode", 422, json={**ONE, "normalize": "yes"}),
    Case("normalize 1", "POST", "/encode", 422, json={**ONE, "normalize": 1}),
    # Media types that are not JSON.
    Case(
        "application/jsonx",
        "POST",
        "/encode",
        415,
        content=b'{"sequences": [[[0, 1]]]}',
        headers={"content-type": "application/jsonx"},
    ),
    Case(
        "text/plain",
        "POST",
        "/predict",
        415,
        content=b'{"contexts": [[[0, 1]]]}',
        headers={"content-type": "text/plain"},
    ),
    Case(
        "similarity as application/jsonx",
        "POST",
        "/similarity",
        415,
        content=b'{"a": [[[0, 1]]], "b": [[[0, 1]]]}',
        headers={"content-type": "application/jsonx"},
    ),
    Case(
        "dataset as application/jsonx",
        "POST",
        "/datasets",
        415,
        content=b'{"name": "d"}',
        headers={"content-type": "application/jsonx"},
    ),
    # Sizes whose product, not any one field, is the problem.
    Case(
        "similarity 1100 x 1000",
        "POST",
        "/similarity",
        422,
        json={"a": [[POINT]] * 1100, "b": [[POINT]] * 1000},
        says="JEPA_MAX_SIMILARITY_PAIRS",
    ),
    Case(
        "encode over the points cap",
        "POST",
        "/encode",
        422,
        json={"sequences": [[POINT] * 4096] * 257},
        says="JEPA_MAX_REQUEST_POINTS",
    ),
    Case(
        "predict contexts + targets over the points cap",
        "POST",
        "/predict",
        422,
        json={"contexts": [[POINT] * 4096] * 200, "targets": [[POINT] * 4096] * 200},
        says="JEPA_MAX_REQUEST_POINTS",
    ),
    Case(
        "a million empty lists",
        "POST",
        "/encode",
        422,
        content=b'{"sequences": [' + b"[]," * 5_000_000 + b"[]]}",
        headers={"content-type": "application/json"},
        says="JSON values",
    ),
    Case(
        "a JSON dataset over the points cap",
        "POST",
        "/datasets",
        422,
        content=b'{"name": "big", "sequences": [' + b"[[0]]," * 2_200_000 + b"[[0]]]}",
        headers={"content-type": "application/json"},
        says="JSON values",
    ),
    Case(
        "training that needs tens of GB",
        "POST",
        "/train",
        422,
        json={
            "model": "huge",
            "dataset": {"num_samples": 200_000, "seq_len": 4096},
            "config": {"preset": "trajectory", "batch_size": 65_536, "hidden_dim": 1024, "num_layers": 8},
        },
        says="memory",
    ),
    # .npy headers that claim what the body is not.
    Case(
        "npy header claiming (10^6, 10^6, 2)",
        "POST",
        "/encode",
        422,
        content=npy_header_only((10**6, 10**6, 2)),
        headers=NPY,
    ),
    Case(
        "npy header claiming (10^9, 10^9, 10^9) for a dataset",
        "POST",
        "/datasets",
        422,
        files={"file": ("d.npy", npy_header_only((10**9, 10**9, 10**9)))},
    ),
    Case("npy of objects", "POST", "/encode", 422, content=npy_bytes(np.array([[[{}]]], dtype=object)), headers=NPY),
    Case("npy of strings", "POST", "/encode", 422, content=npy_bytes(np.array([[["ab", "c"]]])), headers=NPY),
    Case("npy truncated", "POST", "/encode", 422, content=npy_bytes(np.zeros((4, 8, 2), np.float32))[:-7], headers=NPY),
    # CSV uploads.
    Case(
        "CSV with t = 10^20",
        "POST",
        "/datasets",
        422,
        files={"file": ("t.csv", b"sequence_id,t,x\na,0,1\na,99999999999999999999,2\nb,0,1\nb,1,2\n")},
    ),
    Case(
        "CSV with a gap",
        "POST",
        "/datasets",
        422,
        files={"file": ("g.csv", b"sequence_id,t,x\na,0,1\na,3,2\nb,0,1\nb,1,2\n")},
        says="missing",
    ),
    Case(
        "CSV field of 200,000 characters",
        "POST",
        "/datasets",
        422,
        files={"file": ("f.csv", b"sequence_id,t,x\na,0," + b"1" * 200_000 + b"\nb,0,1\n")},
    ),
    Case("CSV with a NUL byte", "POST", "/datasets", 422, files={"file": ("n.csv", b"sequence_id,t,x\na,0,\x001\n")}),
    # Issue 26: labels past Python's digit limit, repeated parts and headers, /score's own cap.
    Case(
        "CSV label of 4,301 digits",
        "POST",
        "/datasets",
        422,
        files={
            "file": (
                "l.csv",
                b"sequence_id,t,x,label\n"
                + b"".join(b"%s,%d,1,%s\n" % (s, t, b"9" * 4301) for s in (b"a", b"b") for t in (0, 1)),
            )
        },
        says="1 to 128 characters",
    ),
    Case(
        "two labels parts",
        "POST",
        "/datasets",
        422,
        files=[  # type: ignore[arg-type]  # a list of parts: httpx sends a repeated name twice
            ("file", ("d.npy", npy_bytes(np.zeros((2, 3, 1), np.float32)))),
            ("labels", (None, '["a", "b"]')),
            ("labels", (None, '["b", "a"]')),
        ],
        says="one `labels` part, got 2",
    ),
    Case(
        "two file parts",
        "POST",
        "/datasets",
        422,
        files=[  # type: ignore[arg-type]
            ("file", ("d.npy", npy_bytes(np.zeros((2, 3, 1), np.float32)))),
            ("file", ("e.npy", npy_bytes(np.zeros((2, 3, 1), np.float32)))),
        ],
        says="one `file` part, got 2",
    ),
    Case(
        "two Idempotency-Key headers on /train",
        "POST",
        "/train",
        422,
        json={"model": "dup", "config": {"epochs": 1}},
        headers=[("Idempotency-Key", "first"), ("Idempotency-Key", "second")],  # type: ignore[arg-type]
        says="one Idempotency-Key header, got 2",
    ),
    Case(
        "two Idempotency-Key headers on /datasets",
        "POST",
        "/datasets",
        422,
        json={"name": "dup", "sequences": [[POINT, POINT]] * 2},
        headers=[("Idempotency-Key", "first"), ("Idempotency-Key", "second")],  # type: ignore[arg-type]
        says="one Idempotency-Key header, got 2",
    ),
    Case(
        "score npy past JEPA_MAX_SCORE_LEN",
        "POST",
        "/score",
        422,
        content=npy_bytes(np.zeros((1, 1_000_001, 2), np.float32)),
        headers=NPY,
        says="series[0] has 1000001 steps; at most 1000000 (JEPA_MAX_SCORE_LEN)",
    ),
    # Echoes: a detail never repeats kilobytes of what was sent.
    Case("unknown field with a 10 KB name", "POST", "/encode", 422, json={**ONE, "x" * 10_000: 1}),
    Case("model name of 10 KB", "POST", "/encode", 422, json={**ONE, "model": "m" * 10_000}),
    Case("alias of 10 KB", "PUT", "/models/trajectories/aliases/" + "a" * 10_000, 422, json={"version": 1}),
    # Training configs that once failed in the worker.
    Case(
        "train workers=2 on a local executor",
        "POST",
        "/train",
        422,
        json={"model": "h", "dataset": {"seq_len": 20}, "config": {"workers": 2}},
        says="JEPA_EXECUTOR=ray",
    ),
    Case(
        "train max_offset 4096 on 20 steps",
        "POST",
        "/train",
        422,
        json={"model": "h", "dataset": {"seq_len": 20}, "config": {"max_offset": 4096}},
        says="predictor_offsets",
    ),
    Case(
        "train batch norm of one row",
        "POST",
        "/train",
        422,
        json={"model": "h", "dataset": {"seq_len": 20}, "config": {"batch_size": 1, "output_norm": "batch"}},
        says="batch_size",
    ),
    Case(
        "train infonce at temperature 1e-300",
        "POST",
        "/train",
        422,
        json={"model": "h", "dataset": {"seq_len": 20}, "config": {"loss": "infonce", "temperature": 1e-300}},
        says="temperature",
    ),
    Case("train steps true", "POST", "/train", 422, json={"model": "h", "config": {"steps": True}}, says="steps"),
    Case(
        "train on a stored dataset with a spoofed min_len",
        "POST",
        "/train",
        422,
        json={
            "dataset": {"kind": "stored", "id": "0" * 32, "min_len": 4096, "max_len": 4096, "input_dim": 2},
            "config": {"context_len": 90, "target_len": 20},
        },
        says="set by the server",
    ),
]


def test_the_cases_are_distinct_and_the_readme_counts_them() -> None:
    assert len({case.name for case in CASES}) == len(CASES)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert f"sends {len(CASES)} distinct hostile inputs" in readme


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input_gets_its_4xx(client: httpx.Client, case: Case) -> None:
    response = client.request(
        case.method,
        case.path,
        json=case.json,
        content=case.content,
        headers=case.headers,
        files=case.files,
        data=case.data,
    )
    assert response.status_code == case.status, response.text[:500]
    detail = response.json()["detail"]
    text = detail if isinstance(detail, str) else str(detail)
    assert len(text) < 2000, "the detail echoes the input"
    assert case.says in text
    assert "/tmp/" not in text, "the detail names a server path"
