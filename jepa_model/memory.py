"""Anomaly memory: what a step model keeps of its training data to score new series against it.

A series' anomaly score at step t is the largest of three distances from normal, each divided by
its own 99.9th percentile on training data held out from the memory, so that 1.0 means "as far
from normal as one step in a thousand of held-out normal data" whichever distance speaks:

- **step**: from the step's representation (the encoder's per-step output beside its first
  blocks' states, what pooling sees) to its nearest neighbour among remembered training steps;
- **window**: from the mean representation over the window of `window` steps centred on t (the
  training data's dominant period) to its nearest remembered window: a discord in representation
  space, as the matrix profile finds one in input space;
- **forecast**: the error of a linear autoregression fitted on the training data, predicting step
  t from the `order` steps before it, in standardised input units. Point anomalies (a spike) stand
  out here first.

The memory is bounded: `memory_size` steps and as many windows, sampled from at most SCAN_STEPS
training steps, plus the autoregression's weights. It lives in the checkpoint beside the weights,
so the sha256 covers it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jepa_model.data import pad_sequences
from jepa_model.step_encoders import normalize_each

# Training steps read to build the memory: whole sequences, cut into segments of at most
# SEGMENT_STEPS, taken in a seeded random order until SCAN_STEPS are read.
SCAN_STEPS = 262_144
SEGMENT_STEPS = 16_384
# Segments are cut into blocks of about a tenth of the steps read (at most BLOCK_STEPS); every
# CALIBRATION_EVERY-th block is kept out of the memory to calibrate the distances against, at
# no more than CALIBRATION_STEPS of its steps.
BLOCK_STEPS = 256
CALIBRATION_EVERY = 5
CALIBRATION_STEPS = 65_536
SCALE_PERCENTILE = 99.9
CALIBRATION_POINTS = 101  # the combined score's percentiles 0..100 on the held-out blocks
# The autoregression reads AR_ORDER steps back, fewer for wide inputs (at most AR_INPUTS numbers:
# its inputs for AR_FIT_ROWS steps, or for a chunk of CHUNK_STEPS, stay under 140 MB), and is
# fitted on at most AR_FIT_ROWS steps.
AR_ORDER, AR_INPUTS, AR_FIT_ROWS = 32, 256, 65_536
# The window: the first autocorrelation peak after it turns negative, within these bounds; else
# DEFAULT_WINDOW.
MIN_WINDOW, MAX_WINDOW, DEFAULT_WINDOW = 4, 512, 16
# Features are read over chunks of this many steps, each with the steps of context on either side
# that a step's features depend on (`margin_steps`: 511 for the series preset), at most MARGIN. An
# encoder that sees further (a BiLSTM, or a conv of many wide layers) is read with MARGIN, which
# only approximates one pass over the whole series.
CHUNK_STEPS, MARGIN = 65_536, 1024
KNN_ROWS = 8192  # queries per distance matrix
WINDOW_STRIDE_DIVISOR = 4  # scoring compares windows a quarter of a window apart


def ar_order(input_dim: int) -> int:
    return max(1, min(AR_ORDER, AR_INPUTS // input_dim))


class AnomalyMemory(nn.Module):
    """Buffers only: nothing here trains. Empty (scales 0) until `build_memory` fills it."""

    def __init__(self, size: int, feature_dim: int, input_dim: int) -> None:
        super().__init__()
        self.order = ar_order(input_dim)
        self.register_buffer("steps", torch.zeros(size, feature_dim))  # (N, P)
        self.register_buffer("windows", torch.zeros(size, feature_dim))  # (N, P)
        self.register_buffer("window", torch.tensor(DEFAULT_WINDOW))
        self.register_buffer("ar_weights", torch.zeros(self.order * input_dim + 1, input_dim))  # (p * D + 1, D)
        self.register_buffer("ar_mean", torch.zeros(input_dim))
        self.register_buffer("ar_std", torch.ones(input_dim))
        # step, window and forecast distances at SCALE_PERCENTILE; 0 where a part is not in use
        self.register_buffer("scales", torch.zeros(3))
        self.register_buffer("calibration", torch.zeros(CALIBRATION_POINTS))

    @property
    def built(self) -> bool:
        return bool(self.scales[0] > 0)


def dominant_period(sequences: Sequence[np.ndarray]) -> int:
    """The lag of the first autocorrelation peak after the autocorrelation first turns negative,
    averaged over sequences (T_i, D) and features; DEFAULT_WINDOW when there is none."""
    longest = max(len(x) for x in sequences)
    upper = min(MAX_WINDOW, longest // 3)
    if upper <= MIN_WINDOW:
        return DEFAULT_WINDOW
    total, weight = np.zeros(upper), np.zeros(upper)
    for x in sequences:
        if len(x) // 3 < MIN_WINDOW:
            continue
        centred = x - x.mean(0)  # (T, D)
        spectrum = np.fft.rfft(centred, 2 * len(x), axis=0)
        auto = np.fft.irfft(spectrum * np.conj(spectrum), axis=0)[: min(upper, len(x) // 3)].sum(1)  # (lags,)
        if auto[0] <= 0:
            continue
        total[: len(auto)] += auto / auto[0] * len(x)
        weight[: len(auto)] += len(x)
    auto = total / np.maximum(weight, 1)
    negative = np.flatnonzero(auto < 0)
    if len(negative) == 0 or max(MIN_WINDOW, negative[0]) >= upper:
        return DEFAULT_WINDOW
    first = max(MIN_WINDOW, int(negative[0]))
    return first + int(np.argmax(auto[first:upper]))


def window_means(features: torch.Tensor, window: int, stride: int = 1) -> torch.Tensor:
    """(T, P) -> (W, P): row i is the mean of features[i * stride : i * stride + window]."""
    return F.avg_pool1d(features.T[None], window, stride)[0].T


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """(Q, P), (N, P) -> (Q,): each query's euclidean distance to its nearest row of the bank,
    leaving out the rows `excluded` (Q, N) marks for it.

    The nearest row minimises |b|^2 - 2 q.b (|q - b|^2 less |q|^2), found with one matrix product
    per KNN_ROWS queries: several times faster than cdist. The distance to it is then taken
    directly: from the expansion it would be a difference of large squares, whose rounding
    depends on the product's shape and swamps the small distances of normal steps."""
    bank_sq = (bank * bank).sum(1)  # (N,)
    out = []
    for i in range(0, len(queries), KNN_ROWS):
        q = queries[i : i + KNN_ROWS]
        partial = torch.addmm(bank_sq, q, bank.T, alpha=-2)  # (q, N): |b|^2 - 2 q.b
        if excluded is not None:
            partial = partial.masked_fill(excluded[i : i + KNN_ROWS], float("inf"))
        best, nearest = partial.min(1)
        out.append((q - bank[nearest]).norm(dim=1).masked_fill(best.isinf(), float("inf")))  # inf: every row left out
    return torch.cat(out) if out else queries.new_zeros(0)


