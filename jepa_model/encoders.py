"""Sequence encoders: a ragged batch of (T_i, D) sequences in, one vector per sequence out."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from jepa_model.config import ModelConfig


class LSTMEncoder(nn.Module):
    """The seed's encoder: a stacked LSTM whose last valid step goes through a 2-layer MLP head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(config.input_dim, config.hidden_dim, num_layers=config.num_layers, batch_first=True)
        self.pooling = config.pooling
        pooled_dim = config.hidden_dim * (2 if config.pooling == "last_mean" else 1)
        self.head = nn.Sequential(
            nn.Linear(pooled_dim, config.hidden_dim),
            nn.ReLU(),
            nn.Linear(config.hidden_dim, config.repr_dim),
        )
        self.output_norm: nn.Module = {
            "none": nn.Identity(),
            "layer": nn.LayerNorm(config.repr_dim, elementwise_affine=False),
            "batch": nn.BatchNorm1d(config.repr_dim, affine=False),
        }[config.output_norm]
        # Buffers, so the statistics travel in the checkpoint with the weights.
        mean = config.input_mean or (0.0,) * config.input_dim
        std = config.input_std or (1.0,) * config.input_dim
        self.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32), persistent=True)
        self.register_buffer("input_std", torch.tensor(std, dtype=torch.float32), persistent=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, D); lengths: (B,) valid steps per row, or None when every row is full.
        x = (x - self.input_mean) / self.input_std
        if lengths is None:
            out, (h_n, _) = self.lstm(x)  # out: (B, T, H)
            mean = out.mean(1) if self.pooling == "last_mean" else None
        else:
            # Packing stops each row at its own length, so padding never enters the recurrent state.
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            packed_out, (h_n, _) = self.lstm(packed)
            mean = None
            if self.pooling == "last_mean":
                out, _ = pad_packed_sequence(packed_out, batch_first=True)  # (B, T, H), zeros past each length
                mean = out.sum(1) / lengths.to(out.dtype)[:, None]
        pooled = h_n[-1] if mean is None else torch.cat([h_n[-1], mean], dim=-1)  # h_n[-1]: (B, H) last valid step
        return self.output_norm(self.head(pooled))  # (B, R)
