import re
from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service import idempotency
from service.deps import IdempotencyKey, LimitsDep, SessionDep, SessionFactoryDep, SettingsDep, StoreDep, WriteAuth
from service.errors import UnsupportedMediaType
from service.payloads import RequestLimits, media_type, off_loop_if_large, only_numbers, parse_json
from service.routes.replay import with_headers
from service.schemas import DATASET_NAME_PATTERN, LABELS_DESCRIPTION, DatasetIn, DatasetMeta, DatasetOut
from training import lifecycle
from training.data import datasets
from training.errors import InvalidInput, preview
from training.store.db import in_transaction
from training.store.models import DatasetRow

router = APIRouter(tags=["datasets"])
DATASET_NAME = re.compile(DATASET_NAME_PATTERN.removeprefix("^").removesuffix("$"))

# Both request forms, for the OpenAPI schema (the body is read by hand to accept either).
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": DatasetIn.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": ".npy float array (N, T, D), or .csv in long format: "
                            "sequence_id,t,<feature>... with t = 0..T-1 per sequence, and optionally a "
                            "`label` column holding each sequence's class (the same on all its rows)",
                        },
                        "name": {"type": "string"},
                        "labels": {
                            "type": "string",
                            "description": "Optional, beside a .npy (or a .csv without a `label` column): a JSON "
                            'array with one label per sequence, e.g. ["sine","square"] or [0,1], as a plain field '
                            "or a file part. " + LABELS_DESCRIPTION,
                        },
                    },
                }
            },
        },
    }
}


def dataset_out(row: DatasetRow) -> DatasetOut:
    return DatasetOut.model_validate(row, from_attributes=True)


def _parse_json_upload(
    body: bytes, limits: RequestLimits, stored: datasets.DatasetLimits
) -> tuple[str, list[np.ndarray], datasets.Labels | None]:
    data = parse_json(body, limits.max_json_values)
    raw = data.pop("sequences", None)
    try:
        meta = DatasetMeta.model_validate(data, strict=True)
    except ValidationError as exc:
        raise InvalidInput("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    if not isinstance(raw, list) or not only_numbers(raw):
        raise InvalidInput("sequences must be a list of sequences [N][T][D] of numbers")
    sequences = datasets.parse_json(raw, stored)
    return meta.name, sequences, None if meta.labels is None else datasets.parse_labels(meta.labels, len(sequences))


async def _read_upload(
    request: Request, max_part_size: int, limits: RequestLimits, stored: datasets.DatasetLimits
) -> tuple[str, list[np.ndarray], datasets.Labels | None]:
    kind = media_type(request)
    if kind == "application/json":
        body = await request.body()
        return await off_loop_if_large(body, _parse_json_upload, body, limits, stored)
    if kind == "multipart/form-data":
        form = await request.form(max_part_size=max_part_size)  # a long `labels` field is no file
        for part in ("file", "name", "labels"):  # one of two would otherwise be used, silently
            if len(form.getlist(part)) > 1:
                raise InvalidInput(f"a multipart upload may have one `{part}` part, got {len(form.getlist(part))}")
        upload, name, label_part = form.get("file"), form.get("name"), form.get("labels")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("a multipart upload needs a `file` part")
        filename = (upload.filename or "").lower()
        data = await upload.read()
        labels = None
        if filename.endswith(".npy"):
            sequences = await run_in_threadpool(datasets.parse_npy, data, stored)
        elif filename.endswith(".csv"):
            sequences, labels = await run_in_threadpool(datasets.parse_csv_labelled, data, stored)
        else:
            raise UnsupportedMediaType(f"upload a .npy or .csv file, got {preview(upload.filename)}")
        if label_part is not None:
            if labels is not None:
                raise InvalidInput("labels come either from the CSV's `label` column or from a `labels` part, not both")
            text = await label_part.read() if isinstance(label_part, UploadFile) else label_part
            labels = await run_in_threadpool(datasets.parse_label_field, text, len(sequences))
        default_name = (upload.filename or "dataset").rsplit(".", 1)[0]
        name = str(name) if name else default_name
        if not DATASET_NAME.fullmatch(name):
            raise InvalidInput(f"name must match {DATASET_NAME.pattern}, got {preview(name)}")
        return name, sequences, labels
    raise UnsupportedMediaType(f"send application/json or multipart/form-data, not {preview(kind)}")


@router.post(
    "/datasets", status_code=201, response_model=DatasetOut, openapi_extra=UPLOAD_BODY, dependencies=[WriteAuth]
)
async def create_dataset(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    limits: LimitsDep,
    response: Response,
    store: StoreDep,
    idempotency_key: IdempotencyKey = None,
) -> DatasetOut:
    """Upload sequences to train on: JSON `{name, sequences, labels?}` or a multipart `.npy`/`.csv` file.

    Labels are optional, one per sequence: `labels` in JSON, a `label` column in the CSV, or a
    `labels` part (a JSON array) beside the file. They are never trained on; a version trained on
    a labelled dataset reports `label_probe_accuracy` and `label_knn_accuracy` on held-out sequences.
    """
    stored = datasets.DatasetLimits.from_settings(settings)
    name, sequences, labels = await _read_upload(request, settings.max_body_bytes, limits, stored)

    def save() -> idempotency.Answer:
        row = datasets.store_dataset(session, store, name, sequences, labels)
        return idempotency.Answer(201, dataset_out(row).model_dump(mode="json"), f"/datasets/{row.id}")

    def store_once() -> tuple[idempotency.Answer, bool]:
        request = idempotency.upload_fingerprint(name, sequences, labels) if idempotency_key else ""
        return idempotency.once(session, "datasets", idempotency_key, request, settings.idempotency_ttl_s, save)

    answer, replayed = await run_in_threadpool(store_once)
    return with_headers(DatasetOut.model_validate(answer.body), answer, replayed, response)


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(session: SessionDep, limit: int = Query(100, ge=1, le=1000)) -> list[DatasetOut]:
    """Datasets, newest first."""
    return [dataset_out(row) for row in datasets.list_datasets(session, limit)]


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, session: SessionDep) -> DatasetOut:
    return dataset_out(datasets.get_dataset(session, dataset_id))


@router.delete("/datasets/{dataset_id}", status_code=204, dependencies=[WriteAuth])
def delete_dataset(dataset_id: str, factory: SessionFactoryDep, store: StoreDep) -> Response:
    """Delete a dataset and its file. 409 while a queued or running job trains on it; versions
    trained on it stay."""
    path = in_transaction(factory, lambda s: lifecycle.delete_dataset(s, store, dataset_id))
    lifecycle.remove_artifact(store.data_dir, path)
    return Response(status_code=204)
