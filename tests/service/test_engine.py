from pathlib import Path

import numpy as np
import pytest

from jepa_model.checkpoint import WEIGHTS_FILE
from service.engine import InferenceEngine
from service.payloads import to_arrays
from tests.factories import add_version, random_sequences
from training.db import SessionFactory
from training.errors import InvalidInput, ModelUnavailable


@pytest.fixture
def engine(factory: SessionFactory, tmp_path: Path):
    with factory.begin() as s:
        for seed in range(3):
            add_version(s, tmp_path, "toy", seed=seed)
    engine = InferenceEngine(factory, tmp_path, cache_size=2)
    yield engine
    engine.close()


def test_recent_versions_stay_loaded_and_the_oldest_is_evicted(engine: InferenceEngine) -> None:
    v1, v2, v3 = (engine.resolve("toy", n, None) for n in (1, 2, 3))
    first = engine.load(v1)
    engine.load(v2)
    assert engine.load(v1) is first  # cached, and now the most recently used
    engine.load(v3)  # evicts v2, the least recently used
    assert list(engine._models) == [v1.version_id, v3.version_id]


def test_a_corrupt_checkpoint_is_unavailable_while_others_serve(engine: InferenceEngine, tmp_path: Path) -> None:
    v1, v2 = engine.resolve("toy", 1, None), engine.resolve("toy", 2, None)
    weights = tmp_path / v2.path / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(ModelUnavailable, match="model 'toy' v2 is unavailable: .*sha256"):
        engine.encode(v2, random_sequences([4]), "target", False)
    assert engine.encode(v1, random_sequences([4]), "target", False).shape == (1, 8)


def test_encode_predict_similarity_shapes(engine: InferenceEngine) -> None:
    served = engine.resolve("toy", None, None)
    batch = random_sequences([3, 7, 5])
    assert engine.encode(served, batch, "context", True).shape == (3, 8)
    predictions, similarities = engine.predict(served, batch, random_sequences([2, 2, 2], seed=1))
    assert predictions.shape == (3, 8) and similarities is not None and similarities.shape == (3,)
    matrix = engine.similarity(served, batch, batch[:2], "target")
    np.testing.assert_allclose(np.diag(matrix[:2, :2]), 1.0, atol=1e-5)


def test_payload_errors_name_sequence_point_and_dimension(engine: InferenceEngine) -> None:
    served = engine.resolve("toy", 1, None)
    with pytest.raises(InvalidInput, match=r"a\[1\]\[2\] has 3 features; model 'toy' v1 expects 2"):
        to_arrays("a", [[[0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0], [1.0, 2.0, 3.0]]], served)
    with pytest.raises(InvalidInput, match=r"b\[0\] is empty"):
        to_arrays("b", [[]], served)
