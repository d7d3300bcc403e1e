"""Tests of the optional extras (`bench`, `ray`): skipped where an extra is not installed, except in
CI, which installs them all. There a missing one fails the run, so a bench or the Ray executor can
never rot behind a skip that nobody reads."""

from __future__ import annotations

import importlib.util
import os

import pytest


def why_skip(modules: tuple[str, ...], extra: str) -> str | None:
    """Why a test of `modules` (from the `extra` extra) skips here; None where it runs, as in CI
    always, where their import then fails the test if they are missing."""
    absent = [m for m in modules if not os.environ.get("CI") and importlib.util.find_spec(m) is None]
    return f"needs the {extra} extra ({', '.join(absent)}): pip install '.[{extra}]'" if absent else None


def needs(*modules: str, extra: str) -> pytest.MarkDecorator:
    """A mark: the test skips unless every one of `modules` is installed (never in CI)."""
    reason = why_skip(modules, extra)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def require(*modules: str, extra: str) -> None:
    """At a test module's top, before it imports what needs them: the whole module skips unless
    every one of `modules` is installed (never in CI)."""
    if reason := why_skip(modules, extra):
        pytest.skip(reason, allow_module_level=True)
