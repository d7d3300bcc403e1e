from dataclasses import fields, replace

import pytest

from jepa_model import DEFAULT_PRESET, PRESET_NAMES, PRESETS, ModelConfig, TrainConfig, pick_preset, resolve_configs
from jepa_model.config import check_trainable, derive_windows

# The longest sequence, as the service passes it (JEPA_MAX_SEQ_LEN): jepa_model has no default of its own.
MAX_LEN = 4096


def test_the_seed_preset_is_the_seeds_recipe() -> None:
    seed = PRESETS["seed"]
    assert seed.model == ModelConfig(input_dim=2, hidden_dim=64, repr_dim=32, num_layers=2, predictor_hidden_dim=64)
    assert seed.train == TrainConfig(epochs=50, batch_size=32, lr=1e-3, context_len=8, target_len=4, momentum=0.99)
    assert DEFAULT_PRESET in PRESET_NAMES


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


@pytest.mark.parametrize(
    ("input_dim", "max_len", "picked"),
    [(2, 20, "trajectory"), (3, 64, "trajectory"), (2, 65, "series"), (1, 24, "series"), (12, 29, "series")],
)
def test_default_picks_a_preset_by_the_data(input_dim: int, max_len: int, picked: str) -> None:
    assert pick_preset("default", input_dim, max_len) == picked
    assert pick_preset("seed", input_dim, max_len) == "seed"  # a named preset is what it says
    assert resolve_configs("default", {}, (input_dim, max_len)) == resolve_configs(picked)


def test_default_needs_the_data_to_pick() -> None:
    with pytest.raises(ValueError, match="picks a recipe by the data"):
        resolve_configs("default")


def test_asking_for_epochs_replaces_a_step_budget() -> None:
    assert resolve_configs("series")[1].steps is not None
    assert resolve_configs("series", {"epochs": 3})[1].steps is None
    assert resolve_configs("series", {"epochs": 3, "steps": 7})[1].steps == 7


@pytest.mark.parametrize(
    ("shortest", "fixed", "expected"),
    [
        (12, {}, (8, 4)),  # the preset's windows fit as they are
        (20, {}, (8, 4)),
        (150, {}, (37, 18)),  # a quarter and an eighth of long sequences
        (5000, {}, (256, 64)),  # capped
        (7, {}, (5, 2)),  # shrunk in proportion, never refused
        (2, {}, (1, 1)),
        (7, {"target_len": 4}, (3, 4)),  # what was asked for stays; the other window gives way
        (7, {"context_len": 6}, (6, 1)),
    ],
)
def test_windows_follow_the_data(shortest: int, fixed: dict, expected: tuple[int, int]) -> None:
    context, target = fixed.get("context_len", 8), fixed.get("target_len", 4)
    assert derive_windows(shortest, context, target, frozenset(fixed)) == expected


@pytest.mark.parametrize("fixed", [{"context_len": 7}, {"context_len": 6, "target_len": 2}])
def test_windows_that_were_asked_for_and_cannot_fit_are_refused(fixed: dict) -> None:
    with pytest.raises(ValueError, match="exceeds the shortest sequence"):
        derive_windows(7, fixed.get("context_len", 8), fixed.get("target_len", 4), frozenset(fixed))


def test_each_data_parallel_worker_needs_two_rows_of_every_batch() -> None:
    assert TrainConfig(workers=4, batch_size=8).workers == 4
    with pytest.raises(ValueError, match="workers=4 needs a batch_size of at least 8"):
        TrainConfig(workers=4, batch_size=7)
    with pytest.raises(ValueError, match="workers"):
        TrainConfig(workers=0)


def test_every_preset_is_trainable_on_data_its_windows_fit() -> None:
    for preset in PRESETS.values():
        check_trainable(preset.model, preset.train, preset.train.window_len, executor="local", max_len=MAX_LEN)


