"""The JEPA module: a context encoder, its EMA twin as the target encoder, and a predictor."""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch import nn

from jepa_model.config import ModelConfig
from jepa_model.encoders import build_window_encoder
from jepa_model.memory import AnomalyMemory
from jepa_model.step_encoders import Forecaster, StepEncoder, StepPredictor

EncoderName = Literal["context", "target"]


class Predictor(nn.Module):
    """Maps a context representation to the representation of a window that follows it.

    With `predictor_offsets` > 0 it is also told how many steps after the context the window
    starts, so one predictor serves several future spans (as I-JEPA's mask tokens carry positions).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h = config.predictor_hidden_dim
        self.net = nn.Sequential(
            nn.Linear(config.repr_dim, h),
            nn.ReLU(),
            nn.Linear(h, h),
            nn.ReLU(),
            nn.Linear(h, config.repr_dim),
        )
        self.offset_embedding = nn.Embedding(config.predictor_offsets, h) if config.predictor_offsets else None

    def forward(self, z: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        # z: (B, R); offsets: (B,) steps between the context's end and the window's start -> (B, R)
        if self.offset_embedding is None:
            return self.net(z)
        first, rest = self.net[0], self.net[1:]
        if offsets is None:
            offsets = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        return rest(first(z) + self.offset_embedding(offsets))


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o, 1.0 - momentum)


class JEPA(nn.Module):
    def __init__(
        self,
        input_dim: int = 2,
        hidden_dim: int = 64,
        repr_dim: int = 32,
        num_layers: int = 2,
        predictor_hidden_dim: int = 64,
        **options: Any,
    ) -> None:
        """The seed's signature; `options` are the other ModelConfig fields."""
        super().__init__()
        self.config = ModelConfig(
            input_dim=input_dim,
            hidden_dim=hidden_dim,
            repr_dim=repr_dim,
            num_layers=num_layers,
            predictor_hidden_dim=predictor_hidden_dim,
            **options,
        )
        self.steps_objective = self.config.objective == "steps"
        self.context_encoder: nn.Module
        self.predictor: nn.Module
        if self.steps_objective:
            self.context_encoder, self.predictor = StepEncoder(self.config), StepPredictor(self.config)
            # /predict: from the context window to the pooled representation of the next one
            self.forecaster = Forecaster(self.config)
        else:
            self.context_encoder, self.predictor = build_window_encoder(self.config), Predictor(self.config)
        self.target_encoder = copy.deepcopy(self.context_encoder)
        self.target_encoder.requires_grad_(False)
        # What /score measures new series against; filled once training ends (jepa_model.memory).
        self.memory = (
            AnomalyMemory(self.config.memory_size, self.config.pool_dim, self.config.input_dim)
            if self.config.memory_size
            else None
        )

    @classmethod
    def from_config(cls, config: ModelConfig) -> JEPA:
        return cls(**config.to_dict())

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates; the target encoder only ever moves by EMA."""
        forecaster = [*self.forecaster.parameters()] if self.steps_objective else []
        return [*self.context_encoder.parameters(), *self.predictor.parameters(), *forecaster]

    def update_target(self, momentum: float) -> None:
        ema_update(self.target_encoder, self.context_encoder, momentum)

    def encode(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, encoder: EncoderName = "target"
    ) -> torch.Tensor:
        # x: (B, T, D) -> (B, R)
        module = self.target_encoder if encoder == "target" else self.context_encoder
        return module(x, lengths)

    def encode_steps(self, x: torch.Tensor, encoder: EncoderName = "target") -> torch.Tensor:
        """Per-step representations of full sequences x (B, T, D).

        Step models: (B, T, S), the representation of each step that the objective trains and
        the embedding pools (over steps, then standardised). Window models with a forward LSTM:
        (B, T, R), row t being the embedding of the prefix x[:, : t + 1], so the last row is the
        sequence's embedding. Other window encoders read the whole sequence at every step and have
        none (ValueError).
        """
        module = self.target_encoder if encoder == "target" else self.context_encoder
        if self.steps_objective:
            return module.steps(x)
        if not hasattr(module, "prefixes"):
            raise ValueError(
                f"a {self.config.encoder} encoder has no per-step embeddings: each step reads the whole sequence"
            )
        return module.prefixes(x)

    def predict(
        self, context: torch.Tensor, lengths: torch.Tensor | None = None, offsets: torch.Tensor | None = None
    ) -> torch.Tensor:
        # context: (B, T, D) -> representation (B, R) of the window starting `offsets` (default 0)
        # steps after each context ends (step models: the window right after it)
        if self.steps_objective:
            return self.forecast(context, lengths)
        return self.predictor(self.context_encoder(context, lengths), offsets)

    def forecast(self, context: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Step models: the predicted embedding (B, R) of the window after each context (B, C, D),
        standardised as served embeddings are."""
        features = self.context_encoder.pooled_features(context, lengths)  # (B, C, P)
        thresholds = self.target_encoder.ppv_thresholds()
        return self.target_encoder.standardize_embedding(
            self.forecaster(features, lengths, self.config.pooling, thresholds)
        )

    @torch.no_grad()
    def set_embedding_statistics(self, embeddings: torch.Tensor) -> None:
        """Step models: standardise served embeddings with the statistics of these raw (N, R) ones."""
        mean, std = embeddings.mean(0), embeddings.std(0).clamp_min(1e-6)
        for encoder in (self.context_encoder, self.target_encoder):
            encoder.embedding_mean.copy_(mean)
            encoder.embedding_std.copy_(std)
        if self.target_encoder.tracks_steps:  # the context encoder pools, when served, as the target does
            self.context_encoder.step_mean.copy_(self.target_encoder.step_mean)
            self.context_encoder.step_std.copy_(self.target_encoder.step_std)

    def forward(self, context: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # context: (B, C, D), target: (B, K, D) -> (predicted (B, R), target representation (B, R))
        predicted = self.predict(context)
        with torch.no_grad():
            target_repr = self.target_encoder(target)
        return predicted, target_repr
