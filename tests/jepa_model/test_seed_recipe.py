"""The `seed` preset's training step is the seed's recipe, checked against a literal re-implementation."""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from jepa_model import JEPA, PRESETS
from jepa_model.train import sample_windows, train_step


class SeedEncoder(nn.Module):
    """RECIPE.md: 2-layer LSTM (hidden 64, batch_first); the last step's output -> Linear-ReLU-Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(2, 64, num_layers=2, batch_first=True)
        self.head = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(x)
        return self.head(output[:, -1])


def test_seed_preset_steps_exactly_like_the_seed() -> None:
    torch.manual_seed(0)
    preset = PRESETS["seed"]
    ours = JEPA.from_config(preset.model)
    # The reference: same weights, written the way RECIPE.md describes the seed.
    context_encoder = SeedEncoder()
    context_encoder.load_state_dict({k: v for k, v in ours.context_encoder.state_dict().items() if "input_" not in k})
    target_encoder = copy.deepcopy(context_encoder).requires_grad_(False)
    predictor = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
    predictor.load_state_dict(ours.predictor.net.state_dict())
    reference_opt = torch.optim.Adam([*context_encoder.parameters(), *predictor.parameters()], lr=1e-3)
    our_opt = torch.optim.Adam(ours.trainable_parameters(), lr=preset.train.lr)

    for step in range(3):
        batch = torch.randn(32, 20, 2)
        # Both draw their windows from generators in the same state.
        ctx, tgt = sample_windows(batch, None, 8, 4, torch.Generator().manual_seed(step))
        train_step(ours, our_opt, batch, preset.train, generator=torch.Generator().manual_seed(step))

        loss = -F.cosine_similarity(predictor(context_encoder(ctx)), target_encoder(tgt).detach(), dim=-1).mean()
        reference_opt.zero_grad()
        loss.backward()
        reference_opt.step()
        with torch.no_grad():
            for t, c in zip(target_encoder.parameters(), context_encoder.parameters(), strict=True):
                t.copy_(0.99 * t + 0.01 * c)

    for name, value in context_encoder.state_dict().items():
        torch.testing.assert_close(ours.context_encoder.state_dict()[name], value, msg=name)
    for name, value in target_encoder.state_dict().items():
        torch.testing.assert_close(ours.target_encoder.state_dict()[name], value, msg=name)
