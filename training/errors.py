"""Domain errors. The service maps each class to one HTTP status in one place."""

from __future__ import annotations


class DomainError(Exception):
    """Base class: the message is safe to show to the caller."""


class NotFound(DomainError):
    pass


class ModelNotFound(NotFound):
    pass


class VersionNotFound(NotFound):
    pass


class JobNotFound(NotFound):
    pass


class InvalidInput(DomainError):
    """The request is well-formed JSON but cannot be served: wrong shapes, impossible configs."""


class ModelUnavailable(DomainError):
    """The version exists in the registry but its checkpoint cannot be loaded."""


class DatasetNotFound(NotFound):
    pass


class DatasetCorrupt(DomainError):
    """A stored dataset's file is missing or no longer matches its recorded sha256."""


class Conflict(DomainError):
    """The request is valid but the resource's state does not allow it (e.g. cancelling a finished job)."""


class Overloaded(DomainError):
    """Too much is already waiting (inference requests, or queued training jobs); retry later."""


class StorageFull(DomainError):
    """The data directory (or the database) has no room left for what the request would write."""


def preview(value: object, limit: int = 64) -> str:
    """`repr(value)`, cut to `limit` characters: error messages name what was sent without
    echoing a whole hostile payload back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


class ExecutorLost(RuntimeError):
    """A job's run was lost where it executed: a Ray worker or node died, or the cluster is out of
    reach. The job is re-queued (or failed when out of attempts), as for a lost local worker."""
