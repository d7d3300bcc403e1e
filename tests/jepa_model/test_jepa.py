import pytest
import torch

from jepa_model import JEPA, ModelConfig, pad_sequences
from tests.factories import random_sequences, tiny_model


def test_the_seed_architecture() -> None:
    model = JEPA(input_dim=2, hidden_dim=64, repr_dim=32)
    lstm = model.context_encoder.lstm
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.batch_first) == (2, 64, 2, True)
    assert [type(m).__name__ for m in model.predictor.net] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    x = torch.randn(5, 8, 2)
    assert model.encode(x).shape == (5, 32)
    predicted, target = model(x, torch.randn(5, 4, 2))
    assert predicted.shape == target.shape == (5, 32)


def test_target_encoder_starts_equal_and_takes_no_gradients() -> None:
    model = tiny_model()
    for t, c in zip(model.target_encoder.parameters(), model.context_encoder.parameters(), strict=True):
        assert torch.equal(t, c) and not t.requires_grad
    trainable = {id(p) for p in model.trainable_parameters()}
    assert not trainable & {id(p) for p in model.target_encoder.parameters()}


def test_ema_update_moves_the_target_by_one_minus_momentum() -> None:
    model = tiny_model()
    with torch.no_grad():
        for p in model.context_encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.target_encoder.parameters()]
    model.update_target(0.9)
    for old, new, online in zip(
        before, model.target_encoder.parameters(), model.context_encoder.parameters(), strict=True
    ):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online)


def test_a_sequence_embeds_the_same_alone_and_in_a_mixed_length_batch() -> None:
    model = tiny_model()
    sequences = random_sequences([3, 9, 1, 6])
    x, lengths = pad_sequences(sequences)
    with torch.no_grad():
        batched = model.encode(x, lengths)
        for i, seq in enumerate(sequences):
            alone = model.encode(torch.from_numpy(seq)[None])
            torch.testing.assert_close(batched[i], alone[0], atol=1e-6, rtol=1e-5)


def test_padding_never_reaches_the_recurrent_state() -> None:
    model = tiny_model()
    x, lengths = pad_sequences(random_sequences([2, 7]))
    garbage = x.clone()
    garbage[0, 2:] = 1e6  # rewrite only the padding of the short row
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x, lengths), model.encode(garbage, lengths), atol=0, rtol=0)


@pytest.mark.parametrize("pooling", ["last", "last_mean", "first_last_mean"])
def test_per_step_embeddings_of_a_forward_lstm_are_its_prefixes_embeddings(pooling: str) -> None:
    torch.manual_seed(0)
    model = JEPA.from_config(ModelConfig(hidden_dim=8, repr_dim=4, pooling=pooling, output_norm="layer")).eval()
    x = torch.randn(3, 9, 2)
    with torch.no_grad():
        steps = model.encode_steps(x)  # (B, T, R)
        assert steps.shape == (3, 9, 4)
        for t in (0, 4, 8):
            torch.testing.assert_close(steps[:, t], model.encode(x[:, : t + 1]), rtol=1e-5, atol=1e-5)


def test_step_models_give_their_step_representations_and_others_refuse() -> None:
    config = ModelConfig(objective="steps", encoder="conv", pooling="max_mean", hidden_dim=8, repr_dim=16)
    steps_model = JEPA.from_config(config).eval()
    with torch.no_grad():
        assert steps_model.encode_steps(torch.randn(2, 7, 2)).shape == (2, 7, steps_model.config.step_dim)
    transformer = JEPA.from_config(ModelConfig(encoder="transformer", hidden_dim=8, repr_dim=4, num_heads=2))
    with pytest.raises(ValueError, match="no per-step embeddings"):
        transformer.encode_steps(torch.randn(1, 5, 2))
