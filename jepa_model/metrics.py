"""Evaluation on held-out sequences."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jepa_model.data import pad_sequences
from jepa_model.jepa import JEPA
from jepa_model.train import sample_windows


@torch.inference_mode()
def prediction_cosine(
    model: JEPA,
    sequences: list[torch.Tensor] | torch.Tensor,
    context_len: int,
    target_len: int,
    seed: int = 0,
) -> float:
    """The seed's own metric: mean cosine between predicted and actual target representations.

    It cannot see collapse (a constant encoder scores 1.0); it is kept for comparison with the seed.
    """
    x, lengths = pad_sequences(list(sequences))
    generator = torch.Generator().manual_seed(seed)
    context, target = sample_windows(x, lengths, context_len, target_len, generator)
    model.eval()
    predicted, target_repr = model(context, target)
    return F.cosine_similarity(predicted, target_repr, dim=-1).mean().item()
