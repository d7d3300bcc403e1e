"""Surprise: how far a series' actual future lands from the model's prediction of it, step by step.

A window starting at s pairs the context x[s : s+C] with the target x[s+C : s+C+L] that follows
it. Its surprise is 1 - cos(predicted, actual), in [0, 2]: `predicted` is the model's prediction
of the target's representation from the context (what /predict returns), `actual` the target
encoder's representation of the target (what /encode returns). A step's surprise is the largest
among the windows whose target covers it, so an anomaly scores in every window that sees it; the
first C steps, before any target, have none (the warm-up).

Scores are comparable across series through a calibration: the percentiles of window surprise on
the training distribution's held-out data, recorded with each version when it is trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from jepa_model.jepa import JEPA
from jepa_model.vectors import row_cosines

# The calibration: surprise at percentiles 0, 1, ..., 100 of held-out windows ...
CALIBRATION_POINTS = 101
# ... of at most this many held-out sequences, their windows a target's length apart: enough for
# stable percentiles, and cheap next to the training.
CALIBRATION_SEQUENCES = 256
# Segments: the most surprising TOP_SEGMENTS runs of steps at or above this percentile.
SEGMENT_PERCENTILE = 99.0
TOP_SEGMENTS = 3


def window_starts(length: int, context_len: int, target_len: int, stride: int) -> np.ndarray:
    """Every `stride`-th start of a (context, target) window in a series of `length` steps, and
    the last start there is, so that the series' tail is scored too. Empty when none fits."""
    last = length - context_len - target_len
    if last < 0:
        return np.empty(0, dtype=np.int64)
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    return starts if starts[-1] == last else np.append(starts, last)


def windows(series: np.ndarray, starts: np.ndarray, context_len: int, target_len: int) -> tuple[np.ndarray, np.ndarray]:
    """series (T, D), starts (W,) -> contexts (W, C, D) and the targets (W, L, D) right after them."""
    idx = starts[:, None] + np.arange(context_len + target_len)  # (W, C + L)
    spans = series[idx]  # (W, C + L, D)
    return spans[:, :context_len], spans[:, context_len:]


def surprise(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """(W, R) and (W, R) -> 1 - cosine (W,), in [0, 2]."""
    return 1.0 - row_cosines(predicted, actual)


def step_scores(scores: np.ndarray, starts: np.ndarray, length: int, context_len: int, target_len: int) -> np.ndarray:
    """Window scores (W,) at `starts` -> each step's score (T,): the largest among the windows
    whose target covers it; NaN where none does (the first `context_len` steps)."""
    out = np.full(length, -np.inf)
    for offset in range(target_len):  # L passes of W each, not W passes of L
        np.maximum.at(out, starts + context_len + offset, scores)
    out[np.isneginf(out)] = np.nan
    return out


@dataclass(frozen=True)
class ForecastPlan:
    """The forecast scoring of some series, in two halves around the forward passes: the windows
    to embed (`windows`), then each step's score from their embeddings (`step_scores`). The
    service embeds them through its batched passes, `series_surprise` eagerly: the same scores."""

    lengths: list[int]  # each series' steps
    starts: list[np.ndarray]  # each series' window starts (W_i,); empty where none fits
    context_len: int
    target_len: int

    @classmethod
    def of(cls, lengths: list[int], context_len: int, target_len: int, stride: int) -> ForecastPlan:
        starts = [window_starts(n, context_len, target_len, stride) for n in lengths]
        return cls(list(lengths), starts, context_len, target_len)

    @property
    def count(self) -> int:
        """Windows over all the series."""
        return sum(len(s) for s in self.starts)

    def windows(self, series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Every series' windows in order: contexts (W, C, D) and targets (W, L, D)."""
        pairs = [
            windows(np.asarray(x), s, self.context_len, self.target_len)
            for x, s in zip(series, self.starts, strict=True)
        ]
        return np.concatenate([c for c, _ in pairs]), np.concatenate([t for _, t in pairs])

    def step_scores(self, window_scores: np.ndarray) -> list[np.ndarray]:
        """All the windows' surprise (W,), in `windows`' order -> each series' step scores (T_i,)."""
        per_series = np.split(window_scores, np.cumsum([len(s) for s in self.starts])[:-1])
        return [
            step_scores(w, s, n, self.context_len, self.target_len)
            for w, s, n in zip(per_series, self.starts, self.lengths, strict=True)
        ]


@torch.inference_mode()
def window_surprise(
    model: JEPA, series: np.ndarray, context_len: int, target_len: int, stride: int, batch: int = 512
) -> np.ndarray:
    """The surprise (W,) of each window of one series (T, D), in eager mode (a trained model's
    calibration; the service scores through its batched, traced forward passes instead)."""
    model.eval()
    starts = window_starts(len(series), context_len, target_len, stride)
    out = []
    for first in range(0, len(starts), batch):  # a batch of windows at a time: bounded memory
        contexts, targets = windows(series, starts[first : first + batch], context_len, target_len)
        predicted = model.predict(torch.from_numpy(np.ascontiguousarray(contexts, dtype=np.float32)))
        actual = model.encode(torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)))
        out.append(surprise(predicted.numpy(), actual.numpy()))
    return np.concatenate(out) if out else np.empty(0)


