import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from jepa_model import JEPA, ModelConfig, TrainConfig, __version__, save_checkpoint
from jepa_model.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from service import engine as engine_module
from service.engine import SHORT_BUCKET_LEN, InferenceEngine, length_bucket, pieces
from service.settings import Settings
from service.timing import RequestTiming, request_timing
from tests.factories import add_version, random_sequences
from tests.jepa_model.test_serving import CONFIGS
from training.errors import InvalidInput, ModelUnavailable
from training.store.artifacts import FileStore
from training.store.db import SessionFactory, in_transaction
from training.store.registry import register_version

# The registry is scaffolding here: the database matrix runs where the database is the subject.
pytestmark = pytest.mark.database_incidental

Scenario = Callable[[InferenceEngine], Awaitable[Any]]


@pytest.fixture
def run(factory: SessionFactory, tmp_path: Path) -> Callable[..., Any]:
    """Run an async scenario against a started engine, closed afterwards."""
    with factory.begin() as s:
        for seed in range(3):
            add_version(s, tmp_path, "toy", seed=seed)

    def run_scenario(scenario: Scenario, on_batch: Callable[[int], None] | None = None, **settings: Any) -> Any:
        async def main() -> Any:
            configured = Settings(**{"model_cache_size": 2, **settings})
            engine = InferenceEngine.from_settings(factory, FileStore(tmp_path), configured, on_batch=on_batch)
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

    alone, together, batches = run(scenario, batch_wait_ms=10)
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert batches <= 4  # 29 requests x 2 lengths, shared passes (at most 256 sequences each)


def test_forward_passes_are_capped_in_steps_and_answers_do_not_change(run: Callable[..., Any]) -> None:
    """A request larger than one pass's step budget runs as several passes, each within it."""
    sequences = random_sequences([100] * 7 + [3] * 40, seed=1)

    async def scenario(engine: InferenceEngine) -> tuple[np.ndarray, np.ndarray, list[int]]:
        served = engine.resolve("toy", 1, None)
        capped = await engine.encode(served, sequences, "target", False)
        engine.batcher.max_steps = 1 << 30
        whole = await engine.encode(served, sequences, "target", False)
        return capped, whole, sizes

    sizes: list[int] = []
    capped, whole, sizes = run(scenario, micro_batch_steps=240, on_batch=sizes.append)
    np.testing.assert_allclose(capped, whole, atol=1e-5)
    # 240 steps a pass: 2 sequences of 100 steps at a time, then the 40 of 3 (another length
    # bucket); uncapped, one pass per bucket.
    assert sizes == [2, 2, 2, 1, 40, 7, 40]


def test_a_full_queue_refuses_at_once(run: Callable[..., Any]) -> None:
    from training.errors import Overloaded

    async def scenario(engine: InferenceEngine) -> list[Any]:
        served = engine.resolve("toy", 1, None)
        return await asyncio.gather(
            *(engine.encode(served, random_sequences([5], seed=i), "target", False) for i in range(20)),
            return_exceptions=True,
        )

    results = run(scenario, max_queue=4, batch_wait_ms=50)
    refused = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if isinstance(r, np.ndarray)]
    assert refused and served and len(refused) + len(served) == 20


def test_a_request_of_many_passes_counts_once_against_the_queue(run: Callable[..., Any]) -> None:
    """A score whose windows make far more passes than JEPA_MAX_QUEUE is answered, not refused by
    its own pieces (it once got 429 every time)."""

    async def scenario(engine: InferenceEngine) -> list[np.ndarray]:
        served = engine.resolve("toy", 1, None)
        return await engine.score(served, random_sequences([400]), 8, 4, 1, 10**6)

    sizes: list[int] = []
    (scores,) = run(scenario, max_queue=2, micro_batch_steps=64, on_batch=sizes.append)
    assert len(sizes) > 2 * 2 and np.isfinite(scores[11:]).all()  # 389 windows, 8 or 5 to a pass


def test_length_buckets_are_half_octaves_above_one_for_short_sequences() -> None:
    """Within a bucket the longest length is under sqrt(2) times the shortest: padding to it wastes
    less than 1.41x. Below SHORT_BUCKET_LEN steps a pass's fixed cost outweighs padding, so every
    shorter sequence shares one."""
    buckets: dict[int, list[int]] = {}
    for length in range(1, 5000):
        buckets.setdefault(length_bucket(length), []).append(length)
    assert sorted(buckets) == list(buckets)  # longer lengths, later buckets
    short, *longer = buckets.values()
    assert short == list(range(1, SHORT_BUCKET_LEN))
    assert all(max(lengths) < math.sqrt(2) * min(lengths) for lengths in longer)
    assert longer[0][0] == SHORT_BUCKET_LEN


