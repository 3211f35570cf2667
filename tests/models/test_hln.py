"""HLN's equations (Guo et al., SIGIR 2020) on small hand-checked tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import registry
from models.hln import Hln

pytestmark = pytest.mark.usefixtures("single_thread")


def build(**overrides: object) -> Hln:
    torch.manual_seed(0)
    config = {"embedding_dim": 3, "hidden_size": 4, "max_length": 4, **overrides}
    model = registry.build("hln", 9, 0, **config)
    assert isinstance(model, Hln)
    return model.eval()


def reference_cell(model: Hln) -> nn.GRUCell:
    """An independent torch GRUCell with the model's GRU weights."""
    cell = nn.GRUCell(3, 4)
    cell.load_state_dict(model.gru.state_dict())
    return cell


def test_leap_gate_one_keeps_the_hidden_state() -> None:
    """p -> 1 gives q = 1: h_t = h_{t-1} exactly (eq. 4), whatever the input."""
    model = build()
    with torch.no_grad():
        model.w_q.bias.fill_(60.0)
        h = torch.randn(2, 4)
        new, q = model.lru_step(torch.randn(2, 3), h, torch.randn(2, 4),
                                torch.tensor([True, True]))
    assert torch.equal(q, torch.ones(2, 1))
    assert torch.equal(new, h)


def test_leap_gate_zero_is_a_gru_step_on_the_preference_gated_input() -> None:
    """q = 0: h_t = GRU(g_p * x_t, h_{t-1}), g_p = sigmoid(W_p x + U_p a) (eq. 1, 4)."""
    model = build()
    x, h, a = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
    with torch.no_grad():
        model.w_q.bias.fill_(-60.0)
        new, q = model.lru_step(x, h, a, torch.tensor([True, False]))
        g_p = torch.sigmoid(x @ model.w_p.weight.T + model.w_p.bias + a @ model.u_p.weight.T)
        expected = reference_cell(model)(g_p * x, h)
    assert torch.equal(q, torch.zeros(2, 1))
    torch.testing.assert_close(new[0], expected[0])
    assert torch.equal(new[1], h[1])  # an empty slot leaps


def test_leap_probability_by_hand() -> None:
    """p = sigmoid(w_q^T h + u_q^T (g_p * x) + b) (eq. 2), thresholded at 0.5 at inference."""
    model = build()
    x, h, a = torch.randn(1, 3), torch.randn(1, 4), torch.zeros(1, 4)
    with torch.no_grad():
        g_p = torch.sigmoid(model.w_p(x))
        logit = float(h @ model.w_q.weight.T + model.w_q.bias + (g_p * x) @ model.u_q.weight.T)
        # shift b so the logit is +-0.1: q flips exactly at p = 0.5
        for target, leap in ((0.1, 1.0), (-0.1, 0.0)):
            model.w_q.bias.add_(target - logit)
            _, q = model.lru_step(x, h, a, torch.tensor([True]))
            assert float(q) == leap
            model.w_q.bias.sub_(target - logit)


def test_preference_manager_sums_the_passes() -> None:
    """a_l = sum_{l' <= l} h_{l', last} (eq. 5) with pass l gated by a_{l-1} (eq. 1);
    x_ideal = W a_L (eq. 6), scores = x_ideal^T e_i (eq. 7). Leaps off (b = -60)."""
    model = build(passes=2)
    window = torch.tensor([[0, 2, 5, 7]])
    with torch.no_grad():
        model.w_q.bias.fill_(-60.0)
        cell = reference_cell(model)
        x = model.embedding(torch.tensor([[2, 5, 7]]))[0]
        a = torch.zeros(1, 4)
        for _ in range(2):
            h = torch.zeros(1, 4)
            for t in range(3):
                g_p = torch.sigmoid(model.w_p(x[t:t + 1]) + model.u_p(a))
                h = cell(g_p * x[t:t + 1], h)
            a = a + h
        torch.testing.assert_close(model.preference(window), a)
        scores = model.score({"window": window})
        expected = model.w_out(a) @ model.embedding.weight.T
        torch.testing.assert_close(scores[:, 1:], expected[:, 1:])


def test_all_leaps_give_a_zero_preference() -> None:
    model = build()
    with torch.no_grad():
        model.w_q.bias.fill_(60.0)
        assert torch.equal(model.preference(torch.tensor([[1, 2, 3, 4]])), torch.zeros(1, 4))


def test_training_gate_is_hard_with_a_straight_through_gradient() -> None:
    model = build()
    model.train()
    torch.manual_seed(3)
    x, h, a = torch.randn(64, 3), torch.randn(64, 4), torch.randn(64, 4)
    _, q = model.lru_step(x, h, a, torch.ones(64, dtype=torch.bool))
    assert set(q.detach().unique().tolist()) <= {0.0, 1.0}
    assert 0 < float(q.detach().sum()) < 64  # sampled, not a constant
    q.sum().backward()
    assert model.w_q.bias.grad is not None and float(model.w_q.bias.grad.abs()) > 0


def test_initialisation_kaiming_by_default_torch_on_request() -> None:
    """The authors' code: Kaiming-normal item table (std sqrt(2 / E)) and W, W_p, U_p,
    w_q, u_q; ``init="torch"`` keeps torch's N(0, 1) table. The padding row stays 0."""
    torch.manual_seed(0)
    kaiming = registry.build("hln", 2000, 0)
    torch.manual_seed(0)
    plain = registry.build("hln", 2000, 0, init="torch")
    table = kaiming.embedding.weight[1:]
    assert table.std().item() == pytest.approx((2.0 / 100) ** 0.5, rel=0.05)
    assert plain.embedding.weight[1:].std().item() == pytest.approx(1.0, rel=0.05)
    assert torch.count_nonzero(kaiming.embedding.weight[0]) == 0
    fan_in = kaiming.w_out.weight.shape[1]
    assert kaiming.w_out.weight.std().item() == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.1)
    with pytest.raises(ValueError, match="init must be one of"):
        registry.build("hln", 5, 0, init="xavier")
