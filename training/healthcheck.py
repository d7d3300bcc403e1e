"""`python -m training.healthcheck`: exit 0 when the database in JEPA_DATABASE_URL answers.

The container healthcheck of a worker, which has no HTTP endpoint to ask.
"""

from __future__ import annotations

import sys

from sqlalchemy import text

from training.settings import StorageSettings
from training.store.db import create_db_engine


def main() -> int:
    settings = StorageSettings()
    engine = create_db_engine(settings.resolved_database_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy; say why, without the URL
        print(f"database {settings.safe_database_url} unreachable: {type(exc).__name__}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
