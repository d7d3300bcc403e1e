"""Data-parallel training (jepa_model.parallel) across real processes joined by gloo."""

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from jepa_model import ToySequenceDataset, fit, resolve_configs
from jepa_model.parallel import Shard

# 96 sequences in global batches of 32: every process of 2 or 3 has rows in every batch.
DATA = {"num_samples": 96, "seq_len": 16, "pattern_type": "mixed", "seed": 3}
SMALL = {"hidden_dim": 16, "repr_dim": 16, "pool_blocks": 0, "epochs": 3, "batch_size": 32, "seed": 11}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(preset: str, shard: Shard) -> tuple[dict[str, torch.Tensor], list[float]]:
    model_config, train_config = resolve_configs(preset, SMALL)
    model_config = type(model_config)(**{**model_config.to_dict(), "input_dim": 2})
    torch.set_num_threads(1)
    result = fit(ToySequenceDataset(**DATA), model_config, train_config, shard=shard)
    return result.model.state_dict(), result.losses


def _process(rank: int, world: int, port: int, preset: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        state, losses = train(preset, Shard(rank, world))
        state = {k: v.contiguous() for k, v in state.items()}
        save_file(state, f"{out}/rank{rank}.safetensors", metadata={"losses": ",".join(map(repr, losses))})
    finally:
        dist.destroy_process_group()


def train_in_processes(tmp_path: Path, preset: str, world: int) -> list[tuple[dict[str, torch.Tensor], list[float]]]:
    mp.spawn(_process, args=(world, free_port(), preset, str(tmp_path)), nprocs=world, join=True)
    results = []
    for rank in range(world):
        path = tmp_path / f"rank{rank}.safetensors"
        with safe_open(str(path), "pt") as f:
            losses = [float(v) for v in f.metadata()["losses"].split(",")]
        results.append((load_file(path), losses))
    return results


@pytest.mark.parametrize("world", [2, 3])
def test_data_parallel_training_matches_one_process_on_the_same_global_batch(tmp_path: Path, world: int) -> None:
    alone_state, alone_losses = train("seed", Shard())
    results = train_in_processes(tmp_path, "seed", world)
    for state, losses in results:
        assert losses == pytest.approx(alone_losses, rel=1e-4)
        for name, tensor in alone_state.items():
            torch.testing.assert_close(state[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_step_models_train_data_parallel_with_replicas_kept_identical(tmp_path: Path) -> None:
    (first, first_losses), (second, second_losses) = train_in_processes(tmp_path, "series", 2)
    assert first_losses == second_losses and all(torch.isfinite(torch.tensor(first_losses)))
    for name, tensor in first.items():
        torch.testing.assert_close(second[name], tensor, rtol=0, atol=0, msg=name)


def test_a_shard_weights_its_rows_so_the_average_is_the_whole_batchs_mean() -> None:
    losses = torch.rand(32, dtype=torch.float64)  # one per row of a batch of 32
    shards = [Shard(rank, 3) for rank in range(3)]
    assert [s.count(32) for s in shards] == [11, 11, 10]
    averaged = sum(s.weight(32) * losses[s.rows].mean() for s in shards) / 3  # what DDP's all-reduce makes
    assert float(averaged) == pytest.approx(float(losses.mean()))
    assert sorted(i for s in shards for i in range(32)[s.rows]) == list(range(32))
    with pytest.raises(ValueError, match="rank"):
        Shard(3, 3)


def test_data_parallel_fit_refuses_an_unseeded_run() -> None:
    model_config, train_config = resolve_configs("seed", {**SMALL, "seed": None})
    with pytest.raises(ValueError, match="seed"):
        fit(ToySequenceDataset(**DATA), model_config, train_config, shard=Shard(0, 2))
