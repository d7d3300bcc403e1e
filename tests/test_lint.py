"""Style and import hygiene, so the test command is the only check anyone has to run."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_would_change_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", str(ROOT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_imports_flow_one_way() -> None:
    """service -> training -> jepa_model; jepa_model imports neither, nor any web or database code."""
    forbidden = {
        "jepa_model": ("service", "training", "fastapi", "sqlalchemy", "alembic", "httpx", "starlette", "pydantic"),
        "training": ("service", "fastapi", "starlette", "uvicorn"),
    }
    offenders = []
    for package, banned in forbidden.items():
        for path in (ROOT / package).rglob("*.py"):
            for line in path.read_text().splitlines():
                words = line.split()
                if len(words) >= 2 and words[0] in ("import", "from") and words[1].split(".")[0] in banned:
                    offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert offenders == []


# training's floors, lowest first. A module imports from its own floor and the floors below, never
# from above: the registry knows nothing of datasets, datasets nothing of jobs, and only the
# processes and chores on the top floor (the worker, retention, the health check, the demo) see all.
TRAINING_FLOORS = (
    ("training.errors", "training.settings", "training.logs", "training.plots"),
    ("training.store",),
    ("training.data",),
    ("training.execution",),
    ("training.lifecycle", "training.worker", "training.healthcheck", "training.demo"),
)


def _training_imports(path: Path) -> set[str]:
    """The training modules `path` imports, as dotted names (`from training.store import db` is training.store.db)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "training":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (ROOT / Path(*candidate.split("."))).with_suffix(".py").exists()
                found.add(candidate if is_module or (ROOT / Path(*candidate.split("."))).is_dir() else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "training"}
    return found


def _floor(module: str) -> int:
    for level, members in enumerate(TRAINING_FLOORS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return level
    raise AssertionError(f"{module} is on no floor of TRAINING_FLOORS: add it where it belongs")


def test_training_subpackages_import_down_and_without_cycles() -> None:
    graph = {}
    for path in (ROOT / "training").rglob("*.py"):
        if "migrations" in path.parts or path.name == "__init__.py":
            continue
        graph[".".join(path.relative_to(ROOT).with_suffix("").parts)] = _training_imports(path)
    upward = [f"{m} imports {i}" for m, imports in graph.items() for i in imports if _floor(i) > _floor(m)]
    assert upward == []

    def cycle_from(start: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in graph.get(start, ()):
            if nxt in seen:
                return (*seen, nxt)
            found = cycle_from(nxt, (*seen, nxt))
            if found:
                return found
        return None

    assert [c for m in graph if (c := cycle_from(m, (m,)))] == []


def test_each_training_subpackage_says_what_it_is_for_in_one_line() -> None:
    for init in (ROOT / "training").glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "\n" not in doc.strip(), f"{init.relative_to(ROOT)}: one line saying what it holds"


def test_tests_mirror_the_packages() -> None:
    """tests/<package>/<subpackage>/ exists only for a real subpackage, so a test's place says
    which code it is about (tests/training/store/ for training/store/)."""
    for package in ("jepa_model", "training", "service"):
        for folder in (ROOT / "tests" / package).rglob("*"):
            if folder.is_dir() and folder.name != "__pycache__":
                code = ROOT / package / folder.relative_to(ROOT / "tests" / package)
                assert (code / "__init__.py").is_file(), f"{folder} mirrors no package: {code} is none"
