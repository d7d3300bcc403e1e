from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from jepa_model import __version__
from service.deps import SessionFactoryDep, SettingsDep
from service.schemas import Info, ServedModel
from training.store import registry

router = APIRouter(tags=["health"])


@router.get("/info", response_model=Info)
async def info(settings: SettingsDep, factory: SessionFactoryDep) -> Info:
    """What this replica serves: its models with their dimensions, and the limits it enforces."""

    def served_models() -> list[ServedModel]:
        with factory() as session:
            return [
                ServedModel(
                    name=model.name,
                    latest=model.versions[-1].number,
                    aliases={alias.name: alias.version.number for alias in model.aliases},
                    input_dim=model.versions[-1].config["model"]["input_dim"],
                    repr_dim=model.versions[-1].config["model"]["repr_dim"],
                )
                for model in registry.list_models(session)
                if model.versions
            ]

    return Info(
        version=__version__,
        default_model=settings.default_model,
        default_alias=settings.default_alias,
        models=await run_in_threadpool(served_models),
        limits={
            "max_batch": settings.max_batch,
            "max_seq_len": settings.max_seq_len,
            "max_dataset_len": settings.max_dataset_len,
            "max_score_len": settings.max_score_len,
            "max_request_points": settings.max_request_points,
            "max_similarity_pairs": settings.max_similarity_pairs,
            "max_body_bytes": settings.max_body_bytes,
            "max_queue": settings.max_queue,
            "max_queued_jobs": settings.max_queued_jobs,
            "micro_batch": settings.micro_batch,
            "micro_batch_steps": settings.micro_batch_steps,
            "batch_wait_ms": settings.batch_wait_ms,
        },
        auth={"writes": settings.api_key is not None, "reads": settings.api_key is not None and settings.auth_reads},
    )
