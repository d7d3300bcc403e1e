import dataclasses

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from jepa_model.surprise import summarize
from service.deps import InferenceDep, read_inference
from service.payloads import respond, wants_npy
from service.routes.bodies import NPY_RESPONSE, json_or_npy_body
from service.schemas import ScoreOptions, ScoreRequest, ScoreResponse

router = APIRouter(tags=["inference"])


@router.post(
    "/score", response_model=ScoreResponse, openapi_extra=json_or_npy_body(ScoreRequest), responses=NPY_RESPONSE
)
async def score(request: Request, inference: InferenceDep) -> Response:
    """Score long series step by step: how far each step's actual future lands from the model's
    prediction of it (surprise, 1 - cosine), with the most surprising segments.

    Windows of `context_len` steps of context and `target_len` of target slide every `stride`
    steps; a step's score is the largest among the windows whose target covers it. With a version
    trained by this release, scores are also ranked against its held-out data (`percentiles`), so
    they compare across series. Also takes an `application/x-npy` body (N, T, D) with the other
    fields as query parameters; `Accept: application/x-npy` returns the step scores (N, T) as .npy,
    NaN for the warm-up (shorter series padded with NaN).
    """
    long_series = dataclasses.replace(inference.limits, max_seq_len=inference.settings.max_score_len)
    options, served, arrays = await read_inference(
        request, ScoreOptions, {"series": True}, dataclasses.replace(inference, limits=long_series)
    )
    context_len = options.context_len or served.context_len
    target_len = options.target_len or served.target_len
    series = arrays["series"]
    scores = await inference.engine.score(
        served, series, context_len, target_len, options.stride, inference.settings.max_score_points
    )
    if wants_npy(request):
        return respond(request, {"model": served.model, "version": served.number, "steps": _padded(scores)}, "steps")
    calibration = list(served.calibration) if served.calibration else None
    payload = {
        "model": served.model,
        "version": served.number,
        "context_len": context_len,
        "target_len": target_len,
        "stride": options.stride,
        "calibrated": calibration is not None,
        "series": [summarize(steps, calibration, options.threshold, options.top) for steps in scores],
    }
    return respond(request, payload, "series")


def _padded(scores: list[np.ndarray]) -> np.ndarray:
    out = np.full((len(scores), max(len(s) for s in scores)), np.nan, dtype=np.float32)
    for row, steps in zip(out, scores, strict=True):
        row[: len(steps)] = steps
    return out
