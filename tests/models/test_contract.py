"""The model contract (models/base.py), checked for every registered model."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from models import registry
from models.base import SessionModel, State
from tests.helpers import make_tiny_dataset
from training.fit.batching import make_batches, training_sessions

N_ITEMS, N_USERS = 30, 12

# tiny dimensions per model; models not listed use their defaults
SMALL: dict[str, dict[str, Any]] = {
    "gru4rec": {"hidden_size": 8, "num_layers": 2},
    "hrnn-init": {"hidden_size": 8, "user_hidden_size": 6, "num_layers": 2},
    "hrnn-all": {"hidden_size": 8, "user_hidden_size": 6, "embedding_dim": 5},
    "rum-item": {"embedding_size": 6, "memory_slots": 3},
    "rum-feature": {"embedding_size": 6, "memory_slots": 3},
    "bpr": {"embedding_size": 6},
    "fpmc": {"embedding_size": 6},
    "narm": {"embedding_dim": 6, "hidden_size": 8, "max_length": 4},
    "narm-global": {"embedding_dim": 6, "hidden_size": 8, "max_length": 4},
    "narm-local": {"embedding_dim": 6, "hidden_size": 8, "max_length": 4},
    "hmn": {"embedding_dim": 6, "max_length": 4},
    "hln": {"embedding_dim": 6, "hidden_size": 8, "max_length": 4},
}


pytestmark = pytest.mark.usefixtures("single_thread")


def build(name: str) -> SessionModel:
    torch.manual_seed(0)
    model = registry.build(name, N_ITEMS, N_USERS, **SMALL.get(name, {}))
    if model.batching == "counts":
        table = training_sessions(make_tiny_dataset(n_items=N_ITEMS, n_users=N_USERS))
        model.fit_counts([table.items[a:b].tolist()
                          for a, b in zip(table.offsets[:-1], table.offsets[1:], strict=True)])
    return model.eval()


def random_user_state(model: SessionModel, batch: int) -> State:
    """A non-trivial user state (zeros would hide bugs in how it is used)."""
    generator = torch.Generator().manual_seed(1)
    state = model.init_user_state(batch)
    return {name: (torch.rand(value.shape, generator=generator) - 0.5
                   if value.dtype == torch.float32 else value)
            for name, value in state.items()}


ITEMS = torch.tensor([[3, 4, 5, 6, 0], [7, 8, 0, 0, 0], [1, 2, 3, 4, 5]])


def clone(state: State) -> State:
    return {name: value.clone() for name, value in state.items()}


def assert_same(left: State, right: State) -> None:
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name


@pytest.mark.parametrize("name", registry.available())
class TestContract:
    def test_state_spec_consistent(self, name: str) -> None:
        model = build(name)
        specs = model.state_spec()
        names = [spec.name for spec in specs]
        assert len(names) == len(set(names))
        assert {spec.scope for spec in specs} <= {"session", "user"}
        user = model.init_user_state(3)
        session = model.start_session(user, 3)
        for spec_list, state in ((model.user_spec(), user), (model.session_spec(), session)):
            assert [spec.name for spec in spec_list] == list(state)
            for spec in spec_list:
                assert tuple(state[spec.name].shape) == (3, *spec.shape)
                assert str(state[spec.name].dtype) == f"torch.{spec.dtype}"
                assert spec.to_json()["name"] == spec.name
        ended = model.end_session(model.advance(ITEMS[:, 0], session), user)
        assert list(ended) == [spec.name for spec in model.user_spec()]
        for spec in model.user_spec():
            assert tuple(ended[spec.name].shape) == (3, *spec.shape)

    def test_forward_shapes_and_padding_column(self, name: str) -> None:
        model = build(name)
        state = model.start_session(random_user_state(model, 3), 3)
        scores = model(ITEMS, state)
        assert scores.shape == (3, ITEMS.shape[1], N_ITEMS + 1)
        assert torch.isneginf(scores[..., 0]).all()
        assert torch.isfinite(scores[..., 1:]).all()
        step_scores = model.score(model.advance(ITEMS[:, 0], state))
        assert step_scores.shape == (3, N_ITEMS + 1)
        assert torch.isneginf(step_scores[:, 0]).all()

    def test_step_equals_forward(self, name: str) -> None:
        model = build(name)
        with torch.no_grad():
            state = model.start_session(random_user_state(model, 3), 3)
            expected = model(ITEMS, state)
            for position in range(ITEMS.shape[1]):
                scores, state = model.step(ITEMS[:, position], state)
                torch.testing.assert_close(scores[:, 1:], expected[:, position, 1:],
                                           atol=1e-5, rtol=1e-5)

    def test_item_zero_is_a_no_op(self, name: str) -> None:
        model = build(name)
        state = model.advance(ITEMS[:, 0], model.start_session(random_user_state(model, 3), 3))
        after = model.advance(torch.tensor([0, 5, 0]), state)
        for key in state:
            assert torch.equal(after[key][0], state[key][0]), key
            assert torch.equal(after[key][2], state[key][2]), key

    def test_serving_methods_do_not_mutate_inputs(self, name: str) -> None:
        model = build(name)
        user = random_user_state(model, 3)
        user_copy = clone(user)
        session = model.start_session(user, 3)
        assert_same(user, user_copy)
        session_copy = clone(session)
        item = ITEMS[:, 0].clone()
        advanced = model.advance(item, session)
        model.score(advanced)
        model.end_session(advanced, user)
        model(ITEMS, session)
        assert_same(session, session_copy)
        assert_same(user, user_copy)
        assert torch.equal(item, ITEMS[:, 0])

    def test_eval_mode_is_deterministic(self, name: str) -> None:
        model = build(name)
        state = model.start_session(random_user_state(model, 3), 3)
        first = model(ITEMS, state)
        second = model(ITEMS, state)
        assert torch.equal(first, second)
        assert torch.equal(model.step(ITEMS[:, 0], state)[0], model.step(ITEMS[:, 0], state)[0])

    def test_loss_has_finite_gradients(self, name: str) -> None:
        model = build(name)
        if model.batching == "counts":
            with pytest.raises(NotImplementedError):
                model.loss(None)
            return
        dataset = make_tiny_dataset(n_items=N_ITEMS, n_users=N_USERS)
        batch = next(iter(make_batches(model.batching, dataset, 6, steps=3, seed=0)))
        model.train()
        loss = model.loss(batch)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        assert grads, "no parameter received a gradient"
        assert all(torch.isfinite(grad).all() for grad in grads)
        assert any(grad.abs().sum() > 0 for grad in grads)


@pytest.mark.parametrize("name, variant, message", [
    ("hrnn-init", "all", "contradicts the model name"),
    ("rum-item", "feature", "contradicts the model name"),
    ("rum-feature", "bogus", "variant must be one of"),
])
def test_a_variant_that_does_not_fit_the_name_is_refused(name: str, variant: str,
                                                         message: str) -> None:
    with pytest.raises(ValueError, match=message):
        registry.build(name, N_ITEMS, N_USERS, variant=variant)
