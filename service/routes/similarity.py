from fastapi import APIRouter, Request
from starlette.responses import Response

from service.deps import InferenceDep, read_inference
from service.payloads import respond
from service.routes.bodies import json_body
from service.schemas import SimilarityOptions, SimilarityRequest, SimilarityResponse
from training.errors import InvalidInput

router = APIRouter(tags=["inference"])


@router.post("/similarity", response_model=SimilarityResponse, openapi_extra=json_body(SimilarityRequest))
async def similarity(request: Request, inference: InferenceDep) -> Response:
    """The |a| x |b| matrix of cosine similarities between the sequences' embeddings."""
    fields = {"a": True, "b": True}
    options, served, arrays = await read_inference(request, SimilarityOptions, fields, inference, npy=False)
    a, b = arrays["a"], arrays["b"]
    assert a is not None and b is not None  # both required
    if len(a) * len(b) > inference.limits.max_similarity_pairs:
        raise InvalidInput(
            f"|a| x |b| is {len(a) * len(b)} similarities; at most {inference.limits.max_similarity_pairs} per request "
            "(JEPA_MAX_SIMILARITY_PAIRS): compare in blocks"
        )
    matrix = await inference.engine.similarity(served, a, b, options.encoder)
    return respond(request, {"model": served.model, "version": served.number, "similarities": matrix}, "similarities")
