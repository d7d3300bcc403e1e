"""Annotated dependencies: what a route needs, taken from the app state the lifespan built."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.engine import InferenceEngine, ServedVersion
from service.settings import Settings
from training.db import SessionFactory
from training.registry import VersionRef


# `async def`, though they never await: FastAPI runs plain `def` dependencies in its threadpool,
# and two thread hops per request cost more than the model on small requests.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_engine(request: Request) -> InferenceEngine:
    return request.app.state.engine


async def get_session_factory(request: Request) -> SessionFactory:
    return request.app.state.session_factory


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[InferenceEngine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
SessionFactoryDep = Annotated[SessionFactory, Depends(get_session_factory)]


async def resolve_served(
    engine: InferenceEngine, settings: Settings, model: str | None, version: VersionRef
) -> ServedVersion:
    """The version a request names, with the service's defaults filled in."""
    return await engine.resolve_async(model or settings.default_model, version, settings.default_alias)
