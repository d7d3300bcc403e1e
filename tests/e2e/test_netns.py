"""Hosts with their own addresses: two workers in network namespaces (veth pairs to this one),
PostgreSQL started by the test and listening on the namespaces' peer addresses, and the API
here; every process has its own data directory and the database artifact store. One worker is
cut off the network mid-job: its job is re-run by the other and succeeds, and once the cut-off
worker is back, nothing it wrote lands.

Needs root (namespaces, veth) and PostgreSQL's server binaries; skipped, saying which, without.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.servers import StartServer, free_port, server_env, training_processes, wait_for_job
from tests.factories import TINY_CONFIG

PREFIX = "jepa-t"  # namespaces and links are named after it and this test's pid, and removed after
SUBNET = "10.231"


def _postgres_bin() -> Path | None:
    for candidate in [shutil.which("initdb"), *sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)]:
        if candidate:
            return Path(candidate).parent
    return None


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces and veth pairs"
    if shutil.which("ip") is None or shutil.which("runuser") is None:
        return "needs iproute2's `ip` and `runuser`"
    if _postgres_bin() is None:
        return "needs PostgreSQL's server binaries (initdb, pg_ctl) to start a PostgreSQL on the namespace addresses"
    probe = subprocess.run(["ip", "netns", "add", f"{PREFIX}-probe{os.getpid()}"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", f"{PREFIX}-probe{os.getpid()}"], check=False)
    return None


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@dataclass
class Host:
    ns: str
    link: str  # the veth end on this side: down cuts the host off
    address: str  # the host's own address, inside its namespace
    gateway: str  # this side's address, where PostgreSQL listens for it


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    if (reason := _skip_reason()) is not None:
        pytest.skip(reason)
    made: list[Host] = []
    try:
        for i in (1, 2):
            host = Host(
                f"{PREFIX}{os.getpid()}-{i}", f"jt{os.getpid() % 100000}h{i}", f"{SUBNET}.{i}.2", f"{SUBNET}.{i}.1"
            )
            sh("ip", "netns", "add", host.ns)
            made.append(host)
            sh("ip", "link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.ns)
            sh("ip", "addr", "add", f"{host.gateway}/24", "dev", host.link)
            sh("ip", "link", "set", host.link, "up")
            sh("ip", "netns", "exec", host.ns, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0")
            sh("ip", "netns", "exec", host.ns, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", host.ns, "ip", "link", "set", "lo", "up")
        yield made
    finally:
        for host in made:
            subprocess.run(["ip", "link", "del", host.link], capture_output=True)
            subprocess.run(["ip", "netns", "del", host.ns], capture_output=True)


@pytest.fixture
def postgres(hosts: list[Host]) -> Iterator[int]:
    """A PostgreSQL of the test's own, on 127.0.0.1 and on each namespace's peer address."""
    binaries, port = _postgres_bin(), free_port()
    assert binaries is not None
    root = Path(tempfile.mkdtemp(prefix="jepa-netns-pg-"))  # not under pytest's root-only tmp
    shutil.chown(root, "postgres")
    data = root / "data"

    def as_postgres(*args: str) -> None:
        sh("runuser", "-u", "postgres", "--", *args)

    try:
        as_postgres(str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {SUBNET}.0.0/16 trust\n")
        listen = ",".join(["127.0.0.1", *(h.gateway for h in hosts)])
        options = f"-c listen_addresses={listen} -c port={port} -c unix_socket_directories={root}"
        as_postgres(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        yield port
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def url(address: str, port: int) -> str:
    return f"postgresql+psycopg://postgres@{address}:{port}/postgres"


def test_a_worker_cut_off_mid_job_loses_it_and_writes_nothing(
    hosts: list[Host], postgres: int, start_server: StartServer, tmp_path: Path
) -> None:
    common = {"JEPA_ARTIFACT_STORE": "database", "JEPA_JOB_STALE_S": "4", "JEPA_DB_RETRY_S": "3"}
    api = start_server(
        tmp_path / "api", JEPA_DATABASE_URL=url("127.0.0.1", postgres), JEPA_EMBEDDED_WORKER="0", JEPA_BOOTSTRAP="0",
        **common,
    )  # fmt: skip
    workers, logs = {}, {}
    for i, host in enumerate(hosts):
        env = server_env(tmp_path / f"worker-{i}", JEPA_DATABASE_URL=url(host.gateway, postgres), **common)
        logs[i] = tmp_path / f"worker-{i}.log"
        argv = ["ip", "netns", "exec", host.ns, sys.executable, "-m", "service.cli", "worker"]
        workers[i] = subprocess.Popen(argv, env=env, stdout=logs[i].open("wb"), stderr=subprocess.STDOUT)
    try:
        with api.client() as client:
            body = {
                "model": "netns",
                "dataset": {"pattern": "mixed", "num_samples": 64, "seq_len": 12},
                "config": {**TINY_CONFIG, "epochs": 300},
            }
            job_id = client.post("/train", json=body).json()["job_id"]
            deadline = time.monotonic() + 90
            while (job := client.get(f"/jobs/{job_id}").json())["progress"].get("epoch", 0) < 2:
                assert time.monotonic() < deadline, [p.read_text()[-2000:] for p in logs.values()]
                time.sleep(0.1)
            first = next(i for i, w in workers.items() if job["worker"].endswith(f":{w.pid}"))
            other = 1 - first

            sh("ip", "link", "set", hosts[first].link, "down")  # the first worker's host drops off
            job = wait_for_job(client, job_id, timeout=150)
            assert job["status"] == "succeeded", job
            assert job["worker"].endswith(f":{workers[other].pid}") and job["attempts"] == 2, job

            sh("ip", "link", "set", hosts[first].link, "up")  # back: whatever it still tries must not land
            # The cut-off attempt ends one of two ways, both by design: its worker, heartbeating
            # again, finds the job handed on and stops the training process ("is no longer
            # running"); or the training process gives up on the database first (JEPA_DB_RETRY_S)
            # and exits. Either way nothing of it may land.
            deadline = time.monotonic() + 60
            while training_processes(workers[first].pid):
                assert time.monotonic() < deadline, logs[first].read_text()[-3000:]
                time.sleep(0.5)
            time.sleep(2)
            (model,) = client.get("/models").json()
            assert [v["version"] for v in model["versions"]] == [1]
            version = client.get("/models/netns/versions/1").json()
            assert version["available"] is True and version["job"] == job_id
            assert client.post("/encode", json={"model": "netns", "sequences": [[[0.0, 1.0]] * 12]}).status_code == 200
    finally:
        for worker in workers.values():
            worker.terminate()
        for worker in workers.values():
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