def series_surprise(model: JEPA, series: np.ndarray, context_len: int, target_len: int, stride: int = 1) -> np.ndarray:
    """One series' step scores (T,), eagerly: what POST /score answers for it (NaN in the warm-up)."""
    plan = ForecastPlan.of([len(series)], context_len, target_len, stride)
    return plan.step_scores(window_surprise(model, series, context_len, target_len, stride))[0]


def calibration_of(model: JEPA, sequences: list[np.ndarray], context_len: int, target_len: int) -> list[float] | None:
    """A trained model's calibration on held-out sequences (T_i, D); None when none is long enough."""
    scored = [
        window_surprise(model, np.asarray(x, dtype=np.float32), context_len, target_len, stride=target_len)
        for x in sequences[:CALIBRATION_SEQUENCES]
        if len(x) >= context_len + target_len
    ]
    return calibrate(np.concatenate(scored)) if scored else None


def calibrate(scores: np.ndarray) -> list[float]:
    """Window surprise on held-out data -> its percentiles 0..100 (CALIBRATION_POINTS values)."""
    return [round(float(v), 6) for v in np.percentile(scores, np.linspace(0, 100, CALIBRATION_POINTS))]


def percentile_of(values: np.ndarray, calibration: list[float]) -> np.ndarray:
    """Where each value falls in the calibration, 0-100 (NaN stays NaN). Beyond the largest
    held-out surprise is 100: the calibration cannot tell how far beyond."""
    levels = np.linspace(0, 100, len(calibration))
    ranked = np.interp(values, np.asarray(calibration), levels)
    return np.where(np.isnan(values), np.nan, ranked)


def top_segments(scores: np.ndarray, threshold: float, top: int) -> list[tuple[int, int, int, float]]:
    """The `top` most surprising segments of step scores (T,): maximal runs of steps scoring at
    least `threshold`, ranked by their peak, as (start, end exclusive, peak step, peak score).
    With no run above the threshold, the single step with the highest score."""
    above = np.nan_to_num(scores, nan=-np.inf) >= threshold
    edges = np.flatnonzero(np.diff(np.concatenate(([0], above.astype(np.int8), [0]))))
    runs = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    if not runs:
        if top == 0 or np.all(np.isnan(scores)):
            return []
        peak = int(np.nanargmax(scores))
        return [(peak, peak + 1, peak, float(scores[peak]))]
    found = []
    for start, end in runs:
        peak = start + int(np.nanargmax(scores[start:end]))
        found.append((start, end, peak, float(scores[peak])))
    return sorted(found, key=lambda s: -s[3])[:top]


def summarize(steps: np.ndarray, calibration: list[float] | None, threshold: float, top: int) -> dict[str, Any]:
    """One series' step scores (T,) as POST /score answers them: the scores, their percentiles in
    the calibration (None without one), and the `top` segments at or above the `threshold`
    percentile (of the calibration, else of the series' own scores)."""
    if calibration is not None:
        ranked = percentile_of(steps, calibration)
        cut = float(np.interp(threshold, np.linspace(0, 100, len(calibration)), calibration))
    else:
        ranked, cut = None, float(np.nanpercentile(steps, threshold))
    segments = [
        {
            "start": start,
            "end": end,
            "peak": peak,
            "score": value,
            "percentile": None if ranked is None else float(ranked[peak]),
        }
        for start, end, peak, value in top_segments(steps, cut, top)
    ]
    return {"scores": steps, "percentiles": ranked, "segments": segments}
