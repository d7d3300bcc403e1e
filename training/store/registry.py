"""The registry of versioned checkpoints: models by name, numbered versions, aliases."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from training.errors import InvalidInput, ModelNotFound, VersionNotFound, preview
from training.store.models import AliasRow, ModelRow, VersionRow

# Matched with fullmatch: `$` alone would also accept a trailing newline ("prod\n").
ALIAS_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
# ASCII digits only (str.isdigit also takes "²"), and few enough to fit the database's integer.
VERSION_DIGITS = re.compile(r"[0-9]{1,10}")
MAX_VERSION = 2**31 - 1  # the largest number PostgreSQL's INTEGER column (and SQLite's) holds

VersionRef = int | str | None  # a number, an alias, or None for the default


def parse_version_ref(ref: VersionRef) -> int | str | None:
    """A number stays a number (also when spelled as digits); anything else must look like an alias."""
    if ref is None:
        return None
    if isinstance(ref, bool) or not isinstance(ref, int | str):
        raise InvalidInput("version must be a positive integer or an alias name")
    if isinstance(ref, int):
        if not 1 <= ref <= MAX_VERSION:
            raise InvalidInput(
                f"version must be a positive integer (at most {MAX_VERSION}) or an alias name, got {preview(ref)}"
            )
        return ref
    if VERSION_DIGITS.fullmatch(ref):
        return parse_version_ref(int(ref))
    if not ALIAS_PATTERN.fullmatch(ref):
        raise InvalidInput(f"version must be a positive integer or an alias name, got {preview(ref)}")
    return ref


def get_model(session: Session, name: str) -> ModelRow:
    model = session.scalar(select(ModelRow).where(ModelRow.name == name))
    if model is None:
        raise ModelNotFound(f"model {preview(name)} not found")
    return model


def get_or_create_model(session: Session, name: str) -> ModelRow:
    model = session.scalar(select(ModelRow).where(ModelRow.name == name))
    if model is None:
        model = ModelRow(name=name)
        session.add(model)
        session.flush()  # a concurrent insert of the same name fails here; the caller retries
    return model


def register_version(
    session: Session,
    model_name: str,
    *,
    config: dict[str, Any],
    metrics: dict[str, Any],
    sha256: str,
    path: str,
    job_id: str | None,
) -> VersionRow:
    """Add the next version of `model_name`. Run inside `in_transaction`: a race on the number
    violates the (model_id, number) unique constraint and the transaction is retried."""
    model = get_or_create_model(session, model_name)
    latest = session.scalar(select(func.max(VersionRow.number)).where(VersionRow.model_id == model.id))
    version = VersionRow(
        model_id=model.id,
        number=(latest or 0) + 1,
        config=config,
        metrics=metrics,
        sha256=sha256,
        path=path,
        job_id=job_id,
    )
    session.add(version)
    session.flush()
    return version


def get_version(session: Session, model_name: str, ref: VersionRef, default_alias: str | None = None) -> VersionRow:
    """Resolve `ref` to a version of `model_name`.

    None means `default_alias` if that alias is set, otherwise the latest version.
    """
    ref = parse_version_ref(ref)
    model = get_model(session, model_name)
    base = select(VersionRow).options(selectinload(VersionRow.model))
    if isinstance(ref, int):
        version = session.scalar(base.where(VersionRow.model_id == model.id, VersionRow.number == ref))
        if version is None:
            raise VersionNotFound(f"model {model_name!r} has no version {ref}")
        return version
    alias = ref if ref is not None else default_alias
    if alias is not None:
        version = session.scalar(
            base.join(AliasRow, AliasRow.version_id == VersionRow.id).where(
                AliasRow.model_id == model.id, AliasRow.name == alias
            )
        )
        if version is not None:
            return version
        if ref is not None:
            raise VersionNotFound(f"model {model_name!r} has no alias {alias!r}")
    version = session.scalar(base.where(VersionRow.model_id == model.id).order_by(VersionRow.number.desc()).limit(1))
    if version is None:
        raise VersionNotFound(f"model {model_name!r} has no versions yet")
    return version


def list_models(session: Session) -> list[ModelRow]:
    return list(
        session.scalars(
            select(ModelRow)
            .options(selectinload(ModelRow.versions), selectinload(ModelRow.aliases).selectinload(AliasRow.version))
            .order_by(ModelRow.name)
        )
    )


def set_alias(session: Session, model_name: str, alias: str, ref: int | str) -> AliasRow:
    """Point `alias` at the version `ref` names (a number, or another alias)."""
    if not ALIAS_PATTERN.fullmatch(alias):
        raise InvalidInput(f"alias must match {ALIAS_PATTERN.pattern}, got {preview(alias)}")
    version = get_version(session, model_name, ref)
    row = session.get(AliasRow, (version.model_id, alias))
    if row is None:
        row = AliasRow(model_id=version.model_id, name=alias, version=version)
        session.add(row)
    else:
        row.version = version
    session.flush()
    return row


def delete_alias(session: Session, model_name: str, alias: str) -> None:
    model = get_model(session, model_name)
    row = session.get(AliasRow, (model.id, alias))
    if row is None:
        raise VersionNotFound(f"model {model_name!r} has no alias {alias!r}")
    session.delete(row)


def has_versions(session: Session, model_name: str) -> bool:
    return (
        session.scalar(select(func.count(VersionRow.id)).join(ModelRow).where(ModelRow.name == model_name)) or 0
    ) > 0
