from fastapi import APIRouter

from service.deps import EngineDep, SettingsDep, resolve_served
from service.payloads import to_arrays
from service.schemas import EncodeRequest, EncodeResponse

router = APIRouter(tags=["inference"])


@router.post("/encode", response_model=EncodeResponse)
async def encode(body: EncodeRequest, engine: EngineDep, settings: SettingsDep) -> EncodeResponse:
    """Embed each sequence with the target (default) or context encoder."""
    served = await resolve_served(engine, settings, body.model, body.version)
    sequences = to_arrays("sequences", body.sequences, served)
    embeddings = await engine.run(engine.encode, served, sequences, body.encoder, body.normalize)
    return EncodeResponse(
        model=served.model, version=served.number, dim=served.repr_dim, embeddings=embeddings.tolist()
    )
