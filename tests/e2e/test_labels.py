"""Labelled datasets over HTTP: labels in every upload format, and label metrics on the version."""

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.client import BadRequest, JEPAClient
from tests.e2e.servers import Server, wait_for_job
from tests.factories import TINY_CONFIG, sines_and_squares


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def long_csv(array: np.ndarray, labels: list[str]) -> bytes:
    rows = "".join(
        f"w{i},{t},{labels[i]},{float(array[i, t, 0])!r}\n" for i in range(len(array)) for t in range(array.shape[1])
    )
    return ("sequence_id,t,label,x\n" + rows).encode()


def train(client: httpx.Client, model: str, dataset_id: str) -> dict:
    response = client.post("/train", json={"model": model, "dataset": {"id": dataset_id}, "config": TINY_CONFIG})
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    return job


def test_labels_in_json_csv_and_beside_npy_store_the_same_dataset(client: httpx.Client) -> None:
    waves, labels = sines_and_squares(6, length=5)
    created = [
        client.post("/datasets", json={"name": "waves-json", "sequences": waves.tolist(), "labels": labels}),
        client.post("/datasets", files={"file": ("waves.csv", long_csv(waves, labels))}),
        client.post("/datasets", files={"file": ("waves.npy", npy(waves))}, data={"labels": json.dumps(labels)}),
        client.post(
            "/datasets", files={"file": ("waves.npy", npy(waves)), "labels": ("labels.json", json.dumps(labels))}
        ),
    ]
    assert [r.status_code for r in created] == [201] * 4, [r.text for r in created]
    bodies = [r.json() for r in created]
    assert {(b["num_classes"], tuple(b["classes"])) for b in bodies} == {(2, ("sine", "square"))}
    assert len({b["sha256"] for b in bodies}) == 1  # the same sequences and labels, stored the same way
    assert client.get(f"/datasets/{bodies[0]['id']}").json() == bodies[0]
    listed = {d["id"]: d for d in client.get("/datasets").json()}
    assert listed[bodies[1]["id"]]["classes"] == ["sine", "square"]
    plain = client.post("/datasets", json={"name": "waves-plain", "sequences": waves.tolist()}).json()
    assert (plain["num_classes"], plain["classes"]) == (None, None)


def test_bad_labels_get_a_clear_422(client: httpx.Client) -> None:
    waves, labels = sines_and_squares(4, length=5)
    body = {"name": "bad", "sequences": waves.tolist()}
    mixed_csv = long_csv(waves, labels).replace(b"w0,1,sine", b"w0,1,square")
    cases = [
        (client.post("/datasets", json=body | {"labels": labels[:3]}), "got 3 labels for 4 sequences"),
        (client.post("/datasets", json=body | {"labels": [1, "a", 1, "a"]}), "all strings or all integers"),
        (client.post("/datasets", json=body | {"labels": [[1], 2, 3, 4]}), "labels[0] must be a string or an integer"),
        (client.post("/datasets", json=body | {"labels": [1.5, 2, 3, 4]}), "got a float"),
        (client.post("/datasets", json=body | {"labels": ["x" * 129, "a", "a", "a"]}), "1 to 128 characters"),
        (client.post("/datasets", json=body | {"labels": "sine"}), "labels"),
        (client.post("/datasets", files={"file": ("w.csv", mixed_csv)}), "same label"),
        (
            client.post("/datasets", files={"file": ("w.npy", npy(waves))}, data={"labels": "sine,square"}),
            "must be a JSON array",
        ),
        (
            client.post(
                "/datasets", files={"file": ("w.csv", long_csv(waves, labels))}, data={"labels": json.dumps(labels)}
            ),
            "not both",
        ),
    ]
    many = sines_and_squares(1001, length=2)[0]
    cases.append(
        (
            client.post("/datasets", json={"name": "many", "sequences": many.tolist(), "labels": list(range(1001))}),
            "at most 1000 distinct labels",
        )
    )
    for response, message in cases:
        assert response.status_code == 422, response.text
        assert message in str(response.json()["detail"]), response.text


def test_a_version_trained_on_labelled_data_reports_label_accuracies(client: httpx.Client) -> None:
    waves, labels = sines_and_squares(40, length=20)
    labelled = client.post("/datasets", json={"name": "waves", "sequences": waves.tolist(), "labels": labels})
    plain = client.post("/datasets", files={"file": ("waves.npy", npy(waves))}, data={"name": "waves-unlabelled"})
    assert labelled.status_code == plain.status_code == 201, labelled.text + plain.text

    job = train(client, "label-waves", labelled.json()["id"])
    version = client.get(f"/models/label-waves/versions/{job['version']}").json()
    metrics = version["metrics"]
    assert job["metrics"] == metrics  # the job shows its version's metrics too
    for key in ("label_probe_accuracy", "label_knn_accuracy", "label_majority_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0, metrics
    assert (metrics["label_classes"], metrics["label_held_out"], metrics["held_out_sequences"]) == (2, 10, 10)
    listed = {m["name"]: m for m in client.get("/models").json()}["label-waves"]
    assert "label_probe_accuracy" in listed["versions"][-1]["metrics"]

    job = train(client, "unlabelled-waves", plain.json()["id"])
    metrics = client.get(f"/models/unlabelled-waves/versions/{job['version']}").json()["metrics"]
    assert not [key for key in metrics if key.startswith("label_")], metrics
    assert metrics["held_out_sequences"] == 4


def test_the_client_uploads_labels_with_arrays_ragged_lists_and_files(server: Server, tmp_path: Path) -> None:
    waves, labels = sines_and_squares(6, length=5)
    codes = np.array([0, 1, 0, 1, 0, 1])
    path = tmp_path / "waves.npy"
    path.write_bytes(npy(waves))
    with JEPAClient(server.base_url) as client:
        as_npy = client.upload_dataset(waves, name="client-waves", labels=labels)  # sent as .npy + labels part
        ragged = client.upload_dataset([waves[0], waves[1, :3], *waves[2:]], labels=np.array(labels))  # JSON
        from_file = client.upload_dataset(path, labels=codes)  # numpy integers become JSON integers
        plain = client.upload_dataset(waves)
        assert as_npy["classes"] == ragged["classes"] == ["sine", "square"]
        assert (from_file["classes"], plain["classes"]) == ([0, 1], None)
        with pytest.raises(BadRequest, match="got 5 labels for 6 sequences"):
            client.upload_dataset(waves, labels=labels[:5])


def test_csv_labels_are_kept_as_written_unless_they_are_plain_integers(client: httpx.Client) -> None:
    """Issue 26: "01", "1" and "+1" merged into one class, and an integer past 2^53 could not be sent."""
    array = np.zeros((5, 2, 1), np.float32)
    big = str(2**53 + 1)
    response = client.post("/datasets", files={"file": ("l.csv", long_csv(array, ["01", "1", "+1", big, "1"]))})
    assert response.status_code == 201, response.text
    assert response.json()["classes"] == ["+1", "01", "1", big] and response.json()["num_classes"] == 4
    integers = client.post("/datasets", files={"file": ("i.csv", long_csv(array[:2], ["10", "-2"]))})
    assert integers.status_code == 201 and integers.json()["classes"] == [-2, 10]
