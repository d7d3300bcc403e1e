"""Versions trained by older code (before per-step models, before PPV pooling) still load and serve the
same outputs."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from jepa_model import load_checkpoint
from jepa_model.serving import traced_forwards

FIXTURES = Path(__file__).parent.parent / "fixtures" / "checkpoints_0_1"


@pytest.mark.parametrize("preset", ["seed", "default"])
def test_a_0_1_checkpoint_serves_what_it_served_then(preset: str) -> None:
    directory = FIXTURES / preset
    loaded = load_checkpoint(directory, expected_sha256=(directory / "sha256").read_text().strip())
    assert loaded.model_config.objective == "window"  # the field did not exist then: old behaviour
    expected = load_file(str(directory / "expected.safetensors"))
    model, x = loaded.model, expected["x"]
    with torch.no_grad():
        assert torch.allclose(model.encode(x, encoder="target"), expected["target"], atol=1e-6)
        assert torch.allclose(model.encode(x, encoder="context"), expected["context"], atol=1e-6)
        assert torch.allclose(model.predict(x), expected["predict"], atol=1e-6)
        ragged = model.encode(expected["ragged"], expected["lengths"], encoder="target")
        assert torch.allclose(ragged, expected["target_ragged"], atol=1e-6)
        # The server runs traced forwards: they must agree too.
        forwards = traced_forwards(model)
        assert torch.allclose(forwards["target"](x), expected["target"], atol=1e-5)
        assert torch.allclose(forwards["predict"](x), expected["predict"], atol=1e-5)


def test_a_series_checkpoint_from_before_ppv_pooling_serves_what_it_served_then() -> None:
    directory = FIXTURES.parent / "checkpoints_series_max_mean"
    loaded = load_checkpoint(directory, expected_sha256=(directory / "sha256").read_text().strip())
    assert loaded.model_config.pooling == "max_mean" and loaded.model_config.repr_dim == 16
    assert not hasattr(loaded.model.target_encoder, "step_mean")  # nothing new to fill in, nothing guessed
    expected = load_file(str(directory / "expected.safetensors"))
    model, x = loaded.model, expected["x"]
    with torch.no_grad():
        assert torch.allclose(model.encode(x, encoder="target"), expected["target"], atol=1e-6)
        assert torch.allclose(model.encode(x, encoder="context"), expected["context"], atol=1e-6)
        assert torch.allclose(model.predict(x), expected["predict"], atol=1e-6)
        assert torch.allclose(model.encode_steps(x), expected["steps"], atol=1e-6)
        ragged = model.encode(expected["ragged"], expected["lengths"], encoder="target")
        assert torch.allclose(ragged, expected["target_ragged"], atol=1e-6)
        forwards = traced_forwards(model)
        assert torch.allclose(forwards["target"](x), expected["target"], atol=1e-5)
        assert torch.allclose(forwards["predict"](x), expected["predict"], atol=1e-5)
