"""RUM's read/write equations on hand-checked tensors, and the per-user serving mapping."""

from __future__ import annotations

import math
from pathlib import Path

import onnx
import pytest
import torch

from models import registry
from models.rum import RUM
from tests.helpers import make_tiny_dataset
from training.export.writer import export_random_bundle
from training.fit.batching import make_batches

pytestmark = pytest.mark.usefixtures("single_thread")


def _rum(variant: str, n_items: int = 6, dim: int = 2, slots: int = 3, **extra: float) -> RUM:
    model = registry.build(f"rum-{variant}", n_items, 4, embedding_size=dim,
                           memory_slots=slots, **extra)
    assert isinstance(model, RUM)
    return model.eval()


def _set_items(model: torch.nn.Module, table: list[list[float]]) -> None:
    with torch.no_grad():
        model.item_embedding.weight.copy_(torch.tensor(table))  # type: ignore[union-attr]


def test_item_memory_is_fifo_newest_first_and_partial() -> None:
    model = _rum("item", slots=3)
    state = model.start_session(model.init_user_state(1), 1)
    assert state["slots"].tolist() == [[0, 0, 0]]
    for item, expected in ((4, [4, 0, 0]), (2, [2, 4, 0]), (0, [2, 4, 0]), (5, [5, 2, 4]),
                           (1, [1, 5, 2])):
        state = model.advance(torch.tensor([item]), state)
        assert state["slots"].tolist() == [expected], item


def test_item_read_is_candidate_dependent_softmax_over_filled_slots() -> None:
    model = _rum("item", n_items=3, dim=2, slots=3, alpha=0.5, beta=2.0)
    _set_items(model, [[0, 0], [1, 0], [0, 1], [1, 1]])
    with torch.no_grad():
        model.user_embedding.weight.zero_()
    state = model.start_session(model.init_user_state(1), 1)
    state = model.advance(torch.tensor([1]), state)
    state = model.advance(torch.tensor([2]), state)            # memory: q2, q1 (1 empty slot)
    scores = model.score(state)[0]
    # candidate 1 = (1,0): q·m = (0 for q2, 1 for q1); z = softmax(2·[0, 1]) over 2 slots
    z = [1 / (1 + math.e ** 2), math.e ** 2 / (1 + math.e ** 2)]
    assert scores[1].item() == pytest.approx(0.5 * (z[0] * 0 + z[1] * 1), abs=1e-6)
    # candidate 3 = (1,1): q·m = (1, 1): equal weights; p^m = (q1+q2)/2 = (.5,.5); q·p^m = 1
    assert scores[3].item() == pytest.approx(0.5 * 1.0, abs=1e-6)
    # empty memory reads 0: the score is q_iᵀ p* only
    empty = model.score(model.start_session(model.init_user_state(1), 1))[0]
    assert torch.allclose(empty[1:], torch.zeros(3))


def test_item_read_matches_a_masked_softmax_at_large_logits() -> None:
    """The read masks empty slots with the newest slot's logit minus 40 (no denormal
    floats); against a float64 masked softmax it agrees where logits span hundreds."""
    torch.manual_seed(0)
    model = _rum("item", n_items=50, dim=8, slots=5, alpha=1.0, beta=1.0)
    with torch.no_grad():
        model.item_embedding.weight.mul_(40.0)  # logits up to a few hundred
        model.user_embedding.weight.zero_()
    state = model.start_session(model.init_user_state(3), 3)
    clicks = torch.tensor([[3, 9, 1], [7, 0, 2], [0, 0, 4], [0, 0, 5], [0, 0, 6],
                           [0, 0, 8]])
    for step in clicks:
        state = model.advance(step, state)
    scores = model.score(state).double()
    table = model.item_embedding.weight.detach().double()
    for row in range(3):
        slots = [int(i) for i in state["slots"][row] if int(i)]
        memory = table[slots]                                         # [filled, D]
        logits = table @ memory.T                                     # [N+1, filled]
        expected = (torch.softmax(logits, dim=1) * logits).sum(1)
        torch.testing.assert_close(scores[row, 1:], expected[1:], rtol=1e-4, atol=1e-3)


def test_feature_write_is_erase_then_add() -> None:
    model = _rum("feature", n_items=2, dim=2, slots=2, beta=1.0)
    _set_items(model, [[0, 0], [1, 0], [0, 1]])
    with torch.no_grad():
        model.features.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
        model.erase.weight.zero_()
        model.erase.bias.copy_(torch.tensor([0.0, 100.0]))    # erase = (0.5, ~1)
        model.add.weight.zero_()
        model.add.bias.copy_(torch.tensor([0.3, -0.2]))       # add = tanh(.)
    memory = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    state = {"memory": memory.clone(), "intrinsic": torch.zeros(1, 2)}
    new = model.advance(torch.tensor([1]), state)["memory"][0]
    z = torch.softmax(torch.tensor([2.0, 0.0]), 0)            # q_1ᵀ f_k = (2, 0)
    erase = torch.tensor([0.5, 1.0])
    add = torch.tanh(torch.tensor([0.3, -0.2]))
    for k in range(2):
        expected = memory[0, k] * (1 - z[k] * erase) + z[k] * add
        torch.testing.assert_close(new[k], expected, atol=1e-5, rtol=0)
    assert torch.equal(state["memory"], memory), "advance wrote into its input"


