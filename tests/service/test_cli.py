"""The `jepa` command without --url. Most tests run it in this process through typer's CliRunner
(the app it talks to runs in this process either way; training happens in a child process of the
worker); the signal tests run the real entry point as a subprocess, since a signal has to reach a
process of its own."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner, Result

from service import cli
from service.cli_inference import length_groups, per_request, score
from service.cli_train import parse_sets, train_body
from tests.factories import TINY_CONFIG

# TINY_CONFIG as `--set key=value` flags.
TINY_SETS = [arg for key, value in TINY_CONFIG.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.console, "width", 200)  # rich wraps tables to the terminal's width


def jepa(*args: str, data_dir: Path | None, **env: str) -> Result:
    """`jepa ARGS` run in this process, with no JEPA_ variables but JEPA_DATA_DIR and `env`'s.
    An exception other than the command's exit fails the test: that is a traceback for a user."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("JEPA_")}
    given = {"JEPA_DATA_DIR": str(data_dir)} if data_dir is not None else {}
    wide = {"COLUMNS": "200"}  # the progress bar makes a console of its own
    return CliRunner().invoke(cli.app, list(args), env={**unset, **wide, **given, **env}, catch_exceptions=False)


def jepa_env(data_dir: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JEPA_")}
    if data_dir is not None:
        env["JEPA_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "200"  # rich wraps tables to the terminal width
    return env


def walks(n: int = 24, length: int = 10, dim: int = 3) -> np.ndarray:
    return np.cumsum(np.random.default_rng(0).normal(size=(n, length, dim)), axis=1).astype(np.float32)


def upload(tmp_path: Path, data_dir: Path) -> str:
    np.save(tmp_path / "walks.npy", walks())
    uploaded = jepa("datasets", "upload", str(tmp_path / "walks.npy"), "--init", data_dir=data_dir)
    assert uploaded.exit_code == 0, uploaded.output
    return re.search(r"dataset ([0-9a-f]{32})", uploaded.stdout).group(1)


def job_rows(data_dir: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(data_dir / "jepa.db") as db:
        return db.execute("SELECT model_name, status, error FROM jobs ORDER BY created_at").fetchall()


def test_train_from_a_config_file_with_flag_overrides(tmp_path: Path) -> None:
    config = tmp_path / "job.json"
    config.write_text(
        json.dumps({"model": "cli", "dataset": {"num_samples": 64, "seq_len": 12}, "config": TINY_CONFIG})
    )
    result = jepa("train", "--init", "--config", str(config), "--epochs", "3", "--pattern", "linear", data_dir=tmp_path)
    assert result.exit_code == 0, result.output
    assert re.search(r"job [0-9a-f]{32} queued in ", result.stdout)
    assert "registered cli version 1" in result.stdout
    assert "epoch 3/3" in result.stdout  # the progress bar reached the end

    listing = jepa("models", data_dir=tmp_path)
    assert "cli" in listing.stdout
    jobs = jepa("jobs", data_dir=tmp_path)
    assert "succeeded" in jobs.stdout and "3/3" in jobs.stdout
    assert [row[:2] for row in job_rows(tmp_path)] == [("cli", "succeeded")]  # no first-start job beside it

    weights = list((tmp_path / "checkpoints" / "cli").glob("*/model.safetensors"))
    assert len(weights) == 1
    cfg = json.loads((weights[0].parent / "config.json").read_text())
    assert cfg["train"]["epochs"] == 3 and cfg["model"]["hidden_dim"] == TINY_CONFIG["hidden_dim"]


def test_train_refuses_a_config_that_cannot_work(tmp_path: Path) -> None:
    result = jepa("train", "--init", "--seq-len", "6", "--context-len", "8", data_dir=tmp_path)
    assert result.exit_code == 2
    assert "exceeds the shortest sequence's length" in result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before the registry was created


def test_train_no_wait_queues_the_job_for_a_worker(tmp_path: Path) -> None:
    result = jepa("train", "--init", "--no-wait", "--num-samples", "64", *TINY_SETS, data_dir=tmp_path)
    assert result.exit_code == 0, result.output
    assert "a `jepa worker` or `jepa serve` on this registry trains it" in result.stdout
    assert [row[1] for row in job_rows(tmp_path)] == ["queued"]  # no worker ran in the command


@pytest.mark.parametrize("command", ["serve", "worker", "train", "encode", "score", "models", "jobs", "datasets"])
def test_every_command_explains_itself(command: str, tmp_path: Path) -> None:
    result = jepa(command, "--help", data_dir=tmp_path)
    assert result.exit_code == 0 and "Usage" in result.stdout


def test_demo_prints_the_seeds_lines_and_saves_its_plots(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = jepa("demo", "--epochs", "2", "--pattern", "mixed", "--out", str(out), data_dir=tmp_path)
    assert result.exit_code == 0, result.output
    assert "Epoch 0, Loss:" in result.stdout and "Mean similarity:" in result.stdout
    assert "retrieval_ratio" in result.stdout and "probe_kind_acc" in result.stdout
    for name in ("sequences", "loss", "embeddings", "predictions"):
        assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def test_datasets_upload_and_list(tmp_path: Path) -> None:
    np.save(tmp_path / "walks.npy", np.random.default_rng(0).normal(size=(6, 9, 3)).astype(np.float32))
    uploaded = jepa("datasets", "upload", str(tmp_path / "walks.npy"), "--init", data_dir=tmp_path)
    assert uploaded.exit_code == 0, uploaded.output
    assert "6 sequences of 3 features" in uploaded.stdout
    listed = jepa("datasets", "list", data_dir=tmp_path)
    assert "walks" in listed.stdout and "9-9" in listed.stdout
    assert jepa("datasets", data_dir=tmp_path).stdout == listed.stdout  # alone, it lists
    (tmp_path / "bad.csv").write_text("id,x\n1,2\n")
    refused = jepa("datasets", "upload", str(tmp_path / "bad.csv"), data_dir=tmp_path)
    assert refused.exit_code == 2 and "header" in refused.stderr
    misplaced = jepa("datasets", "--url", "http://x", "upload", str(tmp_path / "walks.npy"), data_dir=tmp_path)
    assert misplaced.exit_code == 2 and "put --url after the subcommand" in misplaced.stderr


def test_local_commands_refuse_to_create_a_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a directory with no ./data: each command says where it looked and how to point
    elsewhere, exits non-zero, and creates nothing."""
    np.save(tmp_path / "walks.npy", walks())
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.iterdir())
    tiny = ["--num-samples", "64", "--seq-len", "12", *TINY_SETS]
    for args in (
        ["models"],
        ["jobs"],
        ["datasets"],
        ["datasets", "list"],
        ["datasets", "upload", "walks.npy"],
        ["train", *tiny],
        ["encode", "walks.npy", "--out", "emb.npy"],
        ["score", "walks.npy", "--out", "scores.npy"],
        ["logs", "f" * 32],
        ["delete", "job", "f" * 32],
        ["gc"],
    ):
        result = jepa(*args, data_dir=None)
        assert result.exit_code == 1, (args, result.output)
        message = " ".join(result.stderr.split())  # unwrapped
        assert f"no registry at {tmp_path / 'data' / 'jepa.db'}" in message, (args, message)
        assert "--url" in message and "JEPA_DATA_DIR" in message and "JEPA_DATABASE_URL" in message
        assert ("--init" in message) == (args[0] == "train" or args[1:2] == ["upload"])
        assert "Traceback" not in result.stderr
        assert sorted(tmp_path.iterdir()) == before, args  # no ./data, no emb.npy


def test_train_and_encode_on_an_uploaded_dataset_locally(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    dataset = upload(tmp_path, data_dir)

    by_flag = jepa(
        "train", "--dataset", dataset, "--model", "walks", *TINY_SETS, "--set", "epochs=1", data_dir=data_dir
    )
    assert by_flag.exit_code == 0, by_flag.output
    assert "registered walks version 1" in by_flag.stdout and "epoch 1/1" in by_flag.stdout

    # The crash: a config file naming a stored dataset was never resolved against the registry.
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model": "walks", "dataset": {"id": dataset}, "config": {**TINY_CONFIG, "epochs": 1}}))
    by_file = jepa("train", "--config", str(job), data_dir=data_dir)
    assert by_file.exit_code == 0, by_file.output
    assert "registered walks version 2" in by_file.stdout
    assert [status for _, status, _ in job_rows(data_dir)] == ["succeeded", "succeeded"]

    encoded = jepa("encode", str(tmp_path / "walks.npy"), "--out", str(tmp_path / "emb"), "--model", "walks",
                   "--version", "1", data_dir=data_dir)  # fmt: skip
    assert encoded.exit_code == 0, encoded.output
    z = np.load(tmp_path / "emb")  # written where asked, no .npy appended
    assert z.shape == (24, TINY_CONFIG["repr_dim"]) and z.dtype == np.float32

    # The server's limits, from the app's settings: 5 sequences per request here, reassembled in order.
    small = jepa("encode", str(tmp_path / "walks.npy"), "--out", str(tmp_path / "small.npy"), "--model", "walks",
                 "--version", "1", data_dir=data_dir, JEPA_MAX_BATCH="5")  # fmt: skip
    assert small.exit_code == 0, small.output
    np.testing.assert_allclose(np.load(tmp_path / "small.npy"), z, atol=1e-5)
    too_long = jepa("encode", str(tmp_path / "walks.npy"), "--out", str(tmp_path / "no.npy"), "--model", "walks",
                    data_dir=data_dir, JEPA_MAX_SEQ_LEN="8")  # fmt: skip
    assert too_long.exit_code == 2 and "max_seq_len 8" in too_long.stderr, too_long.output

    toy = jepa("train", "--dataset", dataset, "--pattern", "circle", data_dir=data_dir)
    assert toy.exit_code == 2 and "do not apply to an uploaded dataset" in toy.stderr
    missing = jepa("train", "--dataset", "f" * 32, data_dir=data_dir)
    assert missing.exit_code == 2 and "not found" in missing.stderr
    assert len(job_rows(data_dir)) == 2  # neither refusal queued a job

    # The default model keeps its last version unless forced, locally as over HTTP.
    def delete(*args: str) -> Result:
        return jepa("delete", "version", "walks", *args, data_dir=data_dir, JEPA_DEFAULT_MODEL="walks")

    assert delete("1").exit_code == 0
    last = delete("2")
    assert last.exit_code == 2 and "only version" in last.stderr, last.output
    assert delete("2", "--force").exit_code == 0


def test_a_failing_local_train_marks_its_job_failed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    dataset = upload(tmp_path, data_dir)
    for stored in (data_dir / "datasets").rglob("*.safetensors"):
        stored.write_bytes(b"not the dataset any more")

    result = jepa("train", "--dataset", dataset, "--model", "broken", *TINY_SETS, data_dir=data_dir)
    assert result.exit_code == 1
    assert "failed" in result.stderr and "sha256" in result.stderr
    [(model, status, error)] = job_rows(data_dir)
    assert (model, status) == ("broken", "failed") and "DatasetCorrupt" in error


@pytest.mark.parametrize(
    ("sig", "code", "reason", "whole_group"),
    [
        (signal.SIGINT, 130, "interrupted (Ctrl-C)", True),  # a terminal's Ctrl-C: the training process gets it too
        (signal.SIGTERM, 143, "terminated (SIGTERM)", False),  # `kill PID`
    ],
)
def test_stopping_a_local_train_cancels_its_job(
    sig: int, code: int, reason: str, whole_group: bool, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    args = ["train", "--init", "--model", "endless", "--num-samples", "64", "--seq-len", "12", *TINY_SETS]
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args, "--set", "epochs=10000"],
        env=jepa_env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job has
    )
    try:
        _wait_for_an_epoch(data_dir)
        if whole_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == code, stderr
    assert f"{reason}; cancelled" in stderr
    assert "Traceback" not in stderr  # the training process shares this stderr: it did not die of the signal
    [(_, status, error)] = job_rows(data_dir)
    assert status == "cancelled" and error == "cancelled by request"
    assert _group_is_gone(proc.pid), "a process of the command outlived it"


def _wait_for_an_epoch(data_dir: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # until it is training: an epoch recorded
        try:
            with sqlite3.connect(data_dir / "jepa.db") as db:
                if db.execute("SELECT count(*) FROM job_epochs").fetchone()[0]:
                    return
        except sqlite3.Error:  # not created yet
            pass
        time.sleep(0.2)
    pytest.fail("the job never started training")


def _group_is_gone(pgid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_the_entry_point_lists_a_registry(tmp_path: Path) -> None:
    """`python -m service.cli`, the real entry point, on a registry made in this process."""
    assert jepa("datasets", "upload", str(_saved(tmp_path)), "--init", data_dir=tmp_path).exit_code == 0
    done = subprocess.run([sys.executable, "-m", "service.cli", "datasets"], env=jepa_env(tmp_path),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "walks" in done.stdout and "10-10" in done.stdout and done.stderr == ""


def _saved(tmp_path: Path) -> Path:
    np.save(tmp_path / "walks.npy", walks())
    return tmp_path / "walks.npy"


def test_set_values_are_json_when_they_parse_and_keys_pass_through() -> None:
    values = parse_sets(
        ["epochs=3", "lr=1e-3", "preset=seed", "bidirectional=true", "momentum_end=null", "note=", "tag=a=b",
         "sizes=[1, 2]", "some_future_field=7"]
    )  # fmt: skip
    assert values == {
        "epochs": 3,
        "lr": 0.001,
        "preset": "seed",
        "bidirectional": True,
        "momentum_end": None,
        "note": "",
        "tag": "a=b",
        "sizes": [1, 2],
        "some_future_field": 7,
    }
    with pytest.raises(typer.BadParameter):
        parse_sets(["epochs"])
    with pytest.raises(typer.BadParameter):
        parse_sets(["=3"])


def test_a_train_body_layers_the_file_the_sets_and_the_flags(tmp_path: Path) -> None:
    no_toy = dict.fromkeys(["pattern", "num_samples", "seq_len", "noise", "seed"])
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"model": "m", "dataset": {"pattern": "circle"}, "config": {"epochs": 5, "lr": 0.1}}))
    body = train_body(spec, None, None, ["epochs=7", "hidden_dim=8"], {**no_toy, "seq_len": 30}, {"lr": 0.5})
    assert body == {
        "model": "m",
        "dataset": {"pattern": "circle", "seq_len": 30},
        "config": {"epochs": 7, "lr": 0.5, "hidden_dim": 8},
    }
    config_only = tmp_path / "config.json"
    config_only.write_text(json.dumps({"epochs": 5, "optimizer": "adamw"}))
    body = train_body(config_only, "other", "a" * 32, ["epochs=2"], no_toy, {})
    assert body == {
        "model": "other",
        "dataset": {"kind": "stored", "id": "a" * 32},
        "config": {"epochs": 2, "optimizer": "adamw"},
    }
    toml = tmp_path / "job.toml"
    toml.write_text('model = "t"\n[config]\nepochs = 4\n')
    assert train_body(toml, None, None, [], no_toy, {}) == {"model": "t", "config": {"epochs": 4}}


def test_encoding_is_split_by_the_servers_limits() -> None:
    limits = {"max_batch": 8, "max_request_points": 1000, "max_seq_len": 50, "max_body_bytes": 10**6}
    assert per_request(10, 3, limits) == 8  # max_batch
    assert per_request(50, 4, limits) == 5  # 5 x 50 x 4 = 1000 numbers
    assert per_request(10, 3, {**limits, "max_body_bytes": 4096 + 4 * 30 * 2}) == 2  # the body cap
    assert per_request(10, 3, {"max_request_points": 90}) == 3  # a limit /info leaves out is the server's to enforce
    assert per_request(10, 3, {}) == sys.maxsize
    with pytest.raises(typer.Exit):
        per_request(51, 1, limits)  # longer than max_seq_len
    with pytest.raises(typer.Exit):
        per_request(40, 30, limits)  # one sequence is 1200 numbers
    ragged = [np.zeros((n, 2), np.float32) for n in (5, 3, 5, 7, 3)]
    assert length_groups(ragged) == {5: [0, 2], 3: [1, 4], 7: [3]}
    assert length_groups(np.zeros((4, 6, 2))) == {6: [0, 1, 2, 3]}


@pytest.fixture
def without_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    yield


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_the_ray_executor_without_ray_stops_at_start_saying_why(
    command: str, tmp_path: Path, without_ray: None
) -> None:
    done = jepa(command, data_dir=tmp_path, JEPA_EXECUTOR="ray", JEPA_RAY_ADDRESS="127.0.0.1:6379")
    assert done.exit_code == 2, done.output
    assert "JEPA_EXECUTOR=ray needs Ray" in done.stderr and "jepa-service[ray]" in done.stderr


def test_jepa_score_defaults_are_the_apis() -> None:
    import inspect

    from jepa_model.surprise import SEGMENT_PERCENTILE, TOP_SEGMENTS

    defaults = {name: p.default for name, p in inspect.signature(score).parameters.items()}
    assert (defaults["top"], defaults["threshold"], defaults["stride"]) == (TOP_SEGMENTS, SEGMENT_PERCENTILE, 1)
