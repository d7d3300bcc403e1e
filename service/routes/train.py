from fastapi import APIRouter, Response

from service.deps import SessionDep, SettingsDep, WriteAuth
from service.schemas import TrainAccepted, TrainRequest
from training import jobs
from training.datasets import resolve_spec
from training.spec import TrainingSpec

router = APIRouter(tags=["training"])


@router.post("/train", status_code=202, response_model=TrainAccepted, dependencies=[WriteAuth])
def train(body: TrainRequest, session: SessionDep, settings: SettingsDep, response: Response) -> TrainAccepted:
    """Queue a training job; a worker process trains it and registers a new version."""
    spec = TrainingSpec(model=body.model or settings.default_model, dataset=body.dataset, config=body.config)
    resolve_spec(session, spec).check_memory(settings.train_memory_mb)
    job = jobs.enqueue(session, spec, max_queued=settings.max_queued_jobs)
    session.commit()
    response.headers["Location"] = f"/jobs/{job.id}"
    return TrainAccepted(job_id=job.id, status=job.status)
