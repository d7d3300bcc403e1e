from fastapi import APIRouter, Request
from starlette.responses import Response

from service.deps import InferenceDep, read_inference
from service.payloads import respond
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
async def predict(request: Request, inference: InferenceDep) -> Response:
    """Predict the representation of what follows each context; score it against targets if given.

    Also takes the contexts as an `application/x-npy` body (N, T, D), with the other fields as
    query parameters; `Accept: application/x-npy` returns the predictions (N, R) as .npy.
    """
    fields = {"contexts": True, "targets": False}
    _, served, arrays = await read_inference(request, PredictOptions, fields, inference)
    predictions, similarities = await inference.engine.predict(served, arrays["contexts"], arrays["targets"])
    payload = {"model": served.model, "version": served.number, "dim": served.repr_dim, "predictions": predictions}
    if similarities is not None:
        payload["similarities"] = similarities
    return respond(request, payload, "predictions")
