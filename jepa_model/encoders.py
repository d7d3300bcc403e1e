"""Sequence encoders: a ragged batch of (T_i, D) sequences in, one vector per sequence out."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from jepa_model.config import ModelConfig


class LSTMEncoder(nn.Module):
    """The seed's encoder: a stacked LSTM whose last valid step goes through a 2-layer MLP head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(config.input_dim, config.hidden_dim, num_layers=config.num_layers, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(config.hidden_dim, config.hidden_dim),
            nn.ReLU(),
            nn.Linear(config.hidden_dim, config.repr_dim),
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, D); lengths: (B,) valid steps per row, or None when every row is full.
        if lengths is None:
            _, (h_n, _) = self.lstm(x)
        else:
            # Packing stops each row at its own length, so padding never enters the recurrent state.
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (h_n, _) = self.lstm(packed)
        last = h_n[-1]  # (B, H): top layer at each row's last valid step, in input order
        return self.head(last)  # (B, R)
