import re
from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.deps import SessionDep, SettingsDep, WriteAuth
from service.schemas import DATASET_NAME_PATTERN, LABELS_DESCRIPTION, DatasetIn, DatasetOut
from training import datasets
from training.errors import InvalidInput, UnsupportedMediaType
from training.models import DatasetRow

router = APIRouter(tags=["datasets"])

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


def _parse_json_body(body: DatasetIn) -> tuple[list[np.ndarray], datasets.Labels | None]:
    sequences = datasets.parse_json(body.sequences)
    return sequences, None if body.labels is None else datasets.parse_labels(body.labels, len(sequences))


async def _read_upload(request: Request, max_part_size: int) -> tuple[str, list[np.ndarray], datasets.Labels | None]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = DatasetIn.model_validate_json(await request.body())
        except ValidationError as exc:
            raise InvalidInput("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
        return body.name, *await run_in_threadpool(_parse_json_body, body)
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_part_size=max_part_size)  # a long `labels` field is no file
        upload, name, label_part = form.get("file"), form.get("name"), form.get("labels")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("a multipart upload needs a `file` part")
        filename = (upload.filename or "").lower()
        data = await upload.read()
        labels = None
        if filename.endswith(".npy"):
            sequences = await run_in_threadpool(datasets.parse_npy, data)
        elif filename.endswith(".csv"):
            sequences, labels = await run_in_threadpool(datasets.parse_csv_labelled, data)
        else:
            raise UnsupportedMediaType(f"upload a .npy or .csv file, got {upload.filename!r}")
        if label_part is not None:
            if labels is not None:
                raise InvalidInput("labels come either from the CSV's `label` column or from a `labels` part, not both")
            text = await label_part.read() if isinstance(label_part, UploadFile) else label_part
            labels = await run_in_threadpool(datasets.parse_label_field, text, len(sequences))
        default_name = (upload.filename or "dataset").rsplit(".", 1)[0]
        name = str(name) if name else default_name
        if not re.match(DATASET_NAME_PATTERN, name):
            raise InvalidInput(f"name must match {DATASET_NAME_PATTERN}, got {name!r}")
        return name, sequences, labels
    raise UnsupportedMediaType(f"send application/json or multipart/form-data, not {content_type!r}")


@router.post(
    "/datasets", status_code=201, response_model=DatasetOut, openapi_extra=UPLOAD_BODY, dependencies=[WriteAuth]
)
async def create_dataset(
    request: Request, session: SessionDep, settings: SettingsDep, response: Response
) -> DatasetOut:
    """Upload sequences to train on: JSON `{name, sequences, labels?}` or a multipart `.npy`/`.csv` file.

    Labels are optional, one per sequence: `labels` in JSON, a `label` column in the CSV, or a
    `labels` part (a JSON array) beside the file. They are never trained on; a version trained on
    a labelled dataset reports `label_probe_accuracy` and `label_knn_accuracy` on held-out sequences.
    """
    name, sequences, labels = await _read_upload(request, settings.max_body_bytes)

    def store() -> DatasetRow:
        row = datasets.store_dataset(session, settings.data_dir, name, sequences, labels)
        session.commit()
        return row

    row = await run_in_threadpool(store)
    response.headers["Location"] = f"/datasets/{row.id}"
    return dataset_out(row)


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(session: SessionDep, limit: int = Query(100, ge=1, le=1000)) -> list[DatasetOut]:
    """Datasets, newest first."""
    return [dataset_out(row) for row in datasets.list_datasets(session, limit)]


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, session: SessionDep) -> DatasetOut:
    return dataset_out(datasets.get_dataset(session, dataset_id))
