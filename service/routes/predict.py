from fastapi import APIRouter, Request
from starlette.responses import Response

from service.deps import EngineDep, LimitsDep, SettingsDep, resolve_served
from service.payloads import npy_sequences, parse_json, respond, sends_npy, take_field, to_sequences, validate_options
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
        options = validate_options(PredictOptions, dict(request.query_params))
        served = await resolve_served(engine, settings, options.model, options.version)
        contexts = npy_sequences(body, served, limits)
    else:
        data = parse_json(body)
        raw_contexts, raw_targets = take_field(data, "contexts"), take_field(data, "targets", required=False)
        options = validate_options(PredictOptions, data)
        served = await resolve_served(engine, settings, options.model, options.version)
        contexts = to_sequences("contexts", raw_contexts, served, limits)
        targets = None if raw_targets is None else to_sequences("targets", raw_targets, served, limits)
    predictions, similarities = await engine.predict(served, contexts, targets)
    payload = {"model": served.model, "version": served.number, "dim": served.repr_dim, "predictions": predictions}
    if similarities is not None:
        payload["similarities"] = similarities
    return respond(request, payload, "predictions")
