"""Step models: every step of a sequence gets a representation, and the embedding pools them.

The encoder is a stack of dilated convolutions (as in T-Loss and TS2Vec) or a bidirectional LSTM
over a learned input embedding. Steps hidden from the context encoder in training enter as a
learned mask token instead of their values. /predict goes through the Forecaster at the end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from jepa_model.config import PPV_LEVELS, PYRAMID_SEGMENTS, ModelConfig
from jepa_model.encoders import register_input_statistics, standardize


def valid_steps(lengths: torch.Tensor | None, T: int) -> torch.Tensor | None:
    """(B, T) True at each row's valid steps, or None when every row is full."""
    return None if lengths is None else torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


class DilatedBlock(nn.Module):
    """Two dilated convolutions with a residual path; padding steps are zeroed before each, so a
    row of a ragged batch computes exactly what it would alone (zeros lie past its end either way)."""

    def __init__(self, dim: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv1 = nn.Conv1d(dim, dim, kernel_size, padding=padding, dilation=dilation)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size, padding=padding, dilation=dilation)

    def forward(self, h: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        # h: (B, H, T) with zeros at padding; valid: (B, 1, T) or None -> (B, H, T)
        y = self.conv1(F.gelu(h))
        if valid is not None:
            y = y * valid
        y = h + self.conv2(F.gelu(y))
        return y if valid is None else y * valid


class DilatedConvBody(nn.Module):
    """num_layers blocks with dilations 1, 2, 4, ...: 8 blocks of kernel 3 see 1021 steps."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            DilatedBlock(config.hidden_dim, config.kernel_size, 2**i) for i in range(config.num_layers)
        )
        self.out_dim = config.hidden_dim
        # Steps on either side that one step's output reads: each block's two convolutions reach
        # dilation * (kernel - 1) / 2 each way.
        self.context_steps = (config.kernel_size - 1) * (2**config.num_layers - 1)

    def forward(
        self, h: torch.Tensor, lengths: torch.Tensor | None, keep: int = 0
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # h: (B, T, H) -> (B, T, H), and the first `keep` blocks' outputs, (B, T, H) each
        valid = valid_steps(lengths, h.shape[1])
        mask = None if valid is None else valid[:, None, :].to(h.dtype)  # (B, 1, T)
        h = h.transpose(1, 2)  # (B, H, T): Conv1d wants channels first
        if mask is not None:
            h = h * mask
        kept = []
        for i, block in enumerate(self.blocks):
            h = block(h, mask)
            if i < keep:
                kept.append(h.transpose(1, 2))
        return h.transpose(1, 2), kept


class BiLSTMBody(nn.Module):
    """A bidirectional LSTM, packed by length so padding never enters either direction's state."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            config.hidden_dim, config.hidden_dim, config.num_layers, batch_first=True, bidirectional=True
        )
        self.out_dim = 2 * config.hidden_dim

    def forward(
        self, h: torch.Tensor, lengths: torch.Tensor | None, keep: int = 0
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # h: (B, T, H) -> (B, T, 2H); no blocks to keep (ModelConfig refuses pool_blocks here)
        if lengths is None:
            return self.lstm(h)[0], []
        packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=h.shape[1])[0], []