def test_a_request_is_cut_by_bucket_and_capacity_longest_first() -> None:
    sequences = random_sequences([70, 95, 70, 130, 140, 400])
    cut = pieces(sequences, lambda length: 100)
    assert [list(idx) for idx, _ in cut] == [[0, 2], [1], [4, 3], [5]]
    assert [type(x).__name__ for _, x in cut] == ["ndarray", "ndarray", "list", "ndarray"]  # lists only when mixed
    assert cut[0][1].shape == (2, 70, 2)
    # 400 steps a pass: two of 140, or three of 130
    capped = pieces(random_sequences([130, 140, 140, 130, 140]), lambda length: 400 // length)
    assert [list(idx) for idx, _ in capped] == [[1, 2], [4, 0], [3]]
    short = pieces(random_sequences([3, 60, 1, 17]), lambda length: 100)  # under SHORT_BUCKET_LEN: one
    assert [list(idx) for idx, _ in short] == [[1, 3, 0, 2]]
    rectangular = np.zeros((5, 6, 2), np.float32)
    assert [(list(idx), x.shape) for idx, x in pieces(rectangular, lambda length: 3)] == [
        ([0, 1, 2], (3, 6, 2)),
        ([3, 4], (2, 6, 2)),
    ]


def add_model(factory: SessionFactory, data_dir: Path, name: str, options: dict[str, Any]) -> None:
    """Register an untrained model built from `options` (a ModelConfig's fields)."""
    torch.manual_seed(0)
    model = JEPA.from_config(ModelConfig(**{**options, "hidden_dim": 16, "predictor_hidden_dim": 16})).eval()
    relative = Path("checkpoints") / name
    sha256 = save_checkpoint(model, data_dir / relative, TrainConfig(), "seed", __version__)
    config = json.loads((data_dir / relative / CONFIG_FILE).read_text())
    in_transaction(
        factory,
        lambda s: register_version(s, name, config=config, metrics={}, sha256=sha256, path=str(relative), job_id=None),
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # what is tested here is no database's
@pytest.mark.parametrize(
    ("exact", "names"),
    # one model of each encoder kind here; tests/jepa_model/test_serving.py pads every preset and option
    [(True, ["trajectory", "transformer", "series", "series lstm"]), (False, ["seed", "series"])],
    ids=["padded", "by exact length"],
)
def test_concurrent_mixed_length_requests_get_what_each_sequence_gets_alone(
    run: Callable[..., Any],
    factory: SessionFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    exact: bool,
    names: list[str],
) -> None:
    """Every encoder kind, every operation: requests of mixed lengths share padded passes (or, for
    a model padding would change, passes per exact length), and each sequence's answer is what it
    gets alone."""
    if not exact:
        monkeypatch.setattr(engine_module, "pads_exactly", lambda model: False)
    for name in names:
        add_model(factory, tmp_path, name.replace(" ", "-"), CONFIGS[name])
    rng = np.random.default_rng(0)
    requests = [random_sequences(list(rng.integers(4, 24, size=3)), seed=i) for i in range(8)]
    lengths = {len(seq) for request in requests for seq in request}

    async def scenario(engine: InferenceEngine) -> None:
        for name in names:
            served = engine.resolve(name.replace(" ", "-"), None, None)
            dim = CONFIGS[name].get("input_dim", 2)
            inputs = [[np.repeat(seq[:, :1], dim, axis=1) for seq in request] for request in requests]
            calls = {
                "target": lambda xs, s=served: engine.encode(s, xs, "target", False),
                "context": lambda xs, s=served: engine.encode(s, xs, "context", False),
                "predict": lambda xs, s=served: engine.predict(s, xs, None),
            }
            for op, call in calls.items():
                engine.batcher.max_wait_s = 0.0  # alone: no company to wait for
                alone = [np.concatenate([_first(await call([seq])) for seq in request]) for request in inputs]
                engine.batcher.max_wait_s = 0.05
                before = engine.batcher.stats.batches
                together = await asyncio.gather(*(call(request) for request in inputs))
                assert engine.batcher.stats.batches - before < len(lengths), "lengths were not batched together"
                for a, b in zip(alone, together, strict=True):
                    np.testing.assert_allclose(_first(b), a, atol=1e-5, rtol=0, err_msg=f"{name} {op}")

    run(scenario)


def _first(answer: np.ndarray | tuple[np.ndarray, Any]) -> np.ndarray:
    """The embeddings of an encode (an array) or predict (a pair) answer."""
    return answer[0] if isinstance(answer, tuple) else answer


def test_each_request_is_told_how_long_it_queued_and_ran(run: Callable[..., Any]) -> None:
    async def timed(engine: InferenceEngine, sequences: list[np.ndarray]) -> RequestTiming:
        timing = RequestTiming()
        request_timing.set(timing)  # in this task's own context, as the HTTP middleware does
        await engine.encode(engine.resolve("toy", 1, None), sequences, "target", False)
        return timing

    async def scenario(engine: InferenceEngine) -> list[RequestTiming]:
        await engine.encode(engine.resolve("toy", 1, None), random_sequences([4]), "target", False)  # loads it
        return list(await asyncio.gather(*(timed(engine, random_sequences([4, 9, 30], seed=i)) for i in range(3))))

    timings = run(scenario)
    assert all(t.inference_s > 0 and t.queue_s >= 0 for t in timings)
    assert request_timing.get() is None  # set only inside each request's task


def test_after_a_quiet_spell_an_alias_change_is_seen_by_the_next_request(
    run: Callable[..., Any], factory: SessionFactory
) -> None:
    from training.store.registry import set_alias

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


def test_an_engine_from_settings_takes_every_serving_option_and_overrides(
    factory: SessionFactory, tmp_path: Path
) -> None:
    settings = Settings(micro_batch=7, micro_batch_steps=700, batch_wait_ms=3.0, max_queue=9, model_cache_size=4)
    engine = InferenceEngine.from_settings(factory, FileStore(tmp_path), settings, cache_size=11)
    batcher = engine.batcher
    assert (batcher.max_batch, batcher.max_steps, batcher.max_wait_s) == (7, 700, 0.003)
    assert (batcher.max_queue, engine.cache_size) == (9, 11)


def test_short_buckets_of_one_version_and_operation_merge_and_longer_ones_do_not() -> None:
    from service.engine import MERGED_BELOW_LEN, merge_group

    def key(length: int, version: str = "v1", operation: str = "target") -> tuple[str, str, int]:
        return (version, operation, length_bucket(length))

    assert merge_group(key(5)) == merge_group(key(70)) == merge_group(key(MERGED_BELOW_LEN - 1))
    assert merge_group(key(5)) != merge_group(key(5, version="v2"))
    assert merge_group(key(5)) != merge_group(key(5, operation="context"))
    assert merge_group(key(MERGED_BELOW_LEN)) == key(MERGED_BELOW_LEN)  # its own group
    assert merge_group(key(MERGED_BELOW_LEN)) != merge_group(key(MERGED_BELOW_LEN - 1))


def test_anomalies_use_the_memory_where_a_version_has_one(factory: SessionFactory, tmp_path: Path) -> None:
    from jepa_model.memory import build_memory, memory_scores
    from tests.jepa_model.test_memory import sine, step_model

    remembering = step_model()
    build_memory(remembering.target_encoder, remembering.memory, [sine(2000)], seed=0)
    relative = Path("checkpoints") / "sensor" / "v1"
    sha256 = save_checkpoint(remembering, tmp_path / relative, TrainConfig(), "series", __version__)
    with factory.begin() as s:
        add_version(s, tmp_path, "toy")
        register_version(
            s, "sensor", config=json.loads((tmp_path / relative / CONFIG_FILE).read_text()), metrics={},
            sha256=sha256, path=str(relative), job_id=None,
        )  # fmt: skip
    series = [sine(300, seed=1), sine(120, seed=2)]

    async def scenario(engine: InferenceEngine) -> None:
        sensor, toy = engine.resolve("sensor", None, None), engine.resolve("toy", None, None)
        scored = await engine.anomalies(sensor, series, "auto", None, None, 1, 10_000)
        assert (scored.method, scored.window, len(scored.calibration)) == ("memory", 25, 101)
        for got, x in zip(scored.scores, series, strict=True):
            np.testing.assert_allclose(got, memory_scores(remembering.target_encoder, remembering.memory, x))
        with pytest.raises(InvalidInput, match="JEPA_MAX_SCORE_POINTS"):
            await engine.anomalies(sensor, series, "auto", None, None, 1, 400)
        forecast = await engine.anomalies(sensor, series, "forecast", 8, 4, 2, 10_000)
        assert (forecast.method, forecast.context_len, forecast.stride) == ("forecast", 8, 2)
        toy_series = random_sequences([40])
        assert (await engine.anomalies(toy, toy_series, "auto", None, None, 1, 10**6)).method == "forecast"
        with pytest.raises(InvalidInput, match="no anomaly memory"):
            await engine.anomalies(toy, toy_series, "memory", None, None, 1, 10**6)

    async def main() -> None:
        engine = InferenceEngine.from_settings(factory, FileStore(tmp_path), Settings())
        engine.start()
        try:
            await scenario(engine)
        finally:
            await engine.aclose()

    asyncio.run(main())
