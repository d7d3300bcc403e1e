"""Idempotency keys: a client that retries a state-changing request (after a timeout, a dropped
connection) sends the same `Idempotency-Key`, and the work is done once.

- The same key with the same request gets the first answer again, however often it is retried.
- The same key with a different request is refused (Conflict): the key was already spent.
- Concurrent requests with one key: the key's row is inserted before the work, in the same
  transaction, so the database's primary key lets one of them through; the others wait for it
  to commit (PostgreSQL's unique index, SQLite's single writer), then find its answer.
- Only answers are kept, not errors: a request that failed (a full queue, bad input) did
  nothing, and its retry runs afresh.
- Keys are kept for JEPA_IDEMPOTENCY_TTL_S; an older key counts as new.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from training.data.datasets import Labels
from training.errors import Conflict
from training.store.models import IdempotencyRow, utcnow

KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # visible ASCII, as a header value can carry it


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: dict[str, Any]
    location: str | None = None


def fingerprint(parts: Iterable[bytes]) -> str:
    """sha256 over the parts, each prefixed with its length so that no two splits collide."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def upload_fingerprint(name: str, sequences: Sequence[np.ndarray], labels: Labels | None) -> str:
    """What identifies a dataset upload: its name, its sequences and its labels, however they were
    sent (JSON, .npy or .csv)."""
    parts: list[bytes] = [name.encode()]
    for sequence in sequences:
        parts += [str(sequence.shape).encode(), np.ascontiguousarray(sequence, dtype=np.float32).tobytes()]
    if labels is not None:
        parts += [json.dumps(labels.classes).encode(), labels.codes.astype(np.int64).tobytes()]
    return fingerprint(parts)


def once(
    session: Session, scope: str, key: str | None, request: str, ttl_s: float, work: Callable[[], Answer]
) -> tuple[Answer, bool]:
    """(the answer, whether it is a replay): `work()` run and its answer committed with the key,
    or the answer stored for this key. `request` is the request's fingerprint. Without a key,
    `work()` is run and committed as it is. Conflict when the key was used for another request."""
    if key is None:
        answer = work()
        session.commit()
        return answer, False
    for _ in range(2):  # the second pass reads the answer of a concurrent request that won
        stored = _stored(session, scope, key, request, ttl_s)
        if stored is not None:
            return stored, True
        row = IdempotencyRow(scope=scope, key=key, fingerprint=request, status_code=0, body={})
        session.add(row)
        try:
            session.flush()  # claims the key before any work; a concurrent holder makes this wait
        except IntegrityError:
            session.rollback()
            continue
        answer = work()
        row.status_code, row.body, row.location = answer.status_code, answer.body, answer.location
        session.commit()
        return answer, False
    raise Conflict(f"a request with Idempotency-Key {key!r} is still being processed; retry shortly")


def _stored(session: Session, scope: str, key: str, request: str, ttl_s: float) -> Answer | None:
    expired = utcnow() - timedelta(seconds=ttl_s)
    session.execute(delete(IdempotencyRow).where(IdempotencyRow.created_at < expired))
    row = session.get(IdempotencyRow, (scope, key), populate_existing=True)
    if row is None:
        return None
    if row.fingerprint != request:
        raise Conflict(
            f"Idempotency-Key {key!r} was already used for a different request; send a new key for a new request"
        )
    return Answer(row.status_code, dict(row.body), row.location)
