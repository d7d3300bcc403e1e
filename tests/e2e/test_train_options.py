"""Every training option can be set through POST /train and `jepa train --set`, and the job shows
what it will train."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.e2e.servers import StartServer, run_jepa
from training.execution.spec import TrainOptions

# One value for each option, none of them the trajectory preset's, and all valid together.
EVERY_OPTION: dict[str, Any] = {
    # ModelConfig
    "objective": "steps",
    "encoder": "lstm",
    "hidden_dim": 24,
    "repr_dim": 20,
    "num_layers": 3,
    "predictor_hidden_dim": 24,
    "num_heads": 2,
    "kernel_size": 5,
    "bidirectional": True,
    "predictor_offsets": 3,
    "output_norm": "layer",
    "pooling": "max_mean",
    "head_skip": False,
    "input_deltas": False,
    "series_norm": True,
    "pool_blocks": 0,  # the one value an LSTM encoder takes: it has no blocks to pool
    "memory_size": 64,
    # TrainConfig
    "epochs": 3,
    "batch_size": 16,
    "lr": 0.002,
    "context_len": 6,
    "target_len": 3,
    "momentum": 0.95,
    "seed": 7,
    "optimizer": "adam",
    "weight_decay": 0.01,
    "lr_schedule": "constant",
    "momentum_end": 0.999,
    "loss": "smooth_l1",
    "temperature": 0.2,
    "target_norm": "layer",
    "num_targets": 2,
    "num_contexts": 2,
    "max_offset": 2,
    "min_context_len": 4,
    "var_weight": 0.1,
    "cov_weight": 0.02,
    "normalize_inputs": False,
    "steps": 5,
    "max_crop_len": 128,
    "mask_ratio": 0.3,
    "mask_block_len": 2,
    "workers": 2,
}
# These servers' workers train on their own host (JEPA_EXECUTOR=local), which refuses workers above 1
# (tests/e2e/test_train_validation.py); tests/e2e/test_ray.py trains workers=2 on Ray.
ON_LOCAL = {**EVERY_OPTION, "workers": 1}


def test_the_table_names_every_option() -> None:
    assert set(EVERY_OPTION) == set(TrainOptions.model_fields) - {"preset"}


def test_every_option_set_through_the_api_is_what_the_job_will_train(start_server: StartServer) -> None:
    server = start_server(JEPA_BOOTSTRAP="0", JEPA_EMBEDDED_WORKER="0")
    with server.client() as client:
        body = {"model": "every", "dataset": {"num_samples": 64, "seq_len": 20}, "config": ON_LOCAL}
        accepted = client.post("/train", json=body)
        assert accepted.status_code == 202, accepted.text
        resolved = client.get(f"/jobs/{accepted.json()['job_id']}").json()["spec"]["resolved"]
        configs = {**resolved["model"], **resolved["train"]}
        assert {name: configs[name] for name in ON_LOCAL} == ON_LOCAL
        assert configs["input_dim"] == 2  # set by the server, from the data
        refused = client.post("/train", json={**body, "config": {"input_dim": 3}})
        assert refused.status_code == 422
        sent_resolved = client.post("/train", json={**body, "resolved": resolved})
        assert sent_resolved.status_code == 422 and "set by the server" in sent_resolved.text


def test_every_option_set_through_the_cli_is_what_the_job_will_train(start_server: StartServer) -> None:
    server = start_server(JEPA_BOOTSTRAP="0", JEPA_EMBEDDED_WORKER="0")
    sets = [arg for name, value in ON_LOCAL.items() for arg in ("--set", f"{name}={json.dumps(value)}")]
    command = ["train", "--model", "every-cli", "--num-samples", "64"]
    command += ["--seq-len", "20", *sets, "--no-wait", "--url", server.base_url]
    done = run_jepa(command, server.env)
    assert done.returncode == 0, done.stderr
    job_id = re.search(r"job ([0-9a-f]{32}) queued", done.stdout + done.stderr)
    assert job_id is not None, done.stdout
    with server.client() as client:
        resolved = client.get(f"/jobs/{job_id.group(1)}").json()["spec"]["resolved"]
    configs = {**resolved["model"], **resolved["train"]}
    assert {name: configs[name] for name in ON_LOCAL} == ON_LOCAL
