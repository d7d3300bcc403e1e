"""Sequence encoders: a ragged batch of (T_i, D) sequences in, one vector per sequence out."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from jepa_model.config import POOLED_PARTS, ModelConfig


def step_features(x: torch.Tensor, deltas: bool) -> torch.Tensor:
    """(B, T, D) positions -> (B, T, D) or, with deltas, (B, T, 2D): [x_t, x_t - x_(t-1)], x_(-1) = x_0."""
    if not deltas:
        return x
    return torch.cat([x, torch.diff(x, dim=1, prepend=x[:, :1])], dim=-1)


def register_input_statistics(module: nn.Module, config: ModelConfig) -> None:
    """Per-feature mean and std as buffers, so they travel in the checkpoint with the weights."""
    module.input_deltas = config.input_deltas
    mean = config.input_mean or (0.0,) * config.feature_dim
    std = config.input_std or (1.0,) * config.feature_dim
    module.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32), persistent=True)
    module.register_buffer("input_std", torch.tensor(std, dtype=torch.float32), persistent=True)


def standardize(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # x: (B, T, D) -> (B, T, F) step features standardised with `module`'s registered statistics
    return (step_features(x, module.input_deltas) - module.input_mean) / module.input_std


class SequenceEncoder(nn.Module):
    """What every encoder shares: input standardisation, pooling, the MLP head, output normalisation.

    Subclasses turn standardised input into per-step features and pick the last valid step.
    """

    def __init__(self, config: ModelConfig, feature_dim: int) -> None:
        super().__init__()
        self.pooling = config.pooling
        pooled_dim = feature_dim * POOLED_PARTS[config.pooling]
        self.head = nn.Sequential(
            nn.Linear(pooled_dim, config.hidden_dim),
            nn.ReLU(),
            nn.Linear(config.hidden_dim, config.repr_dim),
        )
        self.skip = nn.Linear(pooled_dim, config.repr_dim, bias=False) if config.head_skip else None
        self.output_norm: nn.Module = {
            "none": nn.Identity(),
            "layer": nn.LayerNorm(config.repr_dim, elementwise_affine=False),
            "batch": nn.BatchNorm1d(config.repr_dim, affine=False),
        }[config.output_norm]
        register_input_statistics(self, config)

    def pool(self, last: torch.Tensor, steps: torch.Tensor | None, lengths: torch.Tensor | None) -> torch.Tensor:
        # last: (B, H) each row's last valid step; steps: (B, T, H) every step (None for "last"
        # pooling), read only where valid; lengths: (B,) or None when all rows are full -> (B, R)
        parts = [last]
        if self.pooling == "first_last_mean":
            assert steps is not None
            parts.append(steps[:, 0])
        if self.pooling != "last":
            assert steps is not None
            if lengths is None:
                mean = steps.mean(1)
            else:
                positions = torch.arange(steps.shape[1], device=steps.device)
                valid = (positions[None, :] < lengths[:, None]).to(steps.dtype)[:, :, None]  # (B, T, 1)
                mean = (steps * valid).sum(1) / lengths.to(steps.dtype)[:, None]
            parts.append(mean)
        pooled = torch.cat(parts, dim=-1)  # (B, P)
        out = self.head(pooled) if self.skip is None else self.head(pooled) + self.skip(pooled)  # (B, R)
        return self.output_norm(out)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return standardize(self, x)


class LSTMEncoder(SequenceEncoder):
    """The seed's encoder: a stacked LSTM whose last valid step goes through a 2-layer MLP head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, config.hidden_dim * (2 if config.bidirectional else 1))
        self.lstm = nn.LSTM(
            config.feature_dim,
            config.hidden_dim,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=config.bidirectional,
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, D); lengths: (B,) valid steps per row, or None when every row is full.
        x = self.standardize(x)
        if not self.lstm.bidirectional:
            # A forward LSTM is causal: a row's output at its last valid step has read nothing of
            # the right padding after it, so the padded batch runs as it is. Packing would be
            # exact too, but on CPU torch runs a packed batch of unequal lengths op by op, 4-5x
            # slower than the fused padded pass (bench.serve, mixed lengths).
            steps, (h_n, _) = self.lstm(x)  # steps: (B, T, H)
            last = h_n[-1] if lengths is None else steps[torch.arange(x.shape[0], device=x.device), lengths - 1]
            return self.pool(last, steps if self.pooling != "last" else None, lengths)
        if lengths is None:
            steps, (h_n, _) = self.lstm(x)  # steps: (B, T, 2H)
        else:
            # The backward direction reads a row from its end: packing starts it at the row's own
            # last step, so padding never enters its state.
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            packed_steps, (h_n, _) = self.lstm(packed)
            steps = pad_packed_sequence(packed_steps, batch_first=True)[0] if self.pooling != "last" else None
        # h_n[-2]: (B, H), the top layer's forward pass at each row's last valid step; h_n[-1] its
        # backward pass at the first step.
        last = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        return self.pool(last, steps, lengths)

    def prefixes(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, R): row t is the embedding of the prefix x[:, : t + 1], exactly
        what `forward` gives that prefix (a forward LSTM is causal), all T of them in one pass."""
        if self.lstm.bidirectional:
            raise ValueError("a bidirectional encoder has no per-step embeddings: each step reads the whole sequence")
        steps, _ = self.lstm(self.standardize(x))  # (B, T, H)
        B, T, H = steps.shape
        parts = [steps]  # each prefix's last step
        if self.pooling == "first_last_mean":
            parts.append(steps[:, :1].expand(B, T, H))
        if self.pooling != "last":
            counts = torch.arange(1, T + 1, device=x.device, dtype=steps.dtype)[None, :, None]
            parts.append(steps.cumsum(1) / counts)  # each prefix's mean
        pooled = torch.cat(parts, dim=-1)  # (B, T, P)
        out = self.head(pooled) if self.skip is None else self.head(pooled) + self.skip(pooled)  # (B, T, R)
        return self.output_norm(out.reshape(B * T, -1)).reshape(B, T, -1)  # BatchNorm1d wants (N, R)


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) fixed position codes, as in "Attention is all you need"; no length cap."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10_000.0) / dim))
    codes = torch.zeros(length, dim)
    codes[:, 0::2] = torch.sin(position * freq)
    codes[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return codes


class TransformerEncoder(SequenceEncoder):
    """Self-attention over the steps; padding is masked out of attention and pooling."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, config.hidden_dim)
        h = config.hidden_dim
        self.embed = nn.Linear(config.feature_dim, h)
        layer = nn.TransformerEncoderLayer(
            h, config.num_heads, dim_feedforward=2 * h, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(h)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape  # x: (B, T, D)
        h = self.embed(self.standardize(x)) + sinusoidal_positions(T, self.embed.out_features).to(x.device)  # (B, T, H)
        lengths = torch.full((B,), T, dtype=torch.long, device=x.device) if lengths is None else lengths
        padding = torch.arange(T, device=x.device)[None, :] >= lengths[:, None]  # (B, T), True where padded
        h = self.norm(self.blocks(h, src_key_padding_mask=padding if bool(padding.any()) else None))
        last = h[torch.arange(B, device=x.device), lengths - 1]  # (B, H)
        return self.pool(last, h, lengths)


def build_window_encoder(config: ModelConfig) -> SequenceEncoder:
    return TransformerEncoder(config) if config.encoder == "transformer" else LSTMEncoder(config)