# Each of these once got a 202 from POST /train and then failed in the worker (issue 26).
@pytest.mark.parametrize(
    ("model", "train", "says"),
    [
        (
            PRESETS["trajectory"].model,
            replace(PRESETS["trajectory"].train, max_offset=4096),
            r"max_offset \(4096\) must be less than predictor_offsets \(5\)",
        ),
        (
            replace(PRESETS["seed"].model, output_norm="batch"),
            replace(PRESETS["seed"].train, batch_size=1),
            "batch_size 1 leaves no statistics over a batch for output_norm 'batch'",
        ),
        (PRESETS["seed"].model, replace(PRESETS["seed"].train, loss="infonce", temperature=1e-300), "temperature"),
        (PRESETS["seed"].model, replace(PRESETS["seed"].train, steps=True), "steps must be a number"),
        (PRESETS["seed"].model, replace(PRESETS["seed"].train, context_len=30), "exceeds the shortest sequence"),
    ],
)
def test_configs_that_fail_at_run_time_are_refused_by_the_one_check(
    model: ModelConfig, train: TrainConfig, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        check_trainable(model, train, shortest=20, max_len=MAX_LEN)


def test_data_parallel_workers_are_refused_only_where_the_executor_cannot_run_them() -> None:
    model, train = PRESETS["seed"].model, replace(PRESETS["seed"].train, workers=2)
    check_trainable(model, train, 20, executor="ray", max_len=MAX_LEN)
    check_trainable(model, train, 20, max_len=MAX_LEN)  # executor unknown: the worker that claims it says
    with pytest.raises(ValueError, match="needs JEPA_EXECUTOR=ray"):
        check_trainable(model, train, 20, executor="local", max_len=MAX_LEN)


def test_a_batch_of_one_trains_where_nothing_needs_batch_statistics() -> None:
    check_trainable(PRESETS["seed"].model, replace(PRESETS["seed"].train, batch_size=1), 20, max_len=MAX_LEN)
    for train in (
        replace(PRESETS["seed"].train, batch_size=1, target_norm="batch"),
        replace(PRESETS["seed"].train, batch_size=1, var_weight=0.1),
        replace(PRESETS["series"].train, batch_size=1),  # the forecaster standardises over the batch
    ):
        model = PRESETS["series"].model if train.steps else PRESETS["seed"].model
        with pytest.raises(ValueError, match="batch_size 1 leaves no statistics"):
            check_trainable(model, train, 20, max_len=MAX_LEN)


def test_the_temperature_has_a_floor_where_its_logits_stay_finite() -> None:
    bound = {f.name: f.metadata for f in fields(TrainConfig)}["temperature"]
    assert bound["ge"] == 0.01
    infonce = replace(PRESETS["seed"].train, loss="infonce", temperature=0.01)
    check_trainable(PRESETS["seed"].model, infonce, 20, max_len=MAX_LEN)


def test_lengths_in_steps_are_bounded_by_the_longest_sequence_passed_in_and_nothing_else() -> None:
    model, train = PRESETS["series"].model, replace(PRESETS["series"].train, max_crop_len=6000, steps=1)
    with pytest.raises(ValueError, match=r"max_crop_len must be at most 4096 \(JEPA_MAX_SEQ_LEN\), got 6000"):
        check_trainable(model, train, 10_000, max_len=4096)
    check_trainable(model, train, 10_000, max_len=8192)
    steps = {f.name for f in fields(TrainConfig) if f.metadata["steps"]}
    assert steps == {"context_len", "target_len", "max_offset", "min_context_len", "max_crop_len", "mask_block_len"}
    assert not any("le" in f.metadata for f in fields(TrainConfig) if f.name in steps)  # no second bound


def test_a_choice_outside_its_options_is_refused_when_the_config_is_made() -> None:
    with pytest.raises(ValueError, match=r"loss must be one of \('cosine', .*\), got 'l3'"):
        replace(PRESETS["seed"].train, loss="l3")
    with pytest.raises(ValueError, match="output_norm must be one of"):
        replace(PRESETS["seed"].model, output_norm="group")


def test_a_short_service_limit_bounds_the_crop_of_step_models_only() -> None:
    """A window model never crops: its default max_crop_len (256) must not trip JEPA_MAX_SEQ_LEN=12."""
    window, steps = ModelConfig(objective="window"), ModelConfig(objective="steps", pooling="mean")
    check_trainable(window, TrainConfig(), shortest=12, max_len=12)
    with pytest.raises(ValueError, match="max_crop_len must be at most 12"):
        check_trainable(steps, TrainConfig(), shortest=12, max_len=12)
    check_trainable(steps, TrainConfig(max_crop_len=12), shortest=12, max_len=12)
