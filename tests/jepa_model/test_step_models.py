"""Step models: masks, crops, pooling, training on a step budget, and the standardised embedding."""

import pytest
import torch

from jepa_model import JEPA, ModelConfig, SequenceDataset, ToySequenceDataset, TrainConfig, fit, pad_sequences
from jepa_model.masking import block_mask, random_crops
from jepa_model.step_encoders import pool_steps, steps_above
from jepa_model.train import plan_rounds, raw_embeddings
from tests.factories import random_sequences


def step_model(**options: object) -> JEPA:
    torch.manual_seed(0)
    config = {"objective": "steps", "encoder": "conv", "input_dim": 3, "hidden_dim": 16, "repr_dim": 10}
    return JEPA.from_config(ModelConfig(**{**config, "num_layers": 3, "pooling": "pyramid", **options})).eval()


def test_block_masks_hide_about_the_ratio_and_never_padding() -> None:
    lengths = torch.tensor([200, 50, 2, 120])
    hidden = block_mask(lengths, 200, 0.5, None, torch.Generator().manual_seed(0))
    valid = torch.arange(200)[None, :] < lengths[:, None]
    assert not bool((hidden & ~valid).any())
    assert not bool(hidden[:, 0].any())  # something is always left to see
    assert bool(hidden.any(dim=1).all())  # and something to predict
    many = block_mask(torch.full((256,), 200), 200, 0.5, None, torch.Generator().manual_seed(0))
    assert 0.45 < many.float().mean().item() < 0.55  # a single row varies with its few long blocks


def test_blocks_are_contiguous_runs_of_the_asked_length() -> None:
    hidden = block_mask(torch.tensor([400]), 400, 0.3, 8, torch.Generator().manual_seed(1))[0]
    runs, run = [], 0
    for h in hidden.tolist() + [False]:
        if h:
            run += 1
        elif run:
            runs, run = runs + [run], 0
    assert min(runs) >= 8 or runs[0] < 8  # overlapping blocks merge; only a clipped one is shorter


def test_crops_fit_each_sequence_and_keep_its_steps_in_order() -> None:
    x = torch.arange(30, dtype=torch.float32).reshape(1, 30, 1).repeat(3, 1, 1)
    lengths = torch.tensor([30, 10, 4])
    crops, crop_lengths = random_crops(x, lengths, 8, torch.Generator().manual_seed(0))
    assert crop_lengths.tolist() == [8, 8, 4]
    for row, length in zip(crops, crop_lengths.tolist(), strict=True):
        steps = row[:length, 0]
        assert torch.equal(steps - steps[0], torch.arange(length, dtype=torch.float32))


def test_pyramid_pooling_is_max_mean_and_the_mean_of_each_third() -> None:
    steps = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1)  # one dimension: 0..5
    pooled = pool_steps(steps, None, "pyramid")
    assert pooled.tolist() == [[5.0, 2.5, 0.5, 2.5, 4.5]]
    keep = torch.tensor([[False, False, True, True, True, False]])  # thirds of the kept steps only
    assert pool_steps(steps, keep, "pyramid").tolist() == [[4.0, 3.0, 2.0, 3.0, 4.0]]


def test_ppv_lspv_pooling_counts_the_kept_steps_above_each_threshold_and_their_longest_stretch() -> None:
    steps = torch.tensor([[0.0, 3.0, 1.0, 4.0, 5.0, 2.0]])[:, :, None]  # one dimension
    thresholds = torch.tensor([[0.5], [2.5], [4.5]])  # (L, S)
    pooled = pool_steps(steps, None, "max_mean_ppv_lspv", thresholds)
    ppv, lspv = [5 / 6, 3 / 6, 1 / 6], [5 / 6, 2 / 6, 1 / 6]  # above 0.5: steps 1-5, one stretch of 5
    torch.testing.assert_close(pooled, torch.tensor([[5.0, 2.5, *ppv, *lspv]]))
    keep = torch.tensor([[True, True, True, True, False, False]])  # padding is never above anything
    pooled = pool_steps(steps, keep, "max_mean_ppv_lspv", thresholds)
    torch.testing.assert_close(pooled, torch.tensor([[4.0, 2.0, 0.75, 0.5, 0.0, 0.75, 0.25, 0.0]]))
    with pytest.raises(ValueError, match="thresholds"):
        pool_steps(steps, None, "max_mean_ppv_lspv")


def test_longest_stretches_are_counted_per_row_and_dimension() -> None:
    from jepa_model.step_encoders import steps_above

    S = 5
    steps = torch.zeros(2, 9, S)
    steps[0, 2:7, -1] = 1.0  # 5 in a row in the last dimension
    steps[1, ::2, 0] = 1.0  # every other step: stretches of 1
    keep = torch.ones(2, 9, dtype=torch.bool)
    steps[1, 5:, 2] = 1.0  # a stretch up to the last kept step...
    keep[1, 7:] = False  # ...which padding cuts at 2
    steps[0, :, 3] = 1.0  # every step
    counts, longest = steps_above(steps, keep, torch.full((1, S), 0.5))  # (B, S) each
    assert longest.tolist() == [[0, 0, 0, 9, 5], [1, 0, 2, 0, 0]]
    assert counts.tolist() == [[0, 0, 0, 9, 5], [4, 0, 2, 0, 0]]


