"""Answering a state-changing request that carried an Idempotency-Key (service.idempotency)."""

from __future__ import annotations

from typing import TypeVar

from fastapi import Response

from service.idempotency import Answer

T = TypeVar("T")

REPLAYED = "Idempotent-Replayed"


def with_headers(out: T, answer: Answer, replayed: bool, response: Response) -> T:
    """`out` (the answer's body as the route's model), with the answer's Location, and a
    REPLAYED header when it is the stored answer to an earlier request with the same key."""
    if answer.location is not None:
        response.headers["Location"] = answer.location
    if replayed:
        response.headers[REPLAYED] = "true"
    return out
