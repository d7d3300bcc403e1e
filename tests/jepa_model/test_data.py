import math

import numpy as np
import pytest
import torch

from jepa_model import ToySequenceDataset, pad_sequences


def clean(pattern: str, n: int = 50, seq_len: int = 20, seed: int = 3) -> ToySequenceDataset:
    return ToySequenceDataset(n, seq_len, pattern, noise=0.0, seed=seed)


def test_items_are_float32_sequences_of_two_features() -> None:
    ds = ToySequenceDataset(num_samples=10, seq_len=20, pattern_type="circle", seed=0)
    assert len(ds) == 10
    assert ds[0].shape == (20, 2) and ds[0].dtype == torch.float32


def test_seeded_datasets_are_reproducible_and_seeds_differ() -> None:
    a = ToySequenceDataset(32, 20, "mixed", seed=7)
    b = ToySequenceDataset(32, 20, "mixed", seed=7)
    c = ToySequenceDataset(32, 20, "mixed", seed=8)
    assert torch.equal(a.data, b.data) and list(a.kinds) == list(b.kinds)
    assert not torch.equal(a.data, c.data)


def test_circles_follow_the_recipe() -> None:
    ds = clean("circle")
    t = np.linspace(0, 2 * math.pi, 20)
    for points, (radius, cx, cy, *_rest) in zip(ds.data.numpy(), ds.params, strict=True):
        assert 0.5 <= radius <= 2.0 and -1 <= cx <= 1 and -1 <= cy <= 1
        expected = np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=-1)
        np.testing.assert_allclose(points, expected, atol=1e-5)


def test_lines_follow_the_recipe() -> None:
    ds = clean("linear")
    t = np.arange(20)[:, None]
    for points, params in zip(ds.data.numpy(), ds.params, strict=True):
        start, velocity = params[3:5], params[5:7]
        assert np.all(np.abs(start) <= 2) and np.all(np.abs(velocity) <= 1)
        np.testing.assert_allclose(points, start + velocity * t, atol=1e-5)


def test_noise_has_the_requested_std() -> None:
    noisy = ToySequenceDataset(400, 20, "linear", noise=0.1, seed=1)
    exact = np.array([p[3:5] + p[5:7] * np.arange(20)[:, None] for p in noisy.params])
    assert abs(float((noisy.data.numpy() - exact).std()) - 0.1) < 0.005


def test_mixed_is_half_circles_half_lines_shuffled() -> None:
    ds = ToySequenceDataset(101, 20, "mixed", seed=0)
    assert (ds.kinds == "circle").sum() == 50 and (ds.kinds == "linear").sum() == 51
    assert len(set(ds.kinds[:20])) == 2  # shuffled, not all circles first


def test_unknown_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="pattern_type"):
        ToySequenceDataset(10, 20, "spiral")


def test_pad_sequences_returns_lengths() -> None:
    padded, lengths = pad_sequences([np.ones((3, 2)), np.ones((5, 2))])
    assert padded.shape == (2, 5, 2)
    assert lengths.tolist() == [3, 5]
