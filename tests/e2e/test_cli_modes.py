"""Every `jepa` command that has both modes answers alike without --url (the app run in the
command's own process, on the local registry) and with it (a server of the same registry).

The remote side is a real `jepa serve` on the same data directory rather than a second in-process
app: what is compared is the CLI's two paths, and --url's goes through the network client, its
limits and its error translation to a real uvicorn server; an in-process app on both sides would
compare the local path with itself. Both sides run the CLI in this process (typer's CliRunner),
with the server's JEPA_ settings, so that its limits are the local app's too. Remote error lines
name the server (`URL answered 404: ...`); that prefix aside, each pair of answers is the same:
exit code, stdout and stderr, 32-hex ids written as <id> where the two sides made one each."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from service import cli
from service.client import JEPAClient
from tests.e2e.servers import StartServer
from tests.factories import TINY_CONFIG

TINY_SETS = [arg for key, value in TINY_CONFIG.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
ID = re.compile(r"\b[0-9a-f]{32}\b")


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.console, "width", 200)  # rich wraps tables to the terminal's width


class Modes:
    """Runs a command both ways and compares the answers."""

    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("JEPA_")}
        self.env = {**unset, "COLUMNS": "200", **env}

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(cli.app, list(args), env=self.env, catch_exceptions=False)

    def both(
        self, *args: str, local: list[str] | None = None, remote: list[str] | None = None
    ) -> tuple[Result, Result]:
        """`args` locally, then through --url; `local` and `remote` replace them on one side."""
        return self.run(*(local or args)), self.run(*(remote or args), "--url", self.url)

    def alike(self, *args: str, ids: bool = False, **sides: list[str]) -> tuple[Result, Result]:
        local, remote = self.both(*args, **sides)
        said = (local.exit_code, self.plain(local.stdout, ids), self.plain(local.stderr, ids))
        assert said == (remote.exit_code, self.plain(remote.stdout, ids), self.plain(remote.stderr, ids)), (
            args,
            local.output,
            remote.output,
        )
        return local, remote

    def plain(self, text: str, ids: bool) -> str:
        text = re.sub(rf"{re.escape(self.url)} answered \d+: ", "", text)
        return ID.sub("<id>", text) if ids else text


def walks(n: int, length: int, dim: int = 3, seed: int = 0) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).normal(size=(n, length, dim)), axis=1).astype(np.float32)


def test_local_and_remote_answers_are_the_same(
    start_server: StartServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(data_dir=tmp_path / "data", JEPA_BOOTSTRAP="0", JEPA_MAX_BATCH="8")
    modes = Modes(server.base_url, {k: v for k, v in server.env.items() if k.startswith("JEPA_")})
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    np.save(work / "walks.npy", walks(24, 10))
    np.save(work / "few.npy", walks(6, 10, seed=1))
    (work / "bad.csv").write_text("id,x\n1,2\n")

    # datasets upload, list, delete
    local, remote = modes.alike("datasets", "upload", "walks.npy", "--name", "walks", ids=True)
    assert local.exit_code == 0 and "24 sequences of 3 features" in local.stdout, local.output
    mine, theirs = (ID.search(side.stdout).group(0) for side in (local, remote))
    modes.alike("datasets", "upload", "bad.csv")  # 422
    modes.alike("datasets")
    modes.alike("datasets", "list", "--limit", "1")

    # train: the same body queues the same resolved job either way
    body = ["train", "--dataset", mine, "--model", "modes", *TINY_SETS, "--set", "epochs=2"]
    local, remote = modes.both(*body)
    assert local.exit_code == remote.exit_code == 0, local.output + remote.output
    assert "registered modes version 1" in local.stdout and "registered modes version 2" in remote.stdout
    assert "epoch 2/2" in local.stdout and "epoch 2/2" in remote.stdout
    jobs = [ID.search(side.stdout).group(0) for side in (local, remote)]
    with JEPAClient(server.base_url) as client:
        trained = [client.job(job) for job in jobs]
    assert trained[0]["spec"] == trained[1]["spec"] and trained[0]["status"] == trained[1]["status"] == "succeeded"
    modes.alike("train", "--dataset", "f" * 32)  # 404
    modes.alike("train", "--set", "epochs=0")  # 422

    # models, jobs, logs
    modes.alike("models")
    modes.alike("jobs")
    modes.alike("jobs", "--limit", "1")
    modes.alike("logs", jobs[0])
    modes.alike("logs", "f" * 32)

    # encode and score: the same numbers, within the same limits (8 sequences a request)
    for command in (["encode", "walks.npy", "--version", "1"], ["score", "few.npy", "--top", "2"]):
        args = [*command, "--model", "modes", "--out"]
        local, remote = modes.both(local=[*args, "local.npy"], remote=[*args, "remote.npy"])
        assert local.exit_code == remote.exit_code == 0, local.output + remote.output
        assert local.stdout.replace("local.npy", "remote.npy") == remote.stdout
        np.testing.assert_allclose(np.load("local.npy"), np.load("remote.npy"), atol=1e-5)
    modes.alike("encode", "walks.npy", "--out", "z.npy", "--model", "nope")  # 404
    modes.alike("score", "few.npy", "--model", "modes", "--method", "forecast", "--context-len", "9")  # 422
    modes.alike("score", "walks.npy", "--model", "modes")  # 422: one request, over JEPA_MAX_BATCH

    # delete: each side deletes its own version, job and dataset; then nothing is left to delete
    modes.alike("delete", "version", "modes", "9")  # 404
    local, remote = modes.both("delete", "version", "modes", "1", remote=["delete", "version", "modes", "2"])
    assert (local.exit_code, local.stdout, remote.exit_code, remote.stdout) == (
        0, "deleted modes v1\n", 0, "deleted modes v2\n"
    )  # fmt: skip
    modes.alike("models")
    modes.alike("delete", "job", "x", ids=True, local=["delete", "job", jobs[0]], remote=["delete", "job", jobs[1]])
    modes.alike("delete", "job", jobs[0])  # 404 both ways now
    modes.alike("delete", "dataset", "x", ids=True, local=["delete", "dataset", mine],
                remote=["delete", "dataset", theirs])  # fmt: skip
    modes.alike("delete", "dataset", mine)
    modes.alike("datasets")