def pool_steps(
    steps: torch.Tensor,
    keep: torch.Tensor | None,
    pooling: str,
    thresholds: torch.Tensor | None = None,
    stretch_dims: int | None = None,
) -> torch.Tensor:
    """(B, T, S) per-step representations -> (B, R), over the steps `keep` marks (B, T), or over
    every step when it is None: the mean ("mean"), each dimension's max beside it ("max_mean"),
    and the mean of each consecutive third of the kept steps too ("pyramid"), or the share of
    steps above each of `thresholds` (L, S) and the longest stretch of steps above it, as shares
    of the kept steps, too ("max_mean_ppv_lspv"); stretches only in the first `stretch_dims`
    dimensions when it is given (the steps, not the blocks' states beside them)."""
    B, T, S = steps.shape
    keep = torch.ones(B, T, dtype=torch.bool, device=steps.device) if keep is None else keep
    weights = keep.to(steps.dtype)  # (B, T)
    count = weights.sum(1, keepdim=True)  # (B, 1)
    # A batched matrix product, several times cheaper on a CPU than weighting each step and summing.
    mean = torch.bmm(weights[:, None, :], steps)[:, 0] / count.clamp_min(1.0)  # (B, S)
    if pooling == "mean":
        return mean
    if pooling == "max_mean_ppv_lspv":
        if thresholds is None:
            raise ValueError("max_mean_ppv_lspv pooling needs the thresholds (L, S)")
        x = channels_first(steps, keep)  # (B, S, T), padding at -inf: below every level
        shares, longest = levels_crossed(x, thresholds, stretch_dims)  # (B, L * S), (B, L * S')
        return torch.cat([x.amax(2), mean, shares / count.clamp_min(1.0), longest / count.clamp_min(1.0)], dim=-1)
    parts = [steps.masked_fill(~keep[:, :, None], float("-inf")).amax(1), mean]
    if pooling == "pyramid":
        rank = torch.cumsum(keep.long(), dim=1) - 1  # (B, T): each kept step's place among them
        segment = (rank * PYRAMID_SEGMENTS) // count.long().clamp_min(1)  # (B, T) in 0..G-1
        member = F.one_hot(segment.clamp(0, PYRAMID_SEGMENTS - 1), PYRAMID_SEGMENTS).to(steps.dtype)
        member = member * weights[:, :, None]  # (B, T, G)
        sums = torch.einsum("btg,bts->bgs", member, steps)  # (B, G, S)
        parts.append((sums / member.sum(1)[:, :, None].clamp_min(1.0)).reshape(B, PYRAMID_SEGMENTS * S))
    return torch.cat(parts, dim=-1)


def channels_first(steps: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, T, S) steps, (B, T) kept -> (B, S, T), contiguous, -inf at the steps not kept."""
    x = steps.transpose(1, 2).clone(memory_format=torch.contiguous_format)  # a copy: filled in place next
    return x.masked_fill_(~keep[:, None, :], float("-inf"))


@torch.no_grad()
def step_statistics(steps: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, S) steps -> each dimension's mean and std (S,), (S,) over the steps `keep` marks."""
    kept = steps.reshape(-1, steps.shape[-1]) if keep is None else steps[keep]  # (N, S)
    return kept.mean(0), kept.std(0) if kept.shape[0] > 1 else torch.zeros_like(kept[0])