def test_feature_read_weights_depend_on_item_only() -> None:
    model = _rum("feature", n_items=2, dim=2, slots=2, alpha=1.0, beta=1.0)
    _set_items(model, [[0, 0], [1, 0], [0, 1]])
    with torch.no_grad():
        model.features.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    memory = torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])
    p_star = torch.tensor([[0.5, 0.25]])
    scores = model.score({"memory": memory, "intrinsic": p_star})[0]
    z1 = torch.softmax(torch.tensor([1.0, 0.0]), 0)           # item 1 = (1, 0)
    pm1 = z1[0] * memory[0, 0] + z1[1] * memory[0, 1]
    assert scores[1].item() == pytest.approx(float((p_star[0] + pm1) @ torch.tensor([1.0, 0.0])))
    z2 = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    pm2 = z2[0] * memory[0, 0] + z2[1] * memory[0, 1]
    assert scores[2].item() == pytest.approx(float((p_star[0] + pm2) @ torch.tensor([0.0, 1.0])))


def test_feature_read_weights_are_precomputed_for_serving_and_follow_parameter_updates(
        tmp_path: Path) -> None:
    model = _rum("feature", n_items=5, dim=3, slots=4)
    state = {"memory": torch.rand(2, 4, 3), "intrinsic": torch.rand(2, 3)}
    with torch.no_grad():
        cached = model.score(state)
        with torch.enable_grad():
            direct = model.score(state)       # the uncached path (grad on)
        assert torch.allclose(cached, direct, atol=1e-6)
        model.features.mul_(100.0)            # a parameter update invalidates the cache
        updated = model.score(state)
        assert not torch.allclose(updated, cached, atol=1e-3)
        with torch.enable_grad():
            assert torch.allclose(updated, model.score(state).detach(), atol=1e-6)
    bundle = export_random_bundle("rum-feature", 50, tmp_path, n_users=1, embedding_size=8)
    ops = {node.op_type for node in onnx.load(str(bundle / "score.onnx")).graph.node}
    assert "Softmax" not in ops  # the read weights are a constant of the score graph


def test_item_level_with_one_slot_is_fpmc() -> None:
    """Sec. 4.3: RUM-I with K = 1 scores q_iᵀ p* + α q_iᵀ q_last, FPMC's score with
    v^{IU} = v^{IL} = q and v^{LI} = α q."""
    torch.manual_seed(3)
    n_items, dim, alpha = 7, 4, 0.2
    rum = _rum("item", n_items=n_items, dim=dim, slots=1, alpha=alpha, beta=5.0)
    fpmc = registry.build("fpmc", n_items, 4, embedding_size=dim).eval()
    q = rum.item_embedding.weight.detach()
    with torch.no_grad():
        fpmc.user_embedding.weight.copy_(rum.user_embedding.weight)
        fpmc.item_user.weight.copy_(q)
        fpmc.item_last.weight.copy_(q)
        fpmc.last_item.weight.copy_(alpha * q)
    users = torch.tensor([1, 3])
    rum_state = rum.start_session(rum.user_state_for(users), 2)
    fpmc_state = fpmc.start_session(fpmc.user_state_for(users), 2)
    for clicks in ([2, 5], [6, 0], [1, 4]):
        item = torch.tensor(clicks)
        rum_state, fpmc_state = rum.advance(item, rum_state), fpmc.advance(item, fpmc_state)
        torch.testing.assert_close(rum.score(rum_state), fpmc.score(fpmc_state))
    assert rum_state["slots"].tolist() == [[1], [4]]


def test_unknown_users_get_the_default_and_known_users_their_embedding() -> None:
    model = _rum("item")
    table = model.user_embedding.weight.detach()
    unknown = model.start_session(model.init_user_state(2), 2)["intrinsic"]
    assert torch.equal(unknown, table[[0, 0]])
    known = model.start_session(model.user_state_for(torch.tensor([2, 0])), 2)["intrinsic"]
    assert torch.equal(known, table[[2, 0]])


def test_memory_survives_sessions_and_users_diverge() -> None:
    model = _rum("feature", n_items=6, dim=3, slots=2)
    user = model.init_user_state(2)
    for clicks in ([1, 4], [2, 5]):
        session = model.start_session(user, 2)
        session = model.advance(torch.tensor(clicks), session)
        user = model.end_session(session, user)
    assert not torch.allclose(user["user_memory"][0], user["user_memory"][1])
    again = model.start_session(user, 2)
    assert torch.equal(again["memory"], user["user_memory"])


def test_user_sequence_batches_carry_user_ids_and_train() -> None:
    dataset = make_tiny_dataset(n_items=20, n_users=6)
    batches = make_batches("user-sequence", dataset, 3, steps=4, shuffle=False)
    batch = next(iter(batches))
    assert batch.users is not None
    assert ((batch.users != 0) == (batch.items != 0)).all()
    for name in ("rum-item", "rum-feature", "bpr", "fpmc"):
        torch.manual_seed(0)
        model = registry.build(name, 20, 6, embedding_size=8, **(
            {"memory_slots": 3} if name.startswith("rum") else {}))
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        losses = []
        for _ in range(15):
            total = 0.0
            for chunk in make_batches("user-sequence", dataset, 3, steps=4, shuffle=False):
                loss = model.loss(chunk)
                if not loss.requires_grad:
                    continue
                optimizer.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                total += float(loss.detach())
            losses.append(total)
        assert losses[-1] < 0.8 * losses[0], (name, losses[0], losses[-1])
