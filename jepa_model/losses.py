"""Training objectives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jepa_model.config import TrainConfig


def negative_cosine(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The seed's loss: minus the mean cosine between (B, R) predictions and targets."""
    return -F.cosine_similarity(predicted, target, dim=-1).mean()


def prediction_loss(predicted: torch.Tensor, target: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    # predicted, target: (N, R)
    if config.target_norm == "layer":
        target = F.layer_norm(target, target.shape[-1:])  # I-JEPA: regress layer-normed targets
    elif config.target_norm == "batch":
        target = (target - target.mean(0)) / (target.std(0) + 1e-4)
    if config.loss == "cosine":
        return negative_cosine(predicted, target)
    if config.loss == "infonce":
        return info_nce(predicted, target, config.temperature)
    if config.loss == "smooth_l1":
        return F.smooth_l1_loss(predicted, target)
    if config.loss == "l1":
        return F.l1_loss(predicted, target)
    return F.mse_loss(predicted, target)


def variance_covariance(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's anti-collapse terms for (B, R) representations.

    variance: hinge pushing every dimension's std up to 1; covariance: squared off-diagonal
    covariances, pushing dimensions to carry different information.
    """
    z = z - z.mean(0)
    std = torch.sqrt(z.var(0) + 1e-4)
    variance = F.relu(1.0 - std).mean()
    cov = (z.T @ z) / max(z.shape[0] - 1, 1)  # (R, R)
    off_diagonal = cov - torch.diag(torch.diag(cov))
    return variance, off_diagonal.pow(2).sum() / z.shape[1]


def info_nce(predicted: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Contrastive prediction (CPC): each prediction must pick its own target among the batch's.

    It scores exactly what retrieval measures, so the representation cannot drop what tells one
    window from another, which a regression loss lets it do.
    """
    logits = F.normalize(predicted, dim=-1) @ F.normalize(target, dim=-1).T / temperature  # (N, N)
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))