def steps_above(
    steps: torch.Tensor, keep: torch.Tensor, thresholds: torch.Tensor, stretch_dims: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, S) steps, (B, T) kept, (L, S) thresholds -> for each threshold and dimension, how many
    kept steps lie above it (B, L * S), and, in the first `stretch_dims` dimensions S' (all when
    None), the most consecutive ones that do (B, L * S')."""
    return levels_crossed(channels_first(steps, keep), thresholds, stretch_dims)


def levels_crossed(
    x: torch.Tensor, thresholds: torch.Tensor, stretch_dims: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`steps_above` on `channels_first` steps (B, S, T), their padding already at -inf.

    Stretches by run-length encoding rather than a scan (cummax, 2-3x slower on a CPU): the steps
    where a row's "above" flag changes, in row-major order, alternate start, end, start, end..., since
    every row begins and ends below (the step added at each end), so one `nonzero` gives every
    stretch's length at once, and their sum is the count above. One threshold at a time bounds the
    intermediates to (B, S, T). Flags stay booleans: converting them to count costs as much as the
    rest (int8 `diff`, a `sum` of booleans: each several times slower than what is done here).
    """
    B, S, T = x.shape
    stretched = S if stretch_dims is None else stretch_dims  # S'
    below = torch.zeros(B, stretched, 1, dtype=torch.bool, device=x.device)
    counts, stretches = [], []
    for level in thresholds:  # (S,)
        above = x > level[None, :, None]  # (B, S, T)
        inside = torch.cat([below, above[:, :stretched], below], dim=2)  # (B, S', T + 2)
        flips = inside[:, :, 1:] ^ inside[:, :, :-1]  # (B, S', T + 1): True where a stretch starts or ends
        at = flips.reshape(-1).nonzero().squeeze(1)  # (2R,) flat positions: start, end, start, end...
        starts, ends = at[0::2], at[1::2]  # (R,) each
        rows, lengths = starts // (T + 1), (ends - starts).to(x.dtype)  # (R,) each
        zeros = torch.zeros(B * stretched, dtype=x.dtype, device=x.device)
        stretches.append(zeros.scatter_reduce(0, rows, lengths, "amax").reshape(B, stretched))
        count = zeros.index_add(0, rows, lengths).reshape(B, stretched)  # (B, S')
        if stretched < S:  # the dimensions without stretches are counted directly
            count = torch.cat([count, above[:, stretched:].sum(2, dtype=torch.int32).to(x.dtype)], dim=-1)
        counts.append(count)  # (B, S)
    return torch.cat(counts, dim=-1), torch.cat(stretches, dim=-1)


def normalize_each(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """(B, T, D) -> each row standardised per feature over its valid steps (B, T, D)."""
    weights = torch.ones_like(x[:, :, :1]) if valid is None else valid.to(x.dtype)[:, :, None]  # (B, T, 1)
    count = weights.sum(1, keepdim=True).clamp_min(1.0)
    mean = (x * weights).sum(1, keepdim=True) / count
    std = (((x - mean) * weights) ** 2).sum(1, keepdim=True).div(count).sqrt()
    return (x - mean) / (std + 1e-5)


class StepEncoder(nn.Module):
    """(B, T, D) -> per-step representations (B, T, S) (`steps`), or their standardised pooling
    (B, R) (`forward`, what /encode serves)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        register_input_statistics(self, config)
        self.series_norm = config.series_norm
        self.pooling = config.pooling
        self.pool_blocks, self.step_dim = config.pool_blocks, config.step_dim
        self.embed = nn.Linear(config.feature_dim, config.hidden_dim)
        self.mask_token = nn.Parameter(torch.zeros(config.hidden_dim))
        self.body: nn.Module = DilatedConvBody(config) if config.encoder == "conv" else BiLSTMBody(config)
        self.project = nn.Linear(self.body.out_dim, config.step_dim)
        # Each embedding dimension's mean and std over the training data, set once training ends
        # (`set_embedding_statistics`): served embeddings are standardised, so cosine and euclidean
        # comparisons are not dominated by what every sequence shares.
        self.register_buffer("embedding_mean", torch.zeros(config.repr_dim), persistent=True)
        self.register_buffer("embedding_std", torch.ones(config.repr_dim), persistent=True)
        # PPV pooling's thresholds come from each step dimension's running mean and std over the
        # training crops (as batch norm tracks its statistics), so the forecaster trains against
        # the pooling that will be served. Only models that pool this way have these buffers:
        # checkpoints of the other poolings load as they were saved.
        self.tracks_steps = config.pooling == "max_mean_ppv_lspv"
        if self.tracks_steps:
            self.register_buffer("step_mean", torch.zeros(config.pool_dim), persistent=True)
            self.register_buffer("step_std", torch.ones(config.pool_dim), persistent=True)

    def features(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        normalized: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, T, D); lengths: (B,) or None; hidden: (B, T) True where the encoder sees the mask
        # token instead of the step -> the steps (B, T, S), each step's vector layer-normed (I-JEPA's
        # targets), and what pooling sees (B, T, P): the steps, beside the first pool_blocks blocks'
        # states layer-normed together when the config pools them (else the steps themselves).
        # `normalized`: x is already standardised series by series (a long series read in chunks).
        if self.series_norm and not normalized:
            x = normalize_each(x, valid_steps(lengths, x.shape[1]))
        h = self.embed(standardize(self, x))  # (B, T, H)
        if hidden is not None:
            h = torch.where(hidden[:, :, None], self.mask_token.to(h.dtype), h)
        out, blocks = self.body(h, lengths, self.pool_blocks)  # (B, T, H'), pool_blocks x (B, T, H)
        steps = self.project(out)  # (B, T, S)
        steps = F.layer_norm(steps, steps.shape[-1:])
        if not blocks:
            return steps, steps
        states = torch.cat(blocks, dim=-1)  # (B, T, pool_blocks * H)
        return steps, torch.cat([steps, F.layer_norm(states, states.shape[-1:])], dim=-1)  # (B, T, P)

    def steps(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, hidden: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, D) -> (B, T, S): `features`' steps alone."""
        return self.features(x, lengths, hidden)[0]

    def pooled_features(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, normalized: bool = False
    ) -> torch.Tensor:
        """(B, T, D) -> (B, T, P): `features`' input to pooling alone."""
        return self.features(x, lengths, normalized=normalized)[1]

    def ppv_thresholds(self) -> torch.Tensor | None:
        """(L, P): the levels PPV pooling counts steps above, or None when it does not pool so."""
        if not self.tracks_steps:
            return None
        levels = torch.tensor(PPV_LEVELS, dtype=self.step_mean.dtype, device=self.step_mean.device)
        return self.step_mean + levels[:, None] * self.step_std  # (L, P)

    @torch.no_grad()
    def track_step_statistics(self, mean: torch.Tensor, std: torch.Tensor, momentum: float = 0.1) -> None:
        """Move the running per-dimension mean and std (S,) toward a batch's (`step_statistics`)."""
        self.step_mean.lerp_(mean, momentum)
        self.step_std.lerp_(std.clamp_min(1e-6), momentum)

    def pool_raw(self, steps: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        # steps: (B, T, P) `pooled_features`, keep: (B, T) or None for all -> (B, R) before standardisation
        return pool_steps(steps, keep, self.pooling, self.ppv_thresholds(), self.step_dim)

    def standardize_embedding(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.embedding_mean) / self.embedding_std  # (B, R)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, D) -> (B, R), R = repr_dim
        return self.standardize_embedding(
            self.pool_raw(self.pooled_features(x, lengths), valid_steps(lengths, x.shape[1]))
        )


class StepPredictor(nn.Module):
    """Each step's context representation -> the target encoder's representation of that step.

    The context encoder already mixed neighbouring steps into each one (mask tokens included), so
    the predictor works step by step, as data2vec's regression head does.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(config.step_dim, config.predictor_hidden_dim),
            nn.GELU(),
            nn.Linear(config.predictor_hidden_dim, config.step_dim),
        )

    def forward(self, steps: torch.Tensor) -> torch.Tensor:
        return self.net(steps)  # (B, T, S) -> (B, T, S)


class Forecaster(nn.Module):
    """/predict for step models: a context window's pooled representation and its last step's
    -> the pooled representation (before standardisation) of the window that follows.

    The pooled context says what the sequence is; its last step says where it has got to, which
    max and mean pooling alone would blur.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h, self.stretch_dims = config.predictor_hidden_dim, config.step_dim
        self.net = nn.Sequential(
            nn.Linear(config.repr_dim + config.pool_dim, h),
            nn.GELU(),
            nn.Linear(h, h),
            nn.GELU(),
            nn.Linear(h, config.repr_dim),
        )

    def forward(
        self, steps: torch.Tensor, lengths: torch.Tensor | None, pooling: str, thresholds: torch.Tensor | None = None
    ) -> torch.Tensor:
        # steps: (B, C, P) the context encoder's `pooled_features`; thresholds: (L, P) for PPV pooling -> (B, R)
        B, C, _ = steps.shape
        last_index = torch.full((B,), C - 1, device=steps.device) if lengths is None else lengths - 1
        last = steps[torch.arange(B, device=steps.device), last_index]  # (B, S)
        return self.net(
            torch.cat(
                [pool_steps(steps, valid_steps(lengths, C), pooling, thresholds, self.stretch_dims), last], dim=-1
            )
        )
