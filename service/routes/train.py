from fastapi import APIRouter, Response

from service import idempotency
from service.deps import IdempotencyKey, SessionDep, SettingsDep, WriteAuth
from service.routes.replay import with_headers
from service.schemas import TrainAccepted, TrainRequest
from training.execution import jobs
from training.execution.spec import TrainingSpec

router = APIRouter(tags=["training"])


@router.post("/train", status_code=202, response_model=TrainAccepted, dependencies=[WriteAuth])
def train(
    body: TrainRequest,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> TrainAccepted:
    """Queue a training job; a worker process trains it and registers a new version."""
    # The dataset as the request named it; a stored one's shape is filled in from the registry.
    dataset = body.dataset.model_dump()
    spec = TrainingSpec(model=body.model or settings.default_model, dataset=dataset, config=body.config)

    def enqueue() -> idempotency.Answer:
        resolved = jobs.resolve_spec(session, spec)
        resolved.check_memory(settings.train_memory_mb)
        job = jobs.enqueue(
            session,
            resolved,
            max_queued=settings.max_queued_jobs,
            executor=settings.executor,
            max_len=settings.max_seq_len,
        )
        accepted = TrainAccepted(job_id=job.id, status=job.status)
        return idempotency.Answer(202, accepted.model_dump(mode="json"), f"/jobs/{job.id}")

    request = idempotency.fingerprint([spec.model_dump_json().encode()])
    answer, replayed = idempotency.once(session, "train", idempotency_key, request, settings.idempotency_ttl_s, enqueue)
    return with_headers(TrainAccepted.model_validate(answer.body), answer, replayed, response)
