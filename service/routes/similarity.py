from fastapi import APIRouter, Request
from starlette.responses import Response

from service.deps import EngineDep, LimitsDep, SettingsDep, resolve_served
from service.payloads import (
    NPY,
    decode_fields,
    off_loop_if_large,
    parse_json,
    respond,
    sends_npy,
    take_field,
    validate_options,
)
from service.routes.bodies import json_body
from service.schemas import SimilarityOptions, SimilarityRequest, SimilarityResponse
from training.errors import InvalidInput, UnsupportedMediaType

router = APIRouter(tags=["inference"])


@router.post("/similarity", response_model=SimilarityResponse, openapi_extra=json_body(SimilarityRequest))
async def similarity(request: Request, engine: EngineDep, settings: SettingsDep, limits: LimitsDep) -> Response:
    """The |a| x |b| matrix of cosine similarities between the sequences' embeddings."""
    if sends_npy(request):
        raise UnsupportedMediaType(f"/similarity reads application/json only, not {NPY}")
    body = await request.body()
    data = await off_loop_if_large(body, parse_json, body, limits.max_json_values)
    fields = {"a": take_field(data, "a"), "b": take_field(data, "b")}
    pairs = len(fields["a"]) * len(fields["b"]) if all(isinstance(v, list) for v in fields.values()) else 0
    if pairs > limits.max_similarity_pairs:
        raise InvalidInput(
            f"|a| x |b| is {pairs} similarities; at most {limits.max_similarity_pairs} per request "
            "(JEPA_MAX_SIMILARITY_PAIRS): compare in blocks"
        )
    options = validate_options(SimilarityOptions, data)
    served = await resolve_served(engine, settings, options.model, options.version)
    decoded = await off_loop_if_large(body, decode_fields, fields, served, limits)
    matrix = await engine.similarity(served, decoded["a"], decoded["b"], options.encoder)
    return respond(request, {"model": served.model, "version": served.number, "similarities": matrix}, "similarities")
