"""GET /jobs/{id}/logs: the training process's lines, paged, from the registry database."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.servers import StartServer, run_jepa, server_env, wait_for_job
from tests.factories import TINY_CONFIG


def test_a_jobs_training_lines_are_served_and_paged(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", JEPA_BOOTSTRAP="0")
    with server.client() as client:
        body = {"model": "logged", "dataset": {"pattern": "mixed", "num_samples": 64, "seq_len": 12}}
        job_id = client.post("/train", json={**body, "config": {**TINY_CONFIG, "epochs": 3}}).json()["job_id"]
        assert wait_for_job(client, job_id)["status"] == "succeeded"

        logs = client.get(f"/jobs/{job_id}/logs").json()
        messages = [line["message"] for line in logs["lines"]]
        assert sum(f"job {job_id} epoch {n}/3 " in m for m in messages for n in (1, 2, 3)) == 3, messages
        assert any(f"job {job_id} registered logged v1" in m for m in messages), messages
        ids = [line["id"] for line in logs["lines"]]
        assert ids == sorted(ids) and logs["next_since"] == ids[-1]
        assert {line["attempt"] for line in logs["lines"]} == {1}

        # Paging: one line at a time walks the same lines; past the last, nothing.
        since, paged = 0, []
        while page := client.get(f"/jobs/{job_id}/logs", params={"since": since, "limit": 1}).json()["lines"]:
            paged += page
            since = page[-1]["id"]
        assert [line["id"] for line in paged] == ids
        assert client.get(f"/jobs/{job_id}/logs", params={"since": since}).json() == {
            "job_id": job_id, "lines": [], "next_since": since,
        }  # fmt: skip

        # The CLI prints them, from the server.
        printed = run_jepa(["logs", job_id, "--url", server.base_url], server_env(tmp_path / "cli"))
        assert printed.returncode == 0 and "registered logged v1" in printed.stdout, printed.stderr

        assert client.get("/jobs/" + "0" * 32 + "/logs").status_code == 404
        for since in (-1, 2**70, "x"):
            assert client.get(f"/jobs/{job_id}/logs", params={"since": since}).status_code == 422
        assert client.delete(f"/jobs/{job_id}").status_code == 204
        assert client.get(f"/jobs/{job_id}/logs").status_code == 404
