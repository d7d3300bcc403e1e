import pytest
import torch
from torch.utils.data import DataLoader

from jepa_model import JEPA, ModelConfig, ToySequenceDataset, TrainConfig, fit, train_jepa
from jepa_model.train import sample_windows


def test_the_seeds_quick_start_runs_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    dataset = ToySequenceDataset(num_samples=64, seq_len=20, pattern_type="circle")
    dataloader = DataLoader(dataset, batch_size=32, shuffle=True)
    model = JEPA(input_dim=2, hidden_dim=64, repr_dim=32)
    losses = train_jepa(model, dataloader, num_epochs=11, lr=1e-3)
    assert len(losses) == 11 and all(-1.0 <= loss <= 1.0 for loss in losses)
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"Epoch 0, Loss: {losses[0]:.4f}", f"Epoch 10, Loss: {losses[10]:.4f}"]


def test_the_seeds_advanced_options_run_unchanged() -> None:
    train_loader = DataLoader(ToySequenceDataset(32, 20, "linear"), batch_size=32)
    model = JEPA(input_dim=2, hidden_dim=64, repr_dim=32)
    losses = train_jepa(
        model=model, dataloader=train_loader, num_epochs=2, lr=1e-3, context_len=8, target_len=4, momentum=0.99
    )
    assert len(losses) == 2


def test_training_lowers_the_loss() -> None:
    dataset = ToySequenceDataset(128, 20, "mixed", seed=0)
    result = fit(dataset, ModelConfig(hidden_dim=32, repr_dim=16), TrainConfig(epochs=6, seed=0))
    assert result.losses[-1] < result.losses[0]


def test_seeded_fits_are_reproducible() -> None:
    dataset = ToySequenceDataset(64, 12, "mixed", seed=0)
    cfg = TrainConfig(epochs=2, context_len=4, target_len=2, seed=5)
    a = fit(dataset, ModelConfig(hidden_dim=8, repr_dim=4), cfg)
    b = fit(dataset, ModelConfig(hidden_dim=8, repr_dim=4), cfg)
    assert a.losses == b.losses


def test_the_target_window_directly_follows_the_context() -> None:
    x = torch.arange(30, dtype=torch.float32).reshape(1, 30, 1).repeat(64, 1, 1)  # value == time step
    lengths = torch.randint(9, 31, (64,))
    context, target = sample_windows(x, lengths, 6, 3, torch.Generator().manual_seed(0))
    starts = context[:, 0, 0]
    assert torch.equal(context[:, :, 0], starts[:, None] + torch.arange(6))
    assert torch.equal(target[:, :, 0], starts[:, None] + torch.arange(6, 9))
    assert bool((starts + 9 <= lengths).all()), "a window ran into padding"
    assert set(starts.long().tolist()) > {0}  # starts vary


def test_sequences_shorter_than_a_window_are_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        sample_windows(torch.zeros(2, 5, 2), torch.tensor([5, 3]), 2, 2)
