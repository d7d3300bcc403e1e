from fastapi import APIRouter, Request
from starlette.responses import Response

from service.deps import EngineDep, LimitsDep, SettingsDep, resolve_served
from service.payloads import parse_json, respond, take_field, to_sequences, validate_options
from service.routes.bodies import json_body
from service.schemas import SimilarityOptions, SimilarityRequest, SimilarityResponse

router = APIRouter(tags=["inference"])


@router.post("/similarity", response_model=SimilarityResponse, openapi_extra=json_body(SimilarityRequest))
async def similarity(request: Request, engine: EngineDep, settings: SettingsDep, limits: LimitsDep) -> Response:
    """The |a| x |b| matrix of cosine similarities between the sequences' embeddings."""
    data = parse_json(await request.body())
    raw_a, raw_b = take_field(data, "a"), take_field(data, "b")
    options = validate_options(SimilarityOptions, data)
    served = await resolve_served(engine, settings, options.model, options.version)
    a, b = to_sequences("a", raw_a, served, limits), to_sequences("b", raw_b, served, limits)
    matrix = await engine.similarity(served, a, b, options.encoder)
    return respond(request, {"model": served.model, "version": served.number, "similarities": matrix}, "similarities")
