import torch

from jepa_model import JEPA, pad_sequences
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
