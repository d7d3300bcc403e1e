"""What the `jepa` commands share: the console, the options naming a server, one-line errors,
and `api_client`, the client of a server or of the app run in this process (service/cli_local.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from service.settings import Settings

if TYPE_CHECKING:
    from service.client import JEPAClient, JEPAError
    from training.store.db import SessionFactory

console = Console()
errors = Console(stderr=True)

# The two options of every command that can talk to a server, defined once.
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="JEPA_URL",
        show_default=False,
        help="Base URL of a running server, e.g. http://localhost:8000: talk to it instead of the local "
        "registry under JEPA_DATA_DIR.",
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="JEPA_API_KEY",
        show_default=False,
        help="With --url: the server's API key (its JEPA_API_KEY), sent as a bearer token. Prefer the "
        "environment variable: a flag shows in the process list.",
    ),
]
IdempotencyKeyOption = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        show_default=False,
        help="With --url: sent as the request's Idempotency-Key, so that running the command again "
        "with the same key (after a timeout, say) answers as the first run did instead of acting twice.",
    ),
]
# How long `jepa train` waits for its job and `jepa logs --follow` follows one, by default: past
# it they stop with an error and the job carries on (on the server; a local one back in the queue).
# One remote request's own limits are service.client's.
WAIT_TIMEOUT_S = 24 * 3600.0
WaitTimeoutOption = Annotated[
    float,
    typer.Option(
        "--wait-timeout",
        min=0,
        help="Seconds to wait for the job to end (train) or to follow its lines (logs --follow); past them "
        "the command stops with an error and the job carries on.",
    ),
]
InitOption = Annotated[
    bool,
    typer.Option(
        "--init",
        help="Without --url: create the registry (JEPA_DATA_DIR/jepa.db) if there is none yet. Without "
        "this flag a directory with no registry is refused, so that a typo never starts an empty one.",
    ),
]
ModelOption = Annotated[
    str | None, typer.Option(help="Model name (default: JEPA_DEFAULT_MODEL; the server's with --url).")
]
VersionOption = Annotated[
    str | None, typer.Option(help="Version number or alias (default: JEPA_DEFAULT_ALIAS if set, else the latest).")
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `message` (plain text, not rich markup) on stderr as one `error:` line, unwrapped and
    its control characters escaped (it may quote a server), and exit with `code`."""
    errors.print(f"[red]error:[/red] {cell(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def cell(value: Any) -> str:
    """`value` as text for the terminal: rich markup escaped, control characters written as \\x1b
    and the like (newlines kept), so that a server's strings can neither style nor drive it."""
    from service.client import printable

    return escape(printable(str(value)))


def load_settings() -> Settings:
    """The JEPA_ settings, or exit 2 saying which of them is wrong (no traceback)."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "\n".join(f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        fail(f"invalid configuration (JEPA_ environment variables):\n{problems}", 2)


def session_factory(settings: Settings) -> SessionFactory:
    """Migrate the database to head, then connect. Imported late: `jepa --help` stays instant."""
    from training.store.db import create_db_engine, create_session_factory
    from training.store.migrate import upgrade_to_head

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.resolved_database_url)
    return create_session_factory(create_db_engine(settings.resolved_database_url))


def require_registry(settings: Settings, init: bool | None = None) -> None:
    """Exit, creating nothing, where there is no local registry, unless `init` (the --init flag of
    the commands that have one; None for those that have not) says to create it."""
    if init or registry_exists(settings):
        return
    hint = "; or pass --init to create one there" if init is not None else ""
    fail(
        f"no registry at {(settings.data_dir / 'jepa.db').resolve()} (JEPA_DATA_DIR is "
        f"{settings.data_dir.resolve()}).\nPoint elsewhere: --url http://HOST:PORT (or JEPA_URL) for a running "
        f"server, JEPA_DATA_DIR=DIR for a local data directory, or JEPA_DATABASE_URL for a database server{hint}."
    )


def registry_exists(settings: Settings) -> bool:
    return settings.database_url is not None or (settings.data_dir / "jepa.db").is_file()


@contextlib.contextmanager
def api_client(
    url: str | None, api_key: str | None, init: bool | None = None, trains: bool = False
) -> Iterator[JEPAClient]:
    """A client of the server at `url`, or else of the app run in this process on the local
    registry (with a training worker where `trains`); its errors become one `error:` line and a
    non-zero exit."""
    if url:
        with remote_client(url, api_key) as client:
            yield client
        return
    from service.cli_local import local_client
    from service.client import JEPAError, JobFailed

    settings = load_settings()
    require_registry(settings, init)
    try:
        with local_client(settings, trains) as client:
            yield client
    except JobFailed as exc:
        _job_failed(exc.job)
    except JEPAError as exc:
        _refused(exc)


@contextlib.contextmanager
def remote_client(url: str, api_key: str | None) -> Iterator[JEPAClient]:
    """A client for the server at `url`; its errors become one clear line and a non-zero exit.

    The client refuses answers over its size limit, past its deadline, or not shaped as due
    (BadResponse); anything else a strange answer might still raise here is the last guard's."""
    import httpx

    from service.client import BadResponse, JEPAClient, JEPAError, JobFailed, Unauthorized

    try:
        with JEPAClient(url, api_key=api_key) as client:
            yield client
    except BadResponse as exc:
        fail(f"unusable answer from {url}: {exc.detail}")
    except JobFailed as exc:
        _job_failed(exc.job)
    except Unauthorized as exc:
        if api_key:
            fail(f"{url} answered 401 Unauthorized: {detail_text(exc.detail)}; the API key given was refused")
        fail(f"{url} answered 401 Unauthorized: {detail_text(exc.detail)}; pass it with --api-key or JEPA_API_KEY")
    except JEPAError as exc:
        _refused(exc, url)
    except httpx.RemoteProtocolError as exc:  # not HTTP, or cut off
        fail(f"unusable answer from {url}: {type(exc).__name__}: {exc}")
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {type(exc).__name__}: {exc}")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:  # the last guard, never a traceback
        fail(f"unusable answer from {url}: {type(exc).__name__}: {exc}")


def _refused(exc: JEPAError, url: str | None = None) -> NoReturn:
    """An error answer, from the server at `url` or the local app, as one line. Exit code 2 where
    the request was at fault (invalid, or naming what is missing or in the wrong state), else 1."""
    from service.client import BadRequest, Conflict, NotFound

    said = detail_text(exc.detail)
    fail(
        f"{url} answered {exc.status}: {said}" if url else said,
        2 if isinstance(exc, BadRequest | NotFound | Conflict) else 1,
    )


def _job_failed(job: dict[str, Any]) -> NoReturn:
    fail(f"job {job['id']} {job['status']}: {job.get('error')}")


def detail_text(detail: Any) -> str:
    """A server's `detail`: a string, or FastAPI's list of validation errors."""
    if isinstance(detail, list):
        text = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
            if isinstance(e, dict) and isinstance(e.get("loc", ()), list | tuple)
            else str(e)
            for e in detail
        )
    else:
        text = str(detail)
    return text if len(text) <= 2000 else text[:2000] + f"... ({len(text)} characters)"
