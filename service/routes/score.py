import dataclasses

from fastapi import APIRouter, Request
from starlette.responses import Response

from jepa_model.surprise import summarize
from service.deps import InferenceDep, read_inference
from service.payloads import respond, wants_npy
from service.routes.bodies import NPY_RESPONSE, json_or_npy_body
from service.schemas import ScoreOptions, ScoreRequest, ScoreResponse
from training.data.arrays import nan_padded
from training.errors import InvalidInput

router = APIRouter(tags=["inference"])


@router.post(
    "/score", response_model=ScoreResponse, openapi_extra=json_or_npy_body(ScoreRequest), responses=NPY_RESPONSE
)
async def score(request: Request, inference: InferenceDep) -> Response:
    """Score long series step by step, with the most anomalous segments.

    `method=memory` (the default for step models trained by this release) scores each step by its
    distance from what the version remembers of its training data: its steps, its windows of the
    data's dominant period, and a linear forecast of the step, each scaled by its 99.9th percentile
    on held-out training data, the largest kept. `method=forecast` scores windows of `context_len`
    steps of context and `target_len` of target, every `stride` steps, by the surprise of the
    target under the model's prediction (1 - cosine); a step gets the largest among the windows
    whose target covers it. Scores are ranked against the version's held-out data (`percentiles`),
    so they compare across series. Also takes an `application/x-npy` body (N, T, D) with the other
    fields as query parameters; `Accept: application/x-npy` returns the step scores (N, T) as .npy,
    NaN where a step has none (shorter series padded with NaN).
    """
    long_series = dataclasses.replace(
        inference.limits, max_seq_len=inference.settings.max_score_len, max_seq_len_setting="JEPA_MAX_SCORE_LEN"
    )
    options, served, arrays = await read_inference(
        request, ScoreOptions, {"series": True}, dataclasses.replace(inference, limits=long_series)
    )
    _check_windows(options, inference.settings.max_seq_len)
    scored = await inference.engine.anomalies(
        served,
        arrays["series"],
        options.method,
        options.context_len,
        options.target_len,
        options.stride,
        inference.settings.max_score_points,
    )
    if wants_npy(request):
        steps = nan_padded(scored.scores)
        return respond(request, {"model": served.model, "version": served.number, "steps": steps}, "steps")
    payload = {
        "model": served.model,
        "version": served.number,
        "method": scored.method,
        "window": scored.window,
        "context_len": scored.context_len,
        "target_len": scored.target_len,
        "stride": scored.stride,
        "calibrated": scored.calibration is not None,
        "series": [summarize(steps, scored.calibration, options.threshold, options.top) for steps in scored.scores],
    }
    return respond(request, payload, "series")


def _check_windows(options: ScoreOptions, max_len: int) -> None:
    """InvalidInput for a forecast window longer than JEPA_MAX_SEQ_LEN: each is read whole, as any
    sequence the service encodes is, however long the series around it."""
    for name in ("context_len", "target_len"):
        value = getattr(options, name)
        if value is not None and value > max_len:
            raise InvalidInput(f"{name} must be at most {max_len} (JEPA_MAX_SEQ_LEN), got {value}")
