"""Versions trained by older code (before per-step models, PPV pooling, pooled blocks) still load and serve the
same outputs."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from jepa_model import LoadedCheckpoint, load_checkpoint
from jepa_model.serving import traced_forwards

FIXTURES = Path(__file__).parent.parent / "fixtures"


def load_fixture(directory: Path) -> tuple[LoadedCheckpoint, dict[str, torch.Tensor]]:
    """The checkpoint in `directory`, checked against its recorded sha256, and what it returned then."""
    loaded = load_checkpoint(directory, expected_sha256=(directory / "sha256").read_text().strip())
    return loaded, load_file(str(directory / "expected.safetensors"))


@torch.no_grad()
def assert_serves_as_then(loaded: LoadedCheckpoint, expected: dict[str, torch.Tensor]) -> None:
    model, x = loaded.model, expected["x"]
    assert torch.allclose(model.encode(x, encoder="target"), expected["target"], atol=1e-6)
    assert torch.allclose(model.encode(x, encoder="context"), expected["context"], atol=1e-6)
    assert torch.allclose(model.predict(x), expected["predict"], atol=1e-6)
    ragged = model.encode(expected["ragged"], expected["lengths"], encoder="target")
    assert torch.allclose(ragged, expected["target_ragged"], atol=1e-6)
    # The server runs traced forwards: they must agree too.
    forwards = traced_forwards(model)
    assert torch.allclose(forwards["target"](x), expected["target"], atol=1e-5)
    assert torch.allclose(forwards["predict"](x), expected["predict"], atol=1e-5)


@pytest.mark.parametrize("preset", ["seed", "default"])
def test_a_0_1_checkpoint_serves_what_it_served_then(preset: str) -> None:
    loaded, expected = load_fixture(FIXTURES / "checkpoints_0_1" / preset)
    assert loaded.model_config.objective == "window"  # the field did not exist then: old behaviour
    assert_serves_as_then(loaded, expected)


def test_a_series_checkpoint_from_before_ppv_pooling_serves_what_it_served_then() -> None:
    loaded, expected = load_fixture(FIXTURES / "checkpoints_series_max_mean")
    assert loaded.model_config.pooling == "max_mean" and loaded.model_config.repr_dim == 16
    assert not hasattr(loaded.model.target_encoder, "step_mean")  # nothing new to fill in, nothing guessed
    assert_serves_as_then(loaded, expected)
    with torch.no_grad():
        assert torch.allclose(loaded.model.encode_steps(expected["x"]), expected["steps"], atol=1e-6)


def test_a_series_checkpoint_from_before_pooled_blocks_serves_what_it_served_then() -> None:
    loaded, expected = load_fixture(FIXTURES / "checkpoints_series_ppv_lspv")
    config = loaded.model_config
    assert (config.pooling, config.pool_blocks, config.step_dim) == ("max_mean_ppv_lspv", 0, 8)
    assert_serves_as_then(loaded, expected)
    with torch.no_grad():
        assert torch.allclose(loaded.model.encode_steps(expected["x"]), expected["steps"], atol=1e-6)
