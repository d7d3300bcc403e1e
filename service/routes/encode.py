from fastapi import APIRouter, Request
from starlette.responses import Response

from service.deps import InferenceDep, read_inference
from service.payloads import respond
from service.routes.bodies import NPY_RESPONSE, json_or_npy_body
from service.schemas import EncodeOptions, EncodeRequest, EncodeResponse

router = APIRouter(tags=["inference"])


@router.post(
    "/encode", response_model=EncodeResponse, openapi_extra=json_or_npy_body(EncodeRequest), responses=NPY_RESPONSE
)
async def encode(request: Request, inference: InferenceDep) -> Response:
    """Embed each sequence with the target (default) or context encoder.

    Also takes an `application/x-npy` body, a float array (N, T, D), with the other fields as
    query parameters; `Accept: application/x-npy` returns the embeddings (N, R) as .npy.
    """
    options, served, arrays = await read_inference(request, EncodeOptions, {"sequences": True}, inference)
    embeddings = await inference.engine.encode(served, arrays["sequences"], options.encoder, options.normalize)
    payload = {"model": served.model, "version": served.number, "dim": served.repr_dim, "embeddings": embeddings}
    return respond(request, payload, "embeddings")
