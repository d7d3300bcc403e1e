"""`jepa demo`: the seed's main.py pipeline, on this project's presets and metrics.

Generates toy trajectories, trains on 800 and keeps 200 for validation, prints the seed's lines
(`Epoch N, Loss: X`, the prediction similarities and their mean), then the collapse-aware metrics
the seed's cosine cannot show, and saves its four plots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from jepa_model import DEFAULT_PRESET, ToySequenceDataset, fit, resolve_configs
from jepa_model.metrics import embed_sequences, evaluate, held_out_windows
from training import plots

NUM_SEQUENCES, TRAIN_SEQUENCES, SEQ_LEN = 1000, 800, 20


@dataclass
class DemoResult:
    losses: list[float]
    similarities: np.ndarray  # (200,) cosine of each validation prediction to its target
    metrics: dict[str, float]
    plots: list[Path]


def run_demo(
    out: Path, epochs: int = 50, pattern: str = "circle", preset: str = DEFAULT_PRESET, seed: int = 0,
    say: Callable[[str], None] = print,
) -> DemoResult:  # fmt: skip
    data = ToySequenceDataset(NUM_SEQUENCES, SEQ_LEN, pattern, seed=seed)
    train = Subset(data, range(TRAIN_SEQUENCES))
    validation = ToySequenceDataset(NUM_SEQUENCES - TRAIN_SEQUENCES, SEQ_LEN, pattern, seed=seed + 1)
    model_config, train_config = resolve_configs(preset, {"epochs": epochs, "seed": seed}, (2, SEQ_LEN))
    say(f"Training a {preset!r} JEPA on {TRAIN_SEQUENCES} {pattern} sequences for {epochs} epochs")
    result = fit(train, model_config, train_config, log_every=10)  # prints the seed's `Epoch N, Loss: X`

    windows = held_out_windows(validation, train_config.context_len, train_config.target_len)
    with torch.inference_mode():
        predicted = result.model.predict(windows.context)
        actual = result.model.encode(windows.target, encoder="target")
    similarities = F.cosine_similarity(predicted, actual).numpy()
    say(f"Prediction similarities: {np.array2string(similarities[:10], precision=4)} ...")
    say(f"Mean similarity: {similarities.mean():.4f}")

    metrics = evaluate(result.model, validation, train_config.context_len, train_config.target_len)
    say("What the cosine does not show (collapse-aware metrics on the validation sequences):")
    for name in ("retrieval", "oracle_retrieval", "retrieval_ratio", "rankme", "embedding_std"):
        say(f"  {name:<18} {metrics[name]:.4f}")
    for name, value in metrics.items():
        if name.startswith("probe_"):
            say(f"  {name:<18} {value:.4f}")

    sequences = [s.numpy() for s in validation.data]
    z = embed_sequences(result.model, list(validation.data))
    examples = range(4)
    files = [
        plots.plot_sequences(sequences, list(validation.kinds), out / "sequences.png"),
        plots.plot_loss(result.losses, out / "loss.png"),
        plots.plot_embeddings(z, list(validation.kinds), out / "embeddings.png", "Representations (PCA)"),
        plots.plot_predictions(
            [windows.context[i].numpy() for i in examples],
            [windows.target[i].numpy() for i in examples],
            [float(similarities[i]) for i in examples],
            out / "predictions.png",
        ),
    ]
    say("Saved " + ", ".join(str(f) for f in files))
    return DemoResult(result.losses, similarities, metrics, files)
