"""The model's forward passes compiled for serving with torch.jit.trace.

A traced forward runs as one call into C++, where an eager one returns to Python between its
dozens of small ops. On a small host that matters twice: it is faster, and a serving thread no
longer has to win the GIL back from the web server's thread after every op. Tracing is checked
against the eager model at build time, on shapes it was not traced with, and refused if they
differ, so a model the tracer cannot capture is served eagerly instead of wrongly.

Each operation comes in two forms: x -> out for batches whose rows all have the same length (no
padding, the common case), and (x, lengths) -> out for right-padded batches of different lengths.
The second is only worth having where padding changes no row's answer; `pads_exactly` checks that
on the eager model. Everything runs on the device the model's parameters are on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from jepa_model.jepa import JEPA

# The operations a server runs: (B, T, D) -> (B, R), each row T steps long or, given lengths
# (B,), right-padded past its own length.
OPERATIONS = ("target", "context", "predict")
Forward = Callable[[torch.Tensor], torch.Tensor]
RaggedForward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _Operation(nn.Module):
    def __init__(self, model: JEPA, operation: str) -> None:
        super().__init__()
        self.model, self.operation = model, operation

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, D); lengths: (B,) or None when every row is T steps long -> (B, R)
        if self.operation == "predict":
            return self.model.predict(x, lengths)
        return self.model.encode(x, lengths, self.operation)  # type: ignore[arg-type]


def eager_forwards(model: JEPA) -> dict[str, Forward]:
    return {op: _Operation(model, op) for op in OPERATIONS}


def eager_ragged_forwards(model: JEPA) -> dict[str, RaggedForward]:
    return {op: _Operation(model, op) for op in OPERATIONS}


def _device(model: JEPA) -> torch.device:
    return next(model.parameters()).device


def _ragged_batch(lengths: list[int], dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sequences of these lengths, right-padded with noise: (B, max, D) and lengths (B,).

    Noise, not zeros, so that a forward pass that reads its padding shows it."""
    return torch.randn(len(lengths), max(lengths), dim, device=device), torch.tensor(lengths, device=device)


def agree(a: torch.Tensor, b: torch.Tensor, atol: float) -> bool:
    """Whether two answers to the same batch agree to `atol` times the larger of 1 and the biggest
    magnitude in `b`. Served embeddings are standardised by each dimension's training std, and a
    dimension with a small one scales float32 rounding (about 1e-7 relative, and batches of other
    shapes round differently) up well past any fixed atol; a forward pass that reads its padding or
    traces wrongly is off by the outputs' own scale."""
    return bool((a - b).abs().max() <= atol * max(1.0, b.abs().max().item()))


def _trace(forward: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        # TracerWarnings flag Python values frozen into the trace; the checks after tracing are
        # what decides. TorchScript is deprecated in favour of torch.export but still supported.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.trace(forward, example, check_trace=False)


@torch.no_grad()
def traced_forwards(model: JEPA, atol: float = 1e-5) -> dict[str, Forward]:
    """Traced versions of every equal-length operation; ValueError if any disagrees with the
    eager model."""
    model = model.eval().requires_grad_(False)
    dim, device = model.config.input_dim, _device(model)
    example = torch.randn(2, 8, dim, device=device)
    checks = [torch.randn(3, 13, dim, device=device), torch.randn(1, 1, dim, device=device)]
    forwards: dict[str, Forward] = {}
    for op, eager in eager_forwards(model).items():
        traced = _trace(eager, example)  # type: ignore[arg-type]
        for x in checks:
            if not agree(traced(x), eager(x), atol):
                raise ValueError(f"the traced {op!r} forward disagrees with the eager model on shape {tuple(x.shape)}")
        forwards[op] = traced
    return forwards


@torch.no_grad()
def traced_ragged_forwards(model: JEPA, atol: float = 1e-5) -> dict[str, RaggedForward]:
    """Traced versions of every operation on padded batches; ValueError if any disagrees with the
    eager model on a padded batch of a shape and lengths it was not traced with."""
    model = model.eval().requires_grad_(False)
    dim, device = model.config.input_dim, _device(model)
    # Every row but the first padded, so the trace keeps whatever masking padding switches on.
    example = _ragged_batch([8, 5, 2], dim, device)
    checks = [_ragged_batch([13, 1, 7, 13], dim, device), _ragged_batch([2, 1], dim, device)]
    forwards: dict[str, RaggedForward] = {}
    for op, eager in eager_ragged_forwards(model).items():
        traced = _trace(eager, example)  # type: ignore[arg-type]
        for x, lengths in checks:
            if not agree(traced(x, lengths), eager(x, lengths), atol):
                raise ValueError(
                    f"the traced {op!r} forward disagrees with the eager model on shape {tuple(x.shape)}"
                    f" with lengths {lengths.tolist()}"
                )
        forwards[op] = traced
    return forwards


@torch.no_grad()
def pads_exactly(model: JEPA, atol: float = 1e-5) -> bool:
    """Whether every operation answers each row of a right-padded batch as it answers that sequence
    alone (to `agree`'s tolerance). Every encoder here masks or packs its padding away; a model that does not
    must be batched by exact length instead."""
    model = model.eval().requires_grad_(False)
    x, lengths = _ragged_batch([9, 1, 4, 6], model.config.input_dim, _device(model))
    for op in OPERATIONS:
        forward = _Operation(model, op)
        padded = forward(x, lengths)  # (B, R)
        alone = torch.cat([forward(x[i : i + 1, :n]) for i, n in enumerate(lengths.tolist())])  # (B, R)
        if not agree(padded, alone, atol):
            return False
    return True