def test_ppv_thresholds_follow_the_training_steps_and_reach_both_encoders() -> None:
    data = SequenceDataset(random_sequences([40, 35, 50, 45], dim=3))
    config = ModelConfig(
        objective="steps", encoder="conv", input_dim=3, hidden_dim=8, repr_dim=64, pooling="max_mean_ppv_lspv"
    )  # 8 dimensions a step: with 2, a layer-normed step would be (-1, 1) or (1, -1) and nothing between
    model = fit(data, config, TrainConfig(steps=30, batch_size=4, seed=0)).model
    target, context = model.target_encoder, model.context_encoder
    assert not torch.equal(target.step_mean, torch.zeros(8)) and not torch.equal(target.step_std, torch.ones(8))
    assert torch.equal(target.ppv_thresholds(), context.ppv_thresholds())
    steps = target.steps(torch.from_numpy(random_sequences([300], dim=3)[0])[None])[0]  # (T, S)
    share_above = (steps > target.ppv_thresholds()[:, None, :]).float().mean(1)  # (L, S)
    assert bool((share_above[0] >= share_above[1]).all()) and bool((share_above[1] >= share_above[2]).all())
    # About the quartiles of each dimension over the training steps, on average over dimensions.
    assert share_above.mean(1).tolist() == pytest.approx([0.75, 0.5, 0.25], abs=0.15)
    assert not hasattr(step_model(pooling="max_mean").target_encoder, "step_mean")  # older poolings: no buffers


@pytest.mark.parametrize("encoder", ["conv", "lstm"])
def test_predictions_of_a_ragged_batch_match_each_context_alone(encoder: str) -> None:
    model = step_model(encoder=encoder, num_layers=1 if encoder == "lstm" else 3)
    sequences = random_sequences([9, 3, 6], dim=3)
    x = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(s) for s in sequences], batch_first=True)
    lengths = torch.tensor([9, 3, 6])
    with torch.no_grad():
        batched = model.predict(x, lengths)
        for i, seq in enumerate(sequences):
            torch.testing.assert_close(batched[i], model.predict(torch.from_numpy(seq)[None])[0], atol=1e-5, rtol=1e-4)


def test_a_step_budget_is_reported_in_rounds_whatever_the_dataset_size() -> None:
    rounds = plan_rounds(TrainConfig(steps=123), batches_per_epoch=2)
    assert len(rounds) == 50 and sum(rounds) == 123
    assert plan_rounds(TrainConfig(steps=7), 2) == [1] * 7
    assert plan_rounds(TrainConfig(epochs=3), 5) == [5, 5, 5]


def test_a_small_dataset_trains_its_whole_step_budget_and_serves_standardised_embeddings() -> None:
    data = SequenceDataset(random_sequences([30, 25, 40, 33, 28, 31], dim=3))  # one batch an epoch
    config = ModelConfig(objective="steps", encoder="conv", input_dim=3, hidden_dim=8, repr_dim=10, pooling="pyramid")
    result = fit(data, config, TrainConfig(steps=12, batch_size=8, context_len=4, target_len=2, seed=0))
    assert len(result.losses) == 12  # 12 rounds of one step, though an epoch is a single step
    with torch.no_grad():
        z = result.model.encode(*pad_sequences(data.data))
    # Centred and scaled on its training data, in every dimension that varies at all (a constant
    # one divides float noise by the std floor).
    varies = raw_embeddings(result.model, data).std(0) > 1e-3
    assert int(varies.sum()) >= 5
    torch.testing.assert_close(z.mean(0)[varies], torch.zeros(int(varies.sum())), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0)[varies], torch.ones(int(varies.sum())), atol=1e-3, rtol=0)


def test_step_training_lowers_the_loss_on_toy_paths() -> None:
    config = ModelConfig(objective="steps", encoder="conv", input_dim=2, hidden_dim=16, repr_dim=16, pooling="max_mean")
    result = fit(ToySequenceDataset(128, 20, "mixed", seed=0), config, TrainConfig(steps=60, batch_size=32, seed=0))
    assert result.losses[-1] < result.losses[0]


def test_series_norm_sees_shape_not_level_or_scale() -> None:
    model = step_model(series_norm=True)
    x = torch.randn(1, 12, 3)
    lengths = torch.tensor([12, 7])
    with torch.no_grad():
        assert torch.allclose(model.encode(x), model.encode(5.0 + 3.0 * x), atol=1e-4)
        ragged = torch.cat([x, torch.cat([x[:, :7], torch.zeros(1, 5, 3)], dim=1)])  # padding must not count
        batched = model.encode(ragged, lengths)
        assert torch.allclose(batched[1], model.encode(x[:, :7])[0], atol=1e-4)


