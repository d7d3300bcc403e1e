from typing import Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from jepa_model.checkpoint import checkpoint_problem
from service.deps import SessionDep, SessionFactoryDep, SettingsDep, StoreDep, WriteAuth
from service.schemas import AliasIn, AliasOut, ModelOut, VersionOut, VersionSummary
from training import lifecycle
from training.errors import NotFound
from training.plots import PLOTS_DIR
from training.store import registry
from training.store.db import in_transaction

router = APIRouter(tags=["models"])


@router.get("/models", response_model=list[ModelOut])
def list_models(session: SessionDep) -> list[ModelOut]:
    """Every model with its versions and aliases."""
    return [
        ModelOut(
            name=model.name,
            created_at=model.created_at,
            latest=model.versions[-1].number if model.versions else None,
            aliases={alias.name: alias.version.number for alias in model.aliases},
            versions=[
                VersionSummary(version=v.number, created_at=v.created_at, sha256=v.sha256, metrics=v.metrics)
                for v in model.versions
            ],
        )
        for model in registry.list_models(session)
    ]


@router.get("/models/{name}/versions/{version}", response_model=VersionOut)
def get_version(name: str, version: str, session: SessionDep, store: StoreDep) -> VersionOut:
    """One version, by number or alias: its config, metrics, checksum, the job that made it, and
    whether its checkpoint is intact (present, and matching the recorded sha256)."""
    row = registry.get_version(session, name, version)
    problem = checkpoint_problem(store.fetch(session, row.path), row.sha256)
    return VersionOut(
        model=name,
        version=row.number,
        available=problem is None,
        problem=problem,
        aliases=sorted(alias.name for alias in row.model.aliases if alias.version_id == row.id),
        config=row.config,
        metrics=row.metrics,
        sha256=row.sha256,
        created_at=row.created_at,
        job=row.job_id,
    )


@router.get(
    "/models/{name}/versions/{version}/plots/{plot}.png",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}, "description": "The PNG."}},
)
def get_plot(
    name: str, version: str, plot: Literal["loss", "embeddings"], session: SessionDep, store: StoreDep
) -> FileResponse:
    """The version's training plots, drawn when it was trained: the loss curve, and a PCA of
    whole-sequence embeddings of held-out data (coloured by pattern for toy data)."""
    row = registry.get_version(session, name, version)
    path = store.fetch(session, f"{row.path}/{PLOTS_DIR}/{plot}.png")
    if not path.is_file():
        raise NotFound(f"model {name!r} v{row.number} has no {plot} plot")
    return FileResponse(path, media_type="image/png")


@router.put("/models/{name}/aliases/{alias}", response_model=AliasOut, dependencies=[WriteAuth])
def set_alias(name: str, alias: str, body: AliasIn, factory: SessionFactoryDep) -> AliasOut:
    """Point `alias` at a version. Every replica serves the new target within JEPA_RESOLVE_TTL_S.

    Concurrent PUTs of one new alias race to insert it; the loser's transaction is retried and
    becomes an update, so each gets 200 and the last one wins."""

    def point(session: Session) -> AliasOut:
        row = registry.set_alias(session, name, alias, body.version)
        return AliasOut(model=name, alias=row.name, version=row.version.number)

    return in_transaction(factory, point)


@router.delete("/models/{name}/aliases/{alias}", status_code=204, dependencies=[WriteAuth])
def delete_alias(name: str, alias: str, session: SessionDep) -> Response:
    registry.delete_alias(session, name, alias)
    session.commit()
    return Response(status_code=204)


@router.delete("/models/{name}/versions/{version}", status_code=204, dependencies=[WriteAuth])
def delete_version(
    name: str,
    version: str,
    factory: SessionFactoryDep,
    store: StoreDep,
    settings: SettingsDep,
    force: bool = Query(
        False,
        description="Delete the default model's only version all the same: requests that name no model, "
        "and /ready, then fail until another is trained.",
    ),
) -> Response:
    """Delete a version (by number or alias) and its checkpoint. 409 while an alias points at it,
    and for the default model's (JEPA_DEFAULT_MODEL) only version unless `force=true`. Replicas
    stop serving it within JEPA_RESOLVE_TTL_S."""
    keep_last = name == settings.default_model and not force
    path = in_transaction(factory, lambda s: lifecycle.delete_version(s, store, name, version, keep_last))
    lifecycle.remove_artifact(store.data_dir, path)  # after the commit: a crash leaves an orphan for `jepa gc`
    return Response(status_code=204)
