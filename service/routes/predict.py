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
from service.schemas import PredictOptions, PredictRequest, PredictResponse

router = APIRouter(tags=["inference"])


@router.post(
    "/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    openapi_extra=json_or_npy_body(PredictRequest),
    responses=NPY_RESPONSE,
)
async def predict(request: Request, engine: EngineDep, settings: SettingsDep, limits: LimitsDep) -> Response:
    """Predict the representation of what follows each context; score it against targets if given.

    Also takes the contexts as an `application/x-npy` body (N, T, D), with the other fields as
    query parameters; `Accept: application/x-npy` returns the predictions (N, R) as .npy.
    """
    body = await request.body()
    targets = None
    if sends_npy(request):
        options = validate_options(PredictOptions, dict(request.query_params), strict=False)
        served = await resolve_served(engine, settings, options.model, options.version)
        contexts = await off_loop_if_large(body, npy_sequences, body, served, limits)
    else:
        data = await off_loop_if_large(body, parse_json, body, limits.max_json_values)
        fields = {"contexts": take_field(data, "contexts"), "targets": take_field(data, "targets", required=False)}
        options = validate_options(PredictOptions, data)
        served = await resolve_served(engine, settings, options.model, options.version)
        decoded = await off_loop_if_large(body, decode_fields, fields, served, limits)
        contexts, targets = decoded["contexts"], decoded["targets"]
    predictions, similarities = await engine.predict(served, contexts, targets)
    payload = {"model": served.model, "version": served.number, "dim": served.repr_dim, "predictions": predictions}
    if similarities is not None:
        payload["similarities"] = similarities
    return respond(request, payload, "predictions")