def test_the_monitor_does_not_cry_collapse_before_a_step_model_is_standardised() -> None:
    from jepa_model.metrics import EpochMonitor

    model = step_model()
    data = SequenceDataset(random_sequences([20] * 16, dim=3))
    with torch.no_grad():  # an offset every embedding shares, as raw pooled steps have
        model.target_encoder.embedding_mean.fill_(-100.0)
    assert EpochMonitor(data, 4, 2)(model)["embedding_std"] > 0.05


def test_thousands_of_steps_train_in_bounded_crops() -> None:
    from jepa_model import resolve_configs

    model_config, train_config = resolve_configs(
        "series", {"steps": 2, "hidden_dim": 8, "repr_dim": 16, "pool_blocks": 0, "seed": 0}
    )
    data = SequenceDataset(random_sequences([3000, 2500, 4096], dim=2))
    model_config = ModelConfig(**{**model_config.to_dict(), "input_dim": 2})
    result = fit(data, model_config, train_config)
    assert len(result.losses) == 2
    with torch.no_grad():
        z = result.model.encode(*pad_sequences(data.data))
    assert z.shape == (3, 16) and bool(torch.isfinite(z).all())


def test_longest_stretches_match_a_step_by_step_count() -> None:
    from jepa_model.step_encoders import steps_above

    torch.manual_seed(0)
    steps = torch.randn(3, 40, 4).cumsum(1)  # (B, T, S): wandering, so stretches of many lengths
    keep = torch.ones(3, 40, dtype=torch.bool)
    keep[1, 25:], keep[2, 1:] = False, False
    thresholds = torch.randn(2, 4)  # (L, S)
    counts, longest = steps_above(steps, keep, thresholds)  # (B, L * S) each
    for b in range(3):
        for level in range(2):
            for s in range(4):
                run = best = 0
                for t in range(40):
                    run = run + 1 if keep[b, t] and steps[b, t, s] > thresholds[level, s] else 0
                    best = max(best, run)
                kept_above = int(((steps[b, :, s] > thresholds[level, s]) & keep[b]).sum())
                assert longest[b, level * 4 + s] == best and counts[b, level * 4 + s] == kept_above


def test_pooled_blocks_widen_what_pooling_sees_but_not_the_steps() -> None:
    # 8 parts of 4 step dimensions, and max, mean and 3 PPV of 2 blocks x 8 hidden dimensions
    model = step_model(pooling="max_mean_ppv_lspv", hidden_dim=8, num_layers=3, pool_blocks=2, repr_dim=8 * 4 + 5 * 16)
    config = model.config
    assert (config.step_dim, config.pool_dim) == (4, 4 + 16)
    x = torch.from_numpy(random_sequences([25], dim=3)[0])[None]  # (1, T, D)
    with torch.no_grad():
        steps, pooled = model.target_encoder.features(x)
        assert steps.shape == (1, 25, 4) and pooled.shape == (1, 25, 20)
        torch.testing.assert_close(pooled[..., :4], steps)  # the steps come first, as they were
        assert model.encode_steps(x).shape == (1, 25, 4)  # per_step serves the steps alone
        assert model.encode(x).shape == model.predict(x).shape == (1, config.repr_dim)
    assert model.target_encoder.ppv_thresholds().shape == (3, 20)


def test_stretches_are_counted_only_in_the_dimensions_asked() -> None:
    steps, keep = torch.randn(3, 40, 6), torch.rand(3, 40) > 0.2
    thresholds = torch.randn(3, 6) * 0.3
    shares, longest = steps_above(steps, keep, thresholds, stretch_dims=2)
    all_shares, all_longest = steps_above(steps, keep, thresholds)
    assert shares.shape == (3, 18) and longest.shape == (3, 6)
    torch.testing.assert_close(shares, all_shares)
    torch.testing.assert_close(longest, all_longest.reshape(3, 3, 6)[:, :, :2].reshape(3, 6))
    pooled = pool_steps(steps, keep, "max_mean_ppv_lspv", thresholds, stretch_dims=2)
    assert pooled.shape == (3, 2 * 6 + 3 * 6 + 3 * 2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pool_blocks": 4}, "must not exceed num_layers"),
        ({"pool_blocks": 1, "encoder": "lstm"}, "needs a conv step model"),
        ({"pool_blocks": 1, "pooling": "max_mean", "repr_dim": 2 * 4 + 5 * 8}, "needs a conv step model"),
        ({"pool_blocks": 2, "repr_dim": 5 * 16}, "leaves no room for the steps"),
        ({"pool_blocks": 2, "repr_dim": 5 * 16 + 9}, "plus 80 for the pooled blocks"),
    ],
)
def test_pooled_blocks_that_cannot_be_built_are_refused(options: dict, message: str) -> None:
    base = {"objective": "steps", "encoder": "conv", "hidden_dim": 8, "num_layers": 3, "pooling": "max_mean_ppv_lspv"}
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**base, "repr_dim": 8 * 4 + 5 * 16, **options})
