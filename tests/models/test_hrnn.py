"""HRNN equations 3-5 (Quadrana et al. 2017) on small tensors, computed by hand."""

from __future__ import annotations

import torch

from models import registry
from models.hrnn import HRNN
from models.stacked_gru import gru_cell
from training.fit.batching import ParallelBatch

N_ITEMS = 10


def build(name: str, **overrides: object) -> HRNN:
    torch.manual_seed(0)
    model = registry.build(name, N_ITEMS, 3, hidden_size=4, user_hidden_size=3, **overrides)
    assert isinstance(model, HRNN)
    return model.eval()


def manual_gru(x: torch.Tensor, h: torch.Tensor, gru: torch.nn.GRU) -> torch.Tensor:
    """The GRU equations written out gate by gate (torch's r, z, n order)."""
    w_ir, w_iz, w_in = gru.weight_ih_l0.chunk(3)
    w_hr, w_hz, w_hn = gru.weight_hh_l0.chunk(3)
    b_ir, b_iz, b_in = gru.bias_ih_l0.chunk(3)
    b_hr, b_hz, b_hn = gru.bias_hh_l0.chunk(3)
    r = torch.sigmoid(x @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
    z = torch.sigmoid(x @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
    n = torch.tanh(x @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
    return (1 - z) * n + z * h


def test_explicit_cell_matches_gru_equations_and_nn_gru() -> None:
    torch.manual_seed(3)
    gru = torch.nn.GRU(5, 4, batch_first=True)
    x, h = torch.randn(2, 5), torch.randn(2, 4)
    ours = gru_cell(x, h, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
    torch.testing.assert_close(ours, manual_gru(x, h, gru))
    _, reference = gru(x.unsqueeze(1), h.unsqueeze(0))
    torch.testing.assert_close(ours, reference[0])


def test_init_session_state_is_eq4() -> None:
    model = build("hrnn-init")
    c = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
    state = model.start_session({"user_hidden": c}, 2)
    expected = torch.tanh(c @ model.init_layer.weight.T + model.init_layer.bias)
    torch.testing.assert_close(state["session_hidden"], expected)
    assert set(state) == {"session_hidden"}  # Init: no context in the session


def test_end_session_is_eq3() -> None:
    model = build("hrnn-init")
    session = {"session_hidden": torch.tensor([[0.1, -0.2, 0.3, 0.9]])}
    c = torch.tensor([[0.2, 0.4, -0.6]])
    updated = model.end_session(session, {"user_hidden": c})["user_hidden"]
    torch.testing.assert_close(updated, manual_gru(session["session_hidden"], c,
                                                   model.user_gru.gru))


def test_second_session_starts_from_user_update_of_first() -> None:
    model = build("hrnn-init")
    user = model.init_user_state(1)
    state = model.start_session(user, 1)
    for item in (2, 3, 4):
        state = model.advance(torch.tensor([item]), state)
    s1 = state["session_hidden"]                         # last hidden of session 1
    c1 = manual_gru(s1, torch.zeros(1, 3), model.user_gru.gru)
    second = model.start_session(model.end_session(state, user), 1)
    expected = torch.tanh(c1 @ model.init_layer.weight.T + model.init_layer.bias)
    torch.testing.assert_close(second["session_hidden"], expected)


def test_session_step_is_eq5_with_one_hot_input() -> None:
    model = build("hrnn-init")
    h = torch.tensor([[0.3, -0.1, 0.2, 0.0]])
    new = model.advance(torch.tensor([7]), {"session_hidden": h})["session_hidden"]
    # one-hot input: the item's row of the input table is x W_ih (W_ih is the identity)
    gru = model.session_gru.gru
    assert torch.equal(gru.weight_ih_l0, torch.eye(12)) and not gru.weight_ih_l0.requires_grad
    torch.testing.assert_close(new, manual_gru(model.item_input.weight[7:8], h, gru))


def all_step_reference(model: HRNN, item: int, c: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """GRU_ses on the concatenated input [e(i); c] with W_ih = [W_e | W_c] (W_c zeroed in
    the candidate rows unless context_to_candidate), written as one explicit GRU."""
    gru = model.session_gru.gru
    assert model.item_projection is not None and model.context_input is not None
    w_context = model.context_input.weight * model.context_gate_mask.unsqueeze(1)
    reference = torch.nn.GRU(model.item_projection.in_features + c.shape[1], 4,
                             batch_first=True)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(torch.cat([model.item_projection.weight, w_context], 1))
        for name in ("weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(reference, name).copy_(getattr(gru, name))
    x = torch.cat([model.item_input.weight[item:item + 1], c], dim=1)
    return manual_gru(x, h, reference)


def test_all_concatenates_user_state_to_every_input() -> None:
    for to_candidate in (False, True):
        model = build("hrnn-all", embedding_dim=5, context_to_candidate=to_candidate)
        c = torch.tensor([[1.0, -0.5, 0.25]])
        state = model.start_session({"user_hidden": c}, 1)
        torch.testing.assert_close(state["user_context"], c)
        h = state["session_hidden"]
        for item in (4, 5):
            state = model.advance(torch.tensor([item]), state)
            h = all_step_reference(model, item, c, h)
            torch.testing.assert_close(state["session_hidden"], h)
            torch.testing.assert_close(state["user_context"], c)
        # the context changes the step: same item, other user state -> other hidden state
        other = model.advance(torch.tensor([4]), {"session_hidden": state["session_hidden"],
                                                  "user_context": -c})
        assert not torch.allclose(other["session_hidden"],
                                  model.advance(torch.tensor([4]), state)["session_hidden"])
    # by default (the authors' code) the context feeds the r and z gates only
    assert model.context_gate_mask.tolist() == [1.0] * 12
    default = build("hrnn-all")
    assert default.context_gate_mask.tolist() == [1.0] * 8 + [0.0] * 4


def test_all_with_one_hot_input_adds_projected_context() -> None:
    model = build("hrnn-all", context_to_candidate=True)
    assert model.context_input is not None
    c = torch.tensor([[0.3, 0.2, -0.4]])
    h = torch.zeros(1, 4)
    new = model.advance(torch.tensor([2]), {"session_hidden": h, "user_context": c})
    x = model.item_input.weight[2:3] + c @ model.context_input.weight.T  # [onehot; c] W
    torch.testing.assert_close(new["session_hidden"], manual_gru(x, h, model.session_gru.gru))


def test_training_path_follows_the_serving_equations() -> None:
    """One user-parallel row with two sessions of one user: the carried training states
    equal start_session / advance / end_session, and the carry is detached."""
    for name in ("hrnn-init", "hrnn-all"):
        model = build(name)  # eval mode: no dropout, so both paths are deterministic
        sessions = [[1, 2, 3], [4, 5]]
        items = torch.tensor([[1, 2, 3, 4, 5]])
        batch = ParallelBatch(items=items, targets=torch.tensor([[2, 3, 0, 5, 0]]),
                              session_start=torch.tensor([[True, False, False, True, False]]),
                              user_start=torch.tensor([[True, False, False, False, False]]))
        _, (carried_hidden, carried_user) = model.training_step(batch)
        assert not carried_hidden.requires_grad and not carried_user.requires_grad

        user = model.init_user_state(1)
        for index, session in enumerate(sessions):
            state = model.start_session(user, 1)
            for item in session:
                state = model.advance(torch.tensor([item]), state)
            if index == 0:
                user = model.end_session(state, user)
        torch.testing.assert_close(carried_hidden, state["session_hidden"])
        torch.testing.assert_close(carried_user, user["user_hidden"])