def lagged(x: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, D) -> the autoregression's inputs (T - order, order * D + 1), the last column ones, and
    its outputs (T - order, D)."""
    rows = np.lib.stride_tricks.sliding_window_view(x[:-1], order, axis=0)  # (T - order, D, order)
    inputs = rows.transpose(0, 2, 1).reshape(len(rows), -1)
    return np.concatenate([inputs, np.ones((len(rows), 1), x.dtype)], axis=1), x[order:]


def ar_errors(memory: AnomalyMemory, x: np.ndarray, start: int = 0, end: int | None = None) -> np.ndarray:
    """(T, D) -> (end - start,): the norm of the autoregression's error at steps start..end, NaN
    for the first `order` of the series; computed CHUNK_STEPS steps at a time, so its inputs never
    hold more."""
    end = len(x) if end is None else end
    out, order = np.full(end - start, np.nan), memory.order
    mean, std = memory.ar_mean.cpu().numpy(), memory.ar_std.cpu().numpy()
    weights = memory.ar_weights.cpu().numpy()
    for first in range(max(order, start), end, CHUNK_STEPS):
        last = min(end, first + CHUNK_STEPS)
        scaled = ((x[first - order : last] - mean) / std).astype(np.float32)  # the steps and the `order` before
        inputs, outputs = lagged(scaled, order)
        out[first - start : last - start] = np.linalg.norm(inputs @ weights - outputs, axis=1)
    return out


def margin_steps(encoder: nn.Module) -> int:
    """Steps on either side that a step's features depend on (the conv body's half receptive
    field, and one more for the change from the step before), at most MARGIN."""
    body = getattr(encoder, "body", None)
    seen = getattr(body, "context_steps", None)
    return MARGIN if seen is None else min(MARGIN, seen + 1)


def as_series(encoder: nn.Module, x: np.ndarray) -> torch.Tensor:
    """A series (T, D) as the encoder reads it in chunks: (1, T, D), standardised by the whole
    series' statistics where the encoder standardises each series (not by each chunk's)."""
    series = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]  # (1, T, D)
    return normalize_each(series, None) if getattr(encoder, "series_norm", False) else series


@torch.inference_mode()
def step_features(
    encoder: nn.Module, x: np.ndarray, start: int = 0, end: int | None = None, series: torch.Tensor | None = None
) -> torch.Tensor:
    """What the encoder's pooling sees at steps start..end of a series (T, D): (end - start, P).

    Read in chunks of CHUNK_STEPS with `margin_steps` of context on either side, so that memory
    stays bounded at any T and each step sees what it would in one pass over the whole series.
    `series`: `as_series(encoder, x)`, when the caller reads the same series many times."""
    end = len(x) if end is None else end
    device = encoder.embed.weight.device
    series = as_series(encoder, x) if series is None else series
    margin, out = margin_steps(encoder), []
    for first in range(start, end, CHUNK_STEPS):
        last = min(end, first + CHUNK_STEPS)
        lo, hi = max(0, first - margin), min(len(x), last + margin)
        features = encoder.pooled_features(series[:, lo:hi].to(device), normalized=True)[0]  # (hi - lo, P)
        out.append(features[first - lo : last - lo])
    return torch.cat(out)


def _segments(sequences: Sequence[np.ndarray], seed: int) -> list[np.ndarray]:
    """At most SCAN_STEPS steps of the sequences, as segments of at most SEGMENT_STEPS, in a seeded order."""
    pieces = [x[s : s + SEGMENT_STEPS] for x in sequences for s in range(0, len(x), SEGMENT_STEPS)]
    taken, total = [], 0
    for i in np.random.default_rng(seed).permutation(len(pieces)):
        taken.append(np.asarray(pieces[i], dtype=np.float32))
        total += len(pieces[i])
        if total >= SCAN_STEPS:
            break
    return taken


@torch.inference_mode()
def _segment_features(encoder: nn.Module, segments: list[np.ndarray]) -> Iterator[tuple[int, torch.Tensor]]:
    """(k, step_features of segments[k]) for every segment, short ones run together in padded
    batches of at most CHUNK_STEPS steps (thousands of short training series, one pass each,
    would take minutes)."""
    order = sorted(range(len(segments)), key=lambda k: len(segments[k]))
    batch: list[int] = []
    for k in [*order, None]:
        if batch and (k is None or (len(batch) + 1) * len(segments[k]) > CHUNK_STEPS):
            x, lengths = pad_sequences([segments[i] for i in batch])
            device = encoder.embed.weight.device
            features = encoder.pooled_features(x.to(device), lengths.to(device))  # (B, T, P)
            for row, i in enumerate(batch):
                yield i, features[row, : len(segments[i])]
            batch = []
        if k is not None:
            batch.append(k)


def _held_out_masks(segments: list[np.ndarray]) -> list[np.ndarray]:
    """Per segment (T,), True at the steps of every CALIBRATION_EVERY-th block, counted over all."""
    block = int(np.clip(sum(len(s) for s in segments) // 10, 1, BLOCK_STEPS))
    masks, count = [], 0
    for segment in segments:
        blocks = count + np.arange(len(segment)) // block
        count = int(blocks[-1]) + 1
        masks.append(blocks % CALIBRATION_EVERY == CALIBRATION_EVERY - 1)
    return masks


@torch.no_grad()
def build_memory(encoder: nn.Module, memory: AnomalyMemory, sequences: Sequence[np.ndarray], seed: int = 0) -> None:
    """Fill `memory` from training series (T_i, D), read by `encoder` (the target encoder).

    Two passes over at most SCAN_STEPS steps. The first samples the remembered steps and windows
    from outside the held-out blocks (each segment its share, so at most a few times
    `memory_size` rows are ever held) and fits the autoregression. The second measures the three
    distances at (at most CALIBRATION_STEPS of) the held-out blocks' steps; their 99.9th
    percentiles scale them, and the scaled largest calibrates the score. As in the matrix
    profile, a remembered step or window less than a window from the one measured does not count
    as its neighbour: it overlaps it, and would read every held-out step as normal. With too
    little data to hold a block out, the memory stays unbuilt (`built` False)."""
    segments = _segments(sequences, seed)
    held = _held_out_masks(segments)
    if not any(h.any() for h in held) or all(h.all() for h in held):
        return
    rng = np.random.default_rng(seed)
    window = dominant_period(segments)
    steps, windows = _Remembered(), _Remembered()
    total, size = sum(len(s) for s in segments), len(memory.steps)
    for k, features in _segment_features(encoder, segments):  # (T, P) each
        segment, held_out = segments[k], held[k]
        share = int(np.ceil(2 * size * len(segment) / total))  # enough of each segment for a fair final draw
        steps.add(features, np.flatnonzero(~held_out), k, share, rng)
        if len(segment) >= window:  # a window belongs to the block it starts in
            windows.add(
                window_means(features, window), np.flatnonzero(~held_out[: len(segment) - window + 1]), k, share, rng
            )
    memory.scales.fill_(1.0)  # for the second pass: distances as they are, a part off (0) where unusable
    memory.steps.copy_(steps.draw(size, rng))
    if windows.count:
        memory.windows.copy_(windows.draw(size, rng))
        memory.window.fill_(window)
    else:
        memory.scales[1] = 0.0
    _fit_ar(memory, segments, held, rng)
    measured, total_held = [], sum(int(h.sum()) for h in held)
    for k, features in _segment_features(encoder, segments):
        at = np.flatnonzero(held[k])
        share = int(np.ceil(CALIBRATION_STEPS * len(at) / total_held))
        at = np.sort(rng.choice(at, min(len(at), share), replace=False))
        measured.append(_held_out_distances(memory, segments[k], features, k, at, steps, windows))
    at_held = np.concatenate(measured, axis=1)  # (3, measured steps)
    memory.scales.copy_(torch.tensor([_scale(row) if memory.scales[i] > 0 else 0.0 for i, row in enumerate(at_held)]))
    combined = _combine(at_held, memory.scales)
    memory.calibration.copy_(torch.from_numpy(np.nanpercentile(combined, np.linspace(0, 100, CALIBRATION_POINTS))))


class _Remembered:
    """Candidate rows for a memory bank, with the segment and step each came from; once drawn,
    where the drawn rows came from (to keep a measured step from counting its own neighbours)."""

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []
        self.segments: list[np.ndarray] = []
        self.positions: list[np.ndarray] = []
        self.count = 0

    def add(
        self, rows: torch.Tensor, candidates: np.ndarray, segment: int, share: int, rng: np.random.Generator
    ) -> None:
        picked = np.sort(rng.choice(candidates, min(share, len(candidates)), replace=False))
        self.rows.append(rows[torch.from_numpy(picked).to(rows.device)])
        self.segments.append(np.full(len(picked), segment))
        self.positions.append(picked)
        self.count += len(picked)

    def draw(self, size: int, rng: np.random.Generator) -> torch.Tensor:
        """`size` of the rows (with replacement when there are fewer); remembers where they came from."""
        chosen = rng.choice(self.count, size, replace=self.count < size)
        self.drawn_segments = torch.from_numpy(np.concatenate(self.segments)[chosen])
        self.drawn_positions = torch.from_numpy(np.concatenate(self.positions)[chosen])
        return torch.cat(self.rows)[torch.from_numpy(chosen)]

    def nearest(
        self, bank: torch.Tensor, queries: torch.Tensor, at: np.ndarray, segment: int, radius: int
    ) -> np.ndarray:
        """Each query's distance to its nearest row of `bank` (these rows, drawn), leaving out the
        rows of the same segment less than `radius` steps from the query's step `at`."""
        device = bank.device
        overlaps = (self.drawn_segments.to(device)[None] == segment) & (
            (self.drawn_positions.to(device)[None] - torch.from_numpy(at).to(device)[:, None]).abs() < radius
        )  # (Q, N)
        return nearest_distance(queries, bank, overlaps).cpu().double().numpy()


