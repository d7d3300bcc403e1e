import pytest
import torch

from jepa_model import JEPA, PRESETS
from jepa_model.serving import OPERATIONS, eager_forwards, traced_forwards


@pytest.mark.parametrize(
    "options",
    [
        PRESETS["seed"].model.to_dict(),
        PRESETS["trajectory"].model.to_dict(),
        {**PRESETS["trajectory"].model.to_dict(), "bidirectional": True},
        {**PRESETS["trajectory"].model.to_dict(), "encoder": "transformer", "hidden_dim": 32},
        {**PRESETS["trajectory"].model.to_dict(), "input_dim": 5, "output_norm": "layer"},
        PRESETS["series"].model.to_dict(),
        {**PRESETS["series"].model.to_dict(), "encoder": "lstm", "num_layers": 1, "input_dim": 5},
    ],
    ids=["seed", "trajectory", "bidirectional", "transformer", "5 features", "series", "series lstm"],
)
def test_traced_forwards_match_the_eager_model_on_unseen_shapes(options: dict) -> None:
    torch.manual_seed(0)
    model = JEPA.from_config(type(PRESETS["seed"].model)(**options)).eval()
    traced, eager = traced_forwards(model), eager_forwards(model)
    assert set(traced) == set(OPERATIONS)
    for shape in [(7, 20, model.config.input_dim), (1, 3, model.config.input_dim)]:
        x = torch.randn(*shape)
        with torch.inference_mode():
            for op in OPERATIONS:
                torch.testing.assert_close(traced[op](x), eager[op](x), atol=1e-5, rtol=1e-4)
