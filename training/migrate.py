"""Bring a database's schema to the newest alembic revision."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command

# The migrations live at the repository root, beside this package (installed editable).
ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"


def alembic_config(url: str) -> Config:
    if not (ALEMBIC_DIR / "env.py").is_file():
        raise RuntimeError(
            f"alembic migrations not found at {ALEMBIC_DIR}; install the project with `pip install -e .`"
        )
    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.attributes["url"] = url  # passed as an attribute: an .ini option would mangle '%' in passwords
    return cfg


def upgrade_to_head(url: str) -> None:
    command.upgrade(alembic_config(url), "head")