def _held_out_distances(
    memory: AnomalyMemory,
    segment: np.ndarray,
    features: torch.Tensor,
    k: int,
    at: np.ndarray,
    steps: _Remembered,
    windows: _Remembered,
) -> np.ndarray:
    """(3, len(at)): raw_distances' parts at the held-out steps `at` of segment k (its features
    (T, P)), none of them counting a remembered row that overlaps it."""
    out = np.full((3, len(at)), np.nan)
    window = int(memory.window)
    for first in range(0, len(at), KNN_ROWS):
        part = at[first : first + KNN_ROWS]
        out[0, first : first + len(part)] = steps.nearest(memory.steps, features[part], part, k, window)
    if memory.scales[1] > 0 and len(segment) >= window:
        starts = at - window // 2  # the window centred on each step
        whole = (starts >= 0) & (starts <= len(segment) - window)
        means = window_means(features, window)
        for first in range(0, len(at), KNN_ROWS):
            part = starts[first : first + KNN_ROWS]
            ok = whole[first : first + KNN_ROWS]
            found = windows.nearest(memory.windows, means[part[ok]], part[ok], k, window)
            out[1, first : first + len(part)][ok] = found
    if memory.scales[2] > 0:
        out[2] = ar_errors(memory, segment)[at]
    return out


