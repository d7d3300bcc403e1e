from fastapi import APIRouter

from service.deps import EngineDep, SettingsDep, resolve_served
from service.payloads import to_arrays
from service.schemas import PredictRequest, PredictResponse

router = APIRouter(tags=["inference"])


@router.post("/predict", response_model=PredictResponse, response_model_exclude_none=True)
async def predict(body: PredictRequest, engine: EngineDep, settings: SettingsDep) -> PredictResponse:
    """Predict the representation of what follows each context; score it against targets if given."""
    served = await resolve_served(engine, settings, body.model, body.version)
    contexts = to_arrays("contexts", body.contexts, served)
    targets = None if body.targets is None else to_arrays("targets", body.targets, served)
    predictions, similarities = await engine.run(engine.predict, served, contexts, targets)
    return PredictResponse(
        model=served.model,
        version=served.number,
        dim=served.repr_dim,
        predictions=predictions.tolist(),
        similarities=None if similarities is None else similarities.tolist(),
    )
