"""The `jepa` command as a client: real subprocesses driving a real server through --url."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np

from service.client import JEPAClient
from tests.e2e.servers import Server, StartServer, registry_env, run_jepa
from tests.factories import TINY_CONFIG

TINY_SETS = [arg for key, value in TINY_CONFIG.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def jepa(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`jepa ARGS` run from `cwd`, with no JEPA_ variables but `env`'s."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("JEPA_")}
    return run_jepa(list(args), {**base, "COLUMNS": "200", **env}, cwd=cwd)


def walks(n: int, length: int, dim: int = 3, seed: int = 0) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).normal(size=(n, length, dim)), axis=1).astype(np.float32)


def test_upload_train_encode_and_list_through_the_cli(start_server: StartServer, tmp_path: Path) -> None:
    # Requests of at most 8 sequences: encoding 40 takes five, reassembled in order. No first-start
    # job: ours is the only one.
    server = start_server(data_dir=tmp_path / "server-data", JEPA_MAX_BATCH="8", JEPA_BOOTSTRAP="0")
    url = ["--url", server.base_url]
    work = tmp_path / "work"  # the CLI's cwd: it has no ./data and must not make one
    work.mkdir()
    batch = walks(40, 10)
    np.save(work / "walks.npy", batch)

    uploaded = jepa("datasets", "upload", "walks.npy", "--name", "walks3", *url, cwd=work)
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    assert "40 sequences of 3 features" in uploaded.stdout
    dataset = re.search(r"dataset ([0-9a-f]{32})", uploaded.stdout).group(1)

    trained = jepa("train", "--dataset", dataset, "--model", "cli-walks", *TINY_SETS, "--set", "epochs=2", *url,
                   cwd=work)  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "epoch 2/2" in trained.stdout  # the progress bar, from polling GET /jobs/{id}
    assert "registered cli-walks version 1" in trained.stdout
    job = re.search(r"job ([0-9a-f]{32}) queued", trained.stdout).group(1)

    encoded = jepa("encode", "walks.npy", "--out", "emb.npy", "--model", "cli-walks", *url, cwd=work)
    assert encoded.returncode == 0, encoded.stdout + encoded.stderr
    z = np.load(work / "emb.npy")
    assert z.shape == (40, TINY_CONFIG["repr_dim"]) and z.dtype == np.float32
    with JEPAClient(server.base_url) as client:
        np.testing.assert_allclose(z[16:24], client.encode(batch[16:24], model="cli-walks"), atol=1e-5)
        # A ragged CSV: each length goes as its own .npy request.
        rows = ["sequence_id,t,a,b,c"]
        ragged = [batch[0], batch[1, :6], batch[2, :4]]
        for i, seq in enumerate(ragged):
            rows += [f"s{i},{t},{','.join(str(v) for v in point)}" for t, point in enumerate(seq)]
        (work / "ragged.csv").write_text("\n".join(rows) + "\n")
        from_csv = jepa("encode", "ragged.csv", "--out", "ragged.npy", "--model", "cli-walks", *url, cwd=work)
        assert from_csv.returncode == 0, from_csv.stdout + from_csv.stderr
        expected = np.concatenate([client.encode(seq[None], model="cli-walks") for seq in ragged])
        np.testing.assert_allclose(np.load(work / "ragged.npy"), expected, atol=1e-5)

    # The same version run locally, from the server's data directory, embeds the same.
    local = jepa("encode", "walks.npy", "--out", "local.npy", "--model", "cli-walks", cwd=work,
                 **registry_env(tmp_path / "server-data"))  # fmt: skip
    assert local.returncode == 0, local.stdout + local.stderr
    np.testing.assert_allclose(np.load(work / "local.npy"), z, atol=1e-4)

    models = jepa("models", *url, cwd=work)
    assert models.returncode == 0 and re.search(r"cli-walks\s*│\s*1\s*│\s*1", models.stdout), models.stdout
    jobs = jepa("jobs", *url, cwd=work)
    assert jobs.returncode == 0 and re.search(rf"{job}\s*│\s*cli-walks\s*│\s*succeeded\s*│\s*2/2", jobs.stdout)
    listed = jepa("datasets", *url, cwd=work, JEPA_URL="http://127.0.0.1:1")  # the flag wins over JEPA_URL
    assert (
        listed.returncode == 0 and dataset in listed.stdout and "walks3" in listed.stdout and "10-10" in listed.stdout
    )
    by_env = jepa("datasets", "list", cwd=work, JEPA_URL=server.base_url)
    assert by_env.returncode == 0 and dataset in by_env.stdout

    assert sorted(p.name for p in work.iterdir()) == ["emb.npy", "local.npy", "ragged.csv", "ragged.npy", "walks.npy"]


def test_the_api_key_and_clear_errors(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(JEPA_API_KEY="sesame", JEPA_BOOTSTRAP="0", JEPA_EMBEDDED_WORKER="0")  # jobs stay queued
    url = ["--url", server.base_url]
    toy = ["--pattern", "linear", "--num-samples", "64", *TINY_SETS, "--no-wait"]

    anonymous = jepa("train", *toy, *url, cwd=tmp_path)
    assert anonymous.returncode == 1
    assert "401 Unauthorized" in anonymous.stderr and "--api-key" in anonymous.stderr
    assert "Traceback" not in anonymous.stderr
    wrong = jepa("train", *toy, *url, "--api-key", "open-sesame", cwd=tmp_path)
    assert wrong.returncode == 1 and "refused" in wrong.stderr and "Traceback" not in wrong.stderr

    by_flag = jepa("train", *toy, *url, "--api-key", "sesame", cwd=tmp_path)
    assert by_flag.returncode == 0, by_flag.stderr
    job = re.search(r"job ([0-9a-f]{32}) queued", by_flag.stdout).group(1)
    by_env = jepa("train", *toy, cwd=tmp_path, JEPA_URL=server.base_url, JEPA_API_KEY="sesame")
    assert by_env.returncode == 0, by_env.stderr
    listed = jepa("jobs", *url, cwd=tmp_path)  # reads are open: no key needed
    assert listed.returncode == 0 and job in listed.stdout

    invalid = jepa("train", "--set", "epochs=0", "--no-wait", *url, "--api-key", "sesame", cwd=tmp_path)
    assert invalid.returncode == 2 and "config.epochs" in invalid.stderr and "Traceback" not in invalid.stderr
    unreachable = jepa("models", "--url", "http://127.0.0.1:1", cwd=tmp_path)
    assert unreachable.returncode == 1 and "cannot reach http://127.0.0.1:1" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_score_through_the_cli_remotely_and_locally(server: Server, tmp_path: Path) -> None:
    # The suite's shared server (scoring changes nothing on it), whose default model is the
    # first-start model, trained by this release: calibrated.
    server.wait_for("/ready")
    server_data = Path(server.env["JEPA_DATA_DIR"])
    work = tmp_path / "work"
    work.mkdir()
    series = walks(2, 60, dim=2, seed=5)
    series[1, 40:] += 8.0  # a jump
    np.save(work / "series.npy", series)

    remote = jepa("score", "series.npy", "--out", "remote.npy", "--top", "2", "--url", server.base_url, cwd=work)
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert "percentile" in remote.stdout and "step scores of 2 series written to remote.npy" in remote.stdout
    steps = np.load(work / "remote.npy")
    with JEPAClient(server.base_url) as client:
        scored = client.score(series, stride=1, top=2)
    assert steps.shape == (2, 60)
    np.testing.assert_allclose(steps, np.stack([s["scores"] for s in scored["series"]]), atol=1e-6)

    local = jepa("score", "series.npy", "--out", "local.npy", cwd=work, **registry_env(server_data))
    assert local.returncode == 0, local.stdout + local.stderr
    np.testing.assert_allclose(np.load(work / "local.npy"), steps, atol=1e-4)  # eager here, traced there

    short = jepa("score", "series.npy", "--context-len", "59", "--target-len", "2", "--url", server.base_url, cwd=work)
    assert short.returncode == 2 and "scoring needs at least" in short.stderr