def _scale(distances: np.ndarray) -> float:
    """The distance at SCALE_PERCENTILE of those measured (NaN where a part has none); 0 (the
    part is off) without any."""
    measured = distances[~np.isnan(distances)]
    if len(measured) == 0:
        return 0.0
    return max(float(np.percentile(measured, SCALE_PERCENTILE)), 1e-6)


def _fit_ar(
    memory: AnomalyMemory, segments: list[np.ndarray], held: list[np.ndarray], rng: np.random.Generator
) -> None:
    """Fit the autoregression on steps outside the held-out blocks: at most AR_FIT_ROWS, each
    segment its share, whose lagged inputs alone are built. It stays off (scales[2] 0) with
    fewer rows than unknowns."""
    order = memory.order
    usable = [(x, h) for x, h in zip(segments, held, strict=True) if len(x) > order]
    if not usable:
        memory.scales[2] = 0.0
        return
    data = np.concatenate([x for x, _ in usable])
    mean, std = data.mean(0), data.std(0) + 1e-6
    total, inputs, outputs = len(data), [], []
    for x, h in usable:
        scaled = (x - mean) / std
        targets = order + np.flatnonzero(~h[order:])  # the steps predicted, outside the held-out blocks
        share = int(np.ceil(AR_FIT_ROWS * len(x) / total))
        if len(targets) > share:
            targets = np.sort(rng.choice(targets, share, replace=False))
        lags = scaled[targets[:, None] + np.arange(-order, 0)]  # (k, order, D)
        inputs.append(
            np.concatenate([lags.reshape(len(targets), order * x.shape[1]), np.ones((len(targets), 1))], axis=1)
        )
        outputs.append(scaled[targets])
    fit_in, fit_out = np.concatenate(inputs), np.concatenate(outputs)
    if len(fit_in) < fit_in.shape[1]:
        memory.scales[2] = 0.0
        return
    weights, *_ = np.linalg.lstsq(fit_in.astype(np.float64), fit_out.astype(np.float64), rcond=None)
    memory.ar_mean.copy_(torch.from_numpy(mean))
    memory.ar_std.copy_(torch.from_numpy(std))
    memory.ar_weights.copy_(torch.from_numpy(weights))


