from fastapi import APIRouter, Request
from starlette.responses import Response

from service.deps import EngineDep, LimitsDep, SettingsDep, resolve_served
from service.payloads import (
    decode_fields,
    npy_sequences,
    off_loop_if_large,
    parse_json,
    respond,
    sends_npy,
    take_field,
    validate_options,
)
from service.routes.bodies import NPY_RESPONSE, json_or_npy_body
from service.schemas import EncodeOptions, EncodeRequest, EncodeResponse

router = APIRouter(tags=["inference"])


@router.post(
    "/encode", response_model=EncodeResponse, openapi_extra=json_or_npy_body(EncodeRequest), responses=NPY_RESPONSE
)
async def encode(request: Request, engine: EngineDep, settings: SettingsDep, limits: LimitsDep) -> Response:
    """Embed each sequence with the target (default) or context encoder.

    Also takes an `application/x-npy` body, a float array (N, T, D), with the other fields as
    query parameters; `Accept: application/x-npy` returns the embeddings (N, R) as .npy.
    """
    body = await request.body()
    if sends_npy(request):
        options = validate_options(EncodeOptions, dict(request.query_params), strict=False)
        served = await resolve_served(engine, settings, options.model, options.version)
        sequences = await off_loop_if_large(body, npy_sequences, body, served, limits)
    else:
        data = await off_loop_if_large(body, parse_json, body, limits.max_json_values)
        raw = take_field(data, "sequences")
        options = validate_options(EncodeOptions, data)
        served = await resolve_served(engine, settings, options.model, options.version)
        sequences = (await off_loop_if_large(body, decode_fields, {"sequences": raw}, served, limits))["sequences"]
    embeddings = await engine.encode(served, sequences, options.encoder, options.normalize)
    payload = {"model": served.model, "version": served.number, "dim": served.repr_dim, "embeddings": embeddings}
    return respond(request, payload, "embeddings")
