from fastapi import APIRouter

from service.deps import EngineDep, SettingsDep, resolve_served
from service.payloads import to_arrays
from service.schemas import SimilarityRequest, SimilarityResponse

router = APIRouter(tags=["inference"])


@router.post("/similarity", response_model=SimilarityResponse)
async def similarity(body: SimilarityRequest, engine: EngineDep, settings: SettingsDep) -> SimilarityResponse:
    """The |a| x |b| matrix of cosine similarities between the sequences' embeddings."""
    served = await resolve_served(engine, settings, body.model, body.version)
    a = to_arrays("a", body.a, served)
    b = to_arrays("b", body.b, served)
    matrix = await engine.run(engine.similarity, served, a, b, body.encoder)
    return SimilarityResponse(model=served.model, version=served.number, similarities=matrix.tolist())
