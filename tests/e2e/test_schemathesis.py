"""Schemathesis against the live /openapi.json: generated requests, including malformed ones,
never get a 5xx, and every response matches the schema documented for its status."""

import subprocess
import sys
from pathlib import Path

from tests.e2e.servers import StartServer


def test_no_5xx_and_responses_match_the_schema(start_server: StartServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    trainer = start_server(data_dir)
    trainer.wait_for("/ready")  # the default model exists, so inference routes reach the model
    trainer.stop()
    # No worker: jobs that schemathesis queues stay queued instead of training for minutes.
    server = start_server(data_dir, JEPA_EMBEDDED_WORKER="0", JEPA_BOOTSTRAP="0")
    server.wait_for("/ready")
    st = Path(sys.executable).parent / "st"
    result = subprocess.run(
        [
            str(st),
            "run",
            f"{server.base_url}/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = result.stdout[result.stdout.find("SUMMARY") :]
    print(summary)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in summary and "failures" not in summary.split("Test cases:")[-1]
