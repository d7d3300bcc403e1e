"""The model's forward passes compiled for serving with torch.jit.trace.

A traced forward runs as one call into C++, where an eager one returns to Python between its
dozens of small ops. On a small host that matters twice: it is faster, and a serving thread no
longer has to win the GIL back from the web server's thread after every op. Tracing is checked
against the eager model at build time, on shapes it was not traced with, and refused if they
differ, so a model the tracer cannot capture is served eagerly instead of wrongly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from jepa_model.jepa import JEPA

# The operations a server runs, all on equal-length batches (B, T, D) -> (B, R).
OPERATIONS = ("target", "context", "predict")
Forward = Callable[[torch.Tensor], torch.Tensor]


class _Operation(nn.Module):
    def __init__(self, model: JEPA, operation: str) -> None:
        super().__init__()
        self.model, self.operation = model, operation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D) -> (B, R)
        if self.operation == "predict":
            return self.model.predict(x)
        return self.model.encode(x, None, self.operation)  # type: ignore[arg-type]


def eager_forwards(model: JEPA) -> dict[str, Forward]:
    return {op: _Operation(model, op) for op in OPERATIONS}


@torch.no_grad()
def traced_forwards(model: JEPA, atol: float = 1e-5) -> dict[str, Forward]:
    """Traced versions of every operation; ValueError if any disagrees with the eager model."""
    model = model.eval().requires_grad_(False)
    dim = model.config.input_dim
    example, checks = torch.randn(2, 8, dim), [torch.randn(3, 13, dim), torch.randn(1, 1, dim)]
    forwards: dict[str, Forward] = {}
    for op, eager in eager_forwards(model).items():
        with warnings.catch_warnings():
            # TracerWarnings flag Python values frozen into the trace; the check below is what
            # decides. TorchScript is deprecated in favour of torch.export but still supported.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(eager, example, check_trace=False)
        for x in checks:
            if not torch.allclose(traced(x), eager(x), atol=atol):
                raise ValueError(f"the traced {op!r} forward disagrees with the eager model on shape {tuple(x.shape)}")
        forwards[op] = traced
    return forwards
