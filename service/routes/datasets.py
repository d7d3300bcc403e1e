import re
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.deps import SessionDep, SettingsDep, WriteAuth
from service.schemas import DATASET_NAME_PATTERN, DatasetIn, DatasetOut
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
                            "sequence_id,t,<feature>... with t = 0..T-1 per sequence",
                        },
                        "name": {"type": "string"},
                    },
                }
            },
        },
    }
}


def dataset_out(row: DatasetRow) -> DatasetOut:
    return DatasetOut.model_validate(row, from_attributes=True)


async def _read_upload(request: Request) -> tuple[str, list]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = DatasetIn.model_validate_json(await request.body())
        except ValidationError as exc:
            raise InvalidInput("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
        return body.name, await run_in_threadpool(datasets.parse_json, body.sequences)
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload, name = form.get("file"), form.get("name")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("a multipart upload needs a `file` part")
        filename = (upload.filename or "").lower()
        data = await upload.read()
        if filename.endswith(".npy"):
            sequences = await run_in_threadpool(datasets.parse_npy, data)
        elif filename.endswith(".csv"):
            sequences = await run_in_threadpool(datasets.parse_csv, data)
        else:
            raise UnsupportedMediaType(f"upload a .npy or .csv file, got {upload.filename!r}")
        default_name = (upload.filename or "dataset").rsplit(".", 1)[0]
        name = str(name) if name else default_name
        if not re.match(DATASET_NAME_PATTERN, name):
            raise InvalidInput(f"name must match {DATASET_NAME_PATTERN}, got {name!r}")
        return name, sequences
    raise UnsupportedMediaType(f"send application/json or multipart/form-data, not {content_type!r}")


@router.post(
    "/datasets", status_code=201, response_model=DatasetOut, openapi_extra=UPLOAD_BODY, dependencies=[WriteAuth]
)
async def create_dataset(
    request: Request, session: SessionDep, settings: SettingsDep, response: Response
) -> DatasetOut:
    """Upload sequences to train on: JSON `{name, sequences}` or a multipart `.npy`/`.csv` file."""
    name, sequences = await _read_upload(request)

    def store() -> DatasetRow:
        row = datasets.store_dataset(session, settings.data_dir, name, sequences)
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
