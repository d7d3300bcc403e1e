import pytest

from jepa_model import DEFAULT_PRESET, PRESETS, ModelConfig, TrainConfig, resolve_configs


def test_the_seed_preset_is_the_seeds_recipe() -> None:
    seed = PRESETS["seed"]
    assert seed.model == ModelConfig(input_dim=2, hidden_dim=64, repr_dim=32, num_layers=2, predictor_hidden_dim=64)
    assert seed.train == TrainConfig(epochs=50, batch_size=32, lr=1e-3, context_len=8, target_len=4, momentum=0.99)
    assert DEFAULT_PRESET in PRESETS


def test_overrides_go_to_the_config_that_owns_them() -> None:
    model, train = resolve_configs("seed", {"hidden_dim": 8, "epochs": 3})
    assert model.hidden_dim == 8 and train.epochs == 3 and train.lr == 1e-3


def test_unknown_keys_and_presets_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown config keys"):
        resolve_configs("seed", {"hidden": 8})
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_configs("nope")
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"input_dim": 2, "width": 3})
