"""Training objectives."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def negative_cosine(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The seed's loss: minus the mean cosine between (B, R) predictions and targets."""
    return -F.cosine_similarity(predicted, target, dim=-1).mean()
