"""HMN's equations (Song et al., CIKM 2019) on small hand-checked tensors."""

from __future__ import annotations

import pytest
import torch

from models import registry
from models.hmn import Hmn

pytestmark = pytest.mark.usefixtures("single_thread")


def build(**overrides: object) -> Hmn:
    torch.manual_seed(0)
    model = registry.build("hmn", 9, 0, **{"embedding_dim": 2, "max_length": 4, **overrides})
    assert isinstance(model, Hmn)
    return model.eval()


def test_block_l_reads_every_earlier_block() -> None:
    """Block 1: 1 x d filters (d -> k); block l: height-2 filters over the (l-1)k channels
    of all earlier blocks (eq. 4-5)."""
    model = build(blocks=4)
    d = 2
    assert model.convs[0].in_features == d
    for index in range(1, 4):  # block l = index + 1 reads l - 1 = index earlier blocks
        assert model.convs[index].in_features == 2 * index * d
        assert model.convs[index].out_features == d


def test_dense_blocks_by_hand() -> None:
    """C^1 = ReLU(E W1); C^2_j = ReLU(C^1_{j-1} + C^1_j); C^3_j = ReLU(C^1_j + C^2_{j-1})
    with hand-set filters: block 3 really reads block 1 (a dense shortcut, not only block
    2), the zero row before position 1 is the padding, and every block keeps |s| rows."""
    model = build(blocks=3)
    eye = torch.eye(2)
    with torch.no_grad():
        model.embedding.weight[1:4] = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, 1.0]])
        model.convs[0].weight.copy_(eye)
        model.convs[0].bias.zero_()
        model.convs[1].weight.copy_(torch.cat([eye, eye], dim=1))  # [prev C1, C1]
        model.convs[1].bias.zero_()
        weight = torch.zeros(2, 8)  # [prev C1, prev C2, C1, C2]
        weight[:, 2:4] = eye        # C^2_{j-1}
        weight[:, 4:6] = eye        # C^1_j
        model.convs[2].weight.copy_(weight)
        model.convs[2].bias.zero_()
        window = torch.tensor([[0, 1, 2, 3]])
        maps = model.scales(model.embedding(window), window != 0)
    assert [tuple(m.shape) for m in maps] == [(1, 4, 2)] * 3
    torch.testing.assert_close(maps[0][0], torch.tensor([[0., 0.], [1., 2.], [3., 0.], [0., 1.]]))
    torch.testing.assert_close(maps[1][0], torch.tensor([[0., 0.], [1., 2.], [4., 2.], [3., 1.]]))
    torch.testing.assert_close(maps[2][0], torch.tensor([[0., 0.], [1., 2.], [4., 2.], [4., 3.]]))


def test_attention_weights_sum_to_one_over_valid_and_zero_on_padding() -> None:
    model = build(embedding_dim=3)
    window = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4], [0, 0, 0, 5]])
    valid = window != 0
    alphas, beta, s_g, last = model.attentions(window)
    assert len(alphas) == 4
    for alpha in alphas:  # per-scale attention (eq. 7)
        assert torch.equal(alpha[~valid], torch.zeros(int((~valid).sum())))
        torch.testing.assert_close(alpha.sum(1), torch.ones(3))
    torch.testing.assert_close(beta.sum(1), torch.ones(3))  # cross-scale (eq. 10)
    assert beta.shape == (3, 4) and s_g.shape == (3, 3)
    torch.testing.assert_close(last, model.embedding(window[:, -1]))


def test_gated_fusion_endpoints() -> None:
    """s_f = g * s_g + (1 - g) * s_c with s_c = e_last (eq. 12): a saturated gate selects
    one side."""
    model = build()
    window = torch.tensor([[0, 1, 2, 3]])
    with torch.no_grad():
        _, _, s_g, last = model.attentions(window)
        model.g1.bias.fill_(60.0)
        torch.testing.assert_close(model.query(window), s_g)
        model.g1.bias.fill_(-60.0)
        torch.testing.assert_close(model.query(window), last)
        scores = model.score({"window": window})
    torch.testing.assert_close(scores[:, 1:], (last @ model.embedding.weight.T)[:, 1:])