class MemoryScorer:
    """Scores one series (T, D) against the memory a slice of steps at a time (`run`), so that a
    caller can do other work between slices; `scores` once every slice has run.

    Each slice holds, for its steps: the distance to the nearest remembered step; the distance of
    the windows starting in it to the nearest remembered window, each window standing for the
    steps nearest its centre; and the autoregression's error. Windows start a quarter window
    apart: neighbouring windows share most of their steps, and this part's cost drops 4-fold or
    more. A slice's cost is bounded (its steps, their margins and a window more), and so is its
    memory, whatever the series' length."""

    def __init__(
        self, encoder: nn.Module, memory: AnomalyMemory, x: np.ndarray, slice_steps: int = CHUNK_STEPS
    ) -> None:
        self.encoder, self.memory, self.x = encoder, memory, x
        self.series = as_series(encoder, x)  # (1, T, D)
        self.slices = [(start, min(len(x), start + slice_steps)) for start in range(0, len(x), slice_steps)]
        # (3, T): step, window and forecast distances; NaN where a part has no value (a window's
        # edges, the autoregression's first steps, a part that is off)
        self.distances = np.full((3, len(x)), np.nan)
        self.window = int(memory.window)
        self.stride = max(1, self.window // WINDOW_STRIDE_DIVISOR)
        self.use_windows = bool(memory.scales[1] > 0) and len(x) >= self.window

    @torch.inference_mode()
    def run(self, start: int, end: int) -> None:
        """Fill the distances of steps start..end (one of `slices`)."""
        x, memory, window, stride = self.x, self.memory, self.window, self.stride
        features = step_features(self.encoder, x, start, min(len(x), end + window - 1), self.series)  # and the windows'
        self.distances[0, start:end] = nearest_distance(features[: end - start], memory.steps).cpu().double().numpy()
        last_start = len(x) - window  # of a whole window
        first = -(-start // stride) * stride  # the first window start in this slice
        if self.use_windows and first < end and first <= last_start:
            count = len(range(first, min(end - 1, last_start) + 1, stride))
            means = window_means(features[first - start :], window, stride)[:count]
            spread = np.repeat(nearest_distance(means, memory.windows).cpu().double().numpy(), stride)
            at = first + window // 2 - stride // 2 + np.arange(len(spread))  # each window's `stride` steps
            keep = at < len(x)
            self.distances[1, at[keep]] = spread[keep]
        if memory.scales[2] > 0:
            self.distances[2, start:end] = ar_errors(memory, x, start, end)

    def scores(self) -> np.ndarray:
        """(T,): each step's anomaly score, the largest of its scaled distances."""
        return _combine(self.distances, self.memory.scales)


def raw_distances(encoder: nn.Module, memory: AnomalyMemory, x: np.ndarray) -> np.ndarray:
    """A series (T, D) -> (3, T): MemoryScorer's distances, every slice run."""
    scorer = MemoryScorer(encoder, memory, x)
    for start, end in scorer.slices:
        scorer.run(start, end)
    return scorer.distances


def _combine(distances: np.ndarray, scales: torch.Tensor) -> np.ndarray:
    """(3, T) distances -> (T,): the largest of those whose part is on, each over its scale."""
    on = [i for i in range(3) if scales[i] > 0]
    return np.fmax.reduce([distances[i] / float(scales[i]) for i in on])


def memory_scores(encoder: nn.Module, memory: AnomalyMemory, x: np.ndarray) -> np.ndarray:
    """A series (T, D) -> each step's anomaly score (T,): the largest of its scaled distances."""
    return _combine(raw_distances(encoder, memory, x), memory.scales)
