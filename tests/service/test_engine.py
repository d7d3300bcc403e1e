import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jepa_model.checkpoint import WEIGHTS_FILE
from service.engine import InferenceEngine, length_groups
from tests.factories import add_version, random_sequences
from training.db import SessionFactory
from training.errors import ModelUnavailable

Scenario = Callable[[InferenceEngine], Awaitable[Any]]


@pytest.fixture
def run(factory: SessionFactory, tmp_path: Path) -> Callable[..., Any]:
    """Run an async scenario against a started engine, closed afterwards."""
    with factory.begin() as s:
        for seed in range(3):
            add_version(s, tmp_path, "toy", seed=seed)

    def run_scenario(scenario: Scenario, **options: Any) -> Any:
        async def main() -> Any:
            engine = InferenceEngine(factory, tmp_path, cache_size=2, **options)
            engine.start()
            try:
                return await scenario(engine)
            finally:
                await engine.aclose()

        return asyncio.run(main())

    return run_scenario


def test_recent_versions_stay_loaded_and_the_oldest_is_evicted(run: Callable[..., Any]) -> None:
    async def scenario(engine: InferenceEngine) -> None:
        v1, v2, v3 = (engine.resolve("toy", n, None) for n in (1, 2, 3))
        first = await engine.run(engine.load, v1)
        await engine.run(engine.load, v2)
        assert await engine.run(engine.load, v1) is first  # cached, and now the most recently used
        await engine.run(engine.load, v3)  # evicts v2, the least recently used
        assert list(engine._models) == [v1.version_id, v3.version_id]

    run(scenario)


def test_a_corrupt_checkpoint_is_unavailable_while_others_serve(run: Callable[..., Any], tmp_path: Path) -> None:
    async def scenario(engine: InferenceEngine) -> None:
        v1, v2 = engine.resolve("toy", 1, None), engine.resolve("toy", 2, None)
        weights = tmp_path / v2.path / WEIGHTS_FILE
        weights.write_bytes(weights.read_bytes()[:-64])
        with pytest.raises(ModelUnavailable, match="model 'toy' v2 is unavailable: .*sha256"):
            await engine.encode(v2, random_sequences([4]), "target", False)
        assert (await engine.encode(v1, random_sequences([4]), "target", False)).shape == (1, 8)

    run(scenario)


def test_encode_predict_similarity_shapes(run: Callable[..., Any]) -> None:
    async def scenario(engine: InferenceEngine) -> None:
        served = engine.resolve("toy", None, None)
        batch = random_sequences([3, 7, 5])
        assert (await engine.encode(served, batch, "context", True)).shape == (3, 8)
        predictions, similarities = await engine.predict(served, batch, random_sequences([2, 2, 2], seed=1))
        assert predictions.shape == (3, 8) and similarities is not None and similarities.shape == (3,)
        matrix = await engine.similarity(served, batch, batch[:2], "target")
        np.testing.assert_allclose(np.diag(matrix[:2, :2]), 1.0, atol=1e-5)

    run(scenario)


def test_batched_requests_get_exactly_what_they_would_get_alone(run: Callable[..., Any]) -> None:
    """Concurrent requests share forward passes; each still gets its own rows, in order."""
    requests = [random_sequences([6] * n + [4], seed=n) for n in range(1, 30)]

    async def scenario(engine: InferenceEngine) -> tuple[list[np.ndarray], list[np.ndarray], int]:
        served = engine.resolve("toy", 1, None)
        alone = [await engine.encode(served, r, "target", False) for r in requests]
        before = engine.batcher.stats.batches
        together = await asyncio.gather(*(engine.encode(served, r, "target", False) for r in requests))
        return alone, list(together), engine.batcher.stats.batches - before

    alone, together, batches = run(scenario, max_wait_s=0.01)
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert batches <= 4  # 29 requests x 2 lengths, shared passes (at most 256 sequences each)


def test_forward_passes_are_capped_in_steps_and_answers_do_not_change(run: Callable[..., Any]) -> None:
    """A request larger than one pass's step budget runs as several passes, each within it."""
    sequences = random_sequences([50] * 7 + [3] * 40, seed=1)

    async def scenario(engine: InferenceEngine) -> tuple[np.ndarray, np.ndarray, list[int]]:
        served = engine.resolve("toy", 1, None)
        capped = await engine.encode(served, sequences, "target", False)
        engine.batcher.max_steps = 1 << 30
        whole = await engine.encode(served, sequences, "target", False)
        return capped, whole, sizes

    sizes: list[int] = []
    capped, whole, sizes = run(scenario, max_batch_steps=120, on_batch=sizes.append)
    np.testing.assert_allclose(capped, whole, atol=1e-5)
    # 120 steps a pass: 2 sequences of 50 steps, or 40 of 3; uncapped, one pass per length.
    assert sizes == [2, 2, 2, 1, 40, 7, 40]


def test_a_full_queue_refuses_at_once(run: Callable[..., Any]) -> None:
    from training.errors import Overloaded

    async def scenario(engine: InferenceEngine) -> list[Any]:
        served = engine.resolve("toy", 1, None)
        return await asyncio.gather(
            *(engine.encode(served, random_sequences([5], seed=i), "target", False) for i in range(20)),
            return_exceptions=True,
        )

    results = run(scenario, max_queue=4, max_wait_s=0.05)
    refused = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if isinstance(r, np.ndarray)]
    assert refused and served and len(refused) + len(served) == 20


def test_sequences_are_grouped_by_length_without_padding() -> None:
    sequences = random_sequences([3, 5, 3, 5, 7])
    groups = length_groups(sequences)
    assert [(list(idx), x.shape) for idx, x in groups] == [([0, 2], (2, 3, 2)), ([1, 3], (2, 5, 2)), ([4], (1, 7, 2))]
    rectangular = np.zeros((4, 6, 2), np.float32)
    assert [x.shape for _, x in length_groups(rectangular)] == [(4, 6, 2)]


def test_after_a_quiet_spell_an_alias_change_is_seen_by_the_next_request(
    run: Callable[..., Any], factory: SessionFactory
) -> None:
    from training.registry import set_alias

    def point(number: int) -> None:
        with factory.begin() as session:
            set_alias(session, "toy", "prod", number)

    async def scenario(engine: InferenceEngine) -> list[int]:
        point(1)
        first = await engine.resolve_async("toy", "prod", None)
        point(2)
        await asyncio.sleep(0.25)  # over twice the TTL, with no request in between
        second = await engine.resolve_async("toy", "prod", None)
        return [first.number, second.number]

    assert run(scenario, resolve_ttl_s=0.1) == [1, 2]
