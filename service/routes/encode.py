from fastapi import APIRouter, Request
from starlette.responses import Response

from service.deps import Inference, InferenceDep, read_inference
from service.engine import ServedVersion
from service.payloads import Sequences, respond, wants_npy
from service.routes.bodies import NPY_RESPONSE, json_or_npy_body
from service.schemas import EncodeOptions, EncodeRequest, EncodeResponse
from training.data.arrays import nan_padded

router = APIRouter(tags=["inference"])


@router.post(
    "/encode", response_model=EncodeResponse, openapi_extra=json_or_npy_body(EncodeRequest), responses=NPY_RESPONSE
)
async def encode(request: Request, inference: InferenceDep) -> Response:
    """Embed each sequence with the target (default) or context encoder.

    Also takes an `application/x-npy` body, a float array (N, T, D), with the other fields as
    query parameters; `Accept: application/x-npy` returns the embeddings (N, R) as .npy. With
    `per_step`, each sequence's per-step representations (N, T_i, S) instead, as .npy (N, T, S)
    with NaN past a shorter sequence's end.
    """
    options, served, arrays = await read_inference(request, EncodeOptions, {"sequences": True}, inference)
    if options.per_step:
        return await per_step(request, inference, served, arrays["sequences"], options)
    embeddings = await inference.engine.encode(served, arrays["sequences"], options.encoder, options.normalize)
    payload = {"model": served.model, "version": served.number, "dim": served.repr_dim, "embeddings": embeddings}
    return respond(request, payload, "embeddings")


async def per_step(
    request: Request, inference: Inference, served: ServedVersion, sequences: Sequences, options: EncodeOptions
) -> Response:
    steps = await inference.engine.encode_steps(
        served, sequences, options.encoder, options.normalize, inference.limits.max_points
    )
    payload = {"model": served.model, "version": served.number, "dim": served.step_dim, "per_step": steps}
    if wants_npy(request):
        payload["per_step"] = nan_padded(steps)
    return respond(request, payload, "per_step")
