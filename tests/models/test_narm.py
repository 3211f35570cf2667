"""NARM's equations (Li et al., CIKM 2017) on small hand-checked tensors, and the click
window shared by the window models."""

from __future__ import annotations

import math

import pytest
import torch

from models import registry
from models.narm import Narm
from models.window import masked_softmax, shift_in

pytestmark = pytest.mark.usefixtures("single_thread")


def build(name: str = "narm", **overrides: object) -> Narm:
    torch.manual_seed(0)
    config = {"embedding_dim": 4, "hidden_size": 2, "max_length": 4, **overrides}
    model = registry.build(name, 9, 0, **config)
    assert isinstance(model, Narm)
    return model.eval()


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_attention_by_hand() -> None:
    """alpha_tj = softmax_j v^T sigmoid(A1 h_t + A2 h_j) over valid j (eq. 7-8)."""
    model = build()
    with torch.no_grad():
        model.a1.weight.copy_(torch.eye(2))
        model.a2.weight.copy_(2 * torch.eye(2))
        model.v.weight.copy_(torch.tensor([[1.0, -1.0]]))
    last = torch.tensor([[0.5, -0.5]])
    states = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
    valid = torch.tensor([[True, True, False]])
    alpha = model.attention(last, states, valid)
    q0 = sigmoid(0.5 + 2.0) - sigmoid(-0.5 + 0.0)
    q1 = sigmoid(0.5 + 0.0) - sigmoid(-0.5 + 2.0)
    total = math.exp(q0) + math.exp(q1)
    expected = torch.tensor([[math.exp(q0) / total, math.exp(q1) / total, 0.0]])
    torch.testing.assert_close(alpha, expected)


def test_attention_sums_to_one_over_valid_and_is_zero_on_padding() -> None:
    model = build()
    window = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4], [0, 0, 0, 5], [0, 0, 0, 0]])
    states, last, valid = model.encode(window)
    alpha = model.attention(last, states, valid)
    assert torch.equal(alpha[~valid], torch.zeros(int((~valid).sum())))
    torch.testing.assert_close(alpha.sum(1), torch.tensor([1.0, 1.0, 1.0, 0.0]))
    assert (alpha[valid] > 0).all()


def test_masked_softmax_has_no_nan_on_an_empty_row() -> None:
    weights = masked_softmax(torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
                             torch.tensor([[False, False], [True, False]]))
    assert torch.equal(weights, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))


def test_global_encoder_is_the_last_gru_state() -> None:
    """c_g = h_t (eq. 5): the GRU over the valid clicks only, left padding skipped."""
    model = build("narm-global")
    window = torch.tensor([[0, 0, 3, 7]])
    gru = model.gru.gru
    with torch.no_grad():
        _, h_n = gru(model.embedding(torch.tensor([[3, 7]])))
        torch.testing.assert_close(model.context(window), h_n[0])


def test_hybrid_context_and_bilinear_decoder() -> None:
    """c_t = [c_g; c_l] (eq. 9) and S_i = emb_i^T B c_t (eq. 10)."""
    model = build()
    window = torch.tensor([[0, 2, 3, 7], [5, 6, 7, 8]])
    with torch.no_grad():
        states, last, valid = model.encode(window)
        alpha = model.attention(last, states, valid)
        c_local = (alpha.unsqueeze(2) * states).sum(1)
        context = model.context(window)
        torch.testing.assert_close(context, torch.cat([last, c_local], dim=1))
        scores = model.score({"window": window})
        expected = context @ model.bilinear.weight.T @ model.embedding.weight.T
        torch.testing.assert_close(scores[:, 1:], expected[:, 1:])
        assert torch.isneginf(scores[:, 0]).all()


@pytest.mark.parametrize("name,width", [("narm", 4), ("narm-global", 2), ("narm-local", 2)])
def test_encoder_switch_widths(name: str, width: int) -> None:
    model = build(name)
    assert model.context(torch.tensor([[0, 1, 2, 3]])).shape == (1, width)
    assert model.bilinear.weight.shape == (4, width)


def test_bad_encoder_is_rejected() -> None:
    with pytest.raises(ValueError, match="encoder"):
        build(encoder="both")


@pytest.mark.parametrize("name", ["narm", "narm-local", "hmn", "hln"])
def test_left_padding_is_invisible(name: str) -> None:
    """A right-aligned window [0, 0, a, b] scores exactly like the session a, b."""
    torch.manual_seed(0)
    model = registry.build(name, 9, 0, embedding_dim=4, max_length=4).eval()
    with torch.no_grad():
        padded = model.score({"window": torch.tensor([[0, 0, 3, 7]])})
        bare = model.score({"window": torch.tensor([[3, 7]])})
    torch.testing.assert_close(padded, bare)


def test_window_shifts_in_and_drops_the_oldest() -> None:
    window = torch.tensor([[0, 0, 1, 2], [5, 6, 7, 8], [0, 0, 0, 3]])
    shifted = shift_in(window, torch.tensor([9, 4, 0]))
    assert torch.equal(shifted, torch.tensor([[0, 1, 2, 9], [6, 7, 8, 4], [0, 0, 0, 3]]))
    assert torch.equal(window[0], torch.tensor([0, 0, 1, 2]))  # input untouched


def test_forward_after_more_clicks_than_the_window_uses_the_last_ones() -> None:
    model = build()
    items = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        scores = model(items, model.start_session({}, 1))
        last = model.score({"window": torch.tensor([[3, 4, 5, 6]])})
    torch.testing.assert_close(scores[:, -1], last)
