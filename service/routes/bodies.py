"""OpenAPI descriptions of the request bodies that routes read by hand (for speed), so that
/openapi.json still documents the JSON contract and the binary alternative."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service.payloads import NPY

NPY_SCHEMA = {"type": "string", "format": "binary", "description": "A float array (N, T, D) in .npy format."}
NPY_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {NPY: {"schema": {**NPY_SCHEMA, "description": "With Accept: application/x-npy: (N, R)."}}}}
}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def json_or_npy_body(model: type[BaseModel]) -> dict[str, Any]:
    extra = json_body(model)
    extra["requestBody"]["content"][NPY] = {"schema": NPY_SCHEMA}
    return extra
