"""HMN: session-based recommendation with hierarchical (multi-scale) memory networks.

Paper: B. Song, Y. Cao, W. Zhang, C. Xu. "Session-based Recommendation with Hierarchical
Memory Networks", CIKM 2019. Defaults: item embedding d = 30, 4 convolutional blocks,
softmax cross-entropy over all items.

Model (session s = x_1..x_|s|, embeddings E = [e_1..e_|s|], [|s|, d])::

    C^1 = ReLU(conv_{1 x d}(E))                                 [|s|, k]  (eq. 4)
    C^l = ReLU(conv_{2 x (l-1)k}([C^1; ..; C^{l-1}]))   l = 2..4 [|s|, k]  (eq. 5)
          (dense connections: block l reads every earlier block; zero padding of one
           row before the first position keeps |s| positions, row j sees rows j-1, j)
    e_l = V3 e_|s|                                               [k]      (eq. 6)
    alpha^l_j = softmax_j  v_l^T sigmoid(V1_l c^l_j + e_l)                (eq. 7)
    s^l = sum_j alpha^l_j c^l_j                                  [k]      (eq. 8)
    m_s = mean_j e_j                                             [d]      (eq. 9)
    beta_l = softmax_l  u^T sigmoid(U1 s^l + U2 m_s)                      (eq. 10)
    s_g = sum_l beta_l s^l                                       [k]      (eq. 11)
    g = sigmoid(G1 s_g + G2 s_c + b_g),  s_c = e_|s|
    s_f = g * s_g + (1 - g) * s_c                                [d]      (eq. 12)
    y_i = softmax_i(s_f^T e_i)

Deviations from the paper:
- The number of filters per block k equals d (the gated fusion, eq. 12, adds s_g and s_c
  element-wise, so their widths must agree).
- Empty window slots (item 0) are zeroed after every block and excluded from both
  attentions and the mean, so a right-aligned window scores like the unpadded session.
- The height-2 convolution pads one zero row *before* the first position (causal), so
  position j combines clicks j-1 and j.
- Serving state is the window of the last ``max_length`` = 19 clicks (``models.window``);
  training uses the same cap (every prefix -> next click).
- The ReLU after each block and the optimiser settings are this implementation's choices
  (the paper gives none): Adam, batch 512, lr 3e-2. With NARM's lr 1e-3, which this file
  used before, HMN never left the popularity plateau on small data: the densely connected
  blocks' outputs are dominated by their biases while the item vectors are small, so the
  multi-scale vector s_g is nearly the same for every session and only popularity can be
  learned (between-session spread 7% of its mean after 30 epochs, in a throw-away
  diagnostic). Larger steps leave it (seed 0, best validation epoch; docs/results.md,
  "What we changed and why"):
  retailrocket-users 4.97 / 1.66 -> 58.10 / 38.80 Recall@20 / MRR@20, yoochoose-100k
  59.54 / 30.70 -> 67.53 / 36.25, diginetica-sample 53.21 / 43.84 -> 78.90 / 39.63. As the
  paper gives no recipe, ``--paper-recipe`` changes nothing here; ``--lr 1e-3`` is the old.
- The item table starts Xavier-normal (``models.window.init_item_table_``; the paper does
  not say), as NARM's authors' code does, whose training settings HMN uses here: torch's
  N(0, 1) default gave a model that mostly re-ranks the session's own clicks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.base import ModelConfig
from models.registry import register
from models.window import WindowModel, init_item_table_, masked_softmax


@dataclass
class HmnConfig(ModelConfig):
    embedding_dim: int = 30        # d (= k, filters per block)
    blocks: int = 4                # convolutional blocks = scales
    max_length: int = 19           # window W
    # training (read by training.fit.loop)
    batch_size: int = 512
    optimizer: str = "adam"
    learning_rate: float = 3e-2       # see deviations (was 1e-3, NARM's)
    epochs: int = 30
    min_epochs: int = 30              # as NARM: all epochs, the best validation one kept


@register
class Hmn(WindowModel):
    name = "hmn"
    config_class = HmnConfig
    config: HmnConfig

    def __init__(self, n_items: int, n_users: int, config: ModelConfig | None = None):
        super().__init__(n_items, n_users, config)
        d, blocks = self.config.embedding_dim, self.config.blocks
        if blocks < 1:
            raise ValueError(f"hmn: blocks must be >= 1, got {blocks}")
        self.embedding = nn.Embedding(n_items + 1, d, padding_idx=0)             # [N+1, d]
        init_item_table_(self.embedding)
        # block 1: a 1 x d filter per channel is a per-position linear map d -> k;
        # block l: height-2 filters over (l-1)k channels = a linear map of [row j-1; row j]
        self.convs = nn.ModuleList([nn.Linear(d, d)] + [
            nn.Linear(2 * (block - 1) * d, d) for block in range(2, blocks + 1)])
        self.v1 = nn.ModuleList([nn.Linear(d, d, bias=False) for _ in range(blocks)])  # V1_l
        self.v_att = nn.ModuleList([nn.Linear(d, 1, bias=False) for _ in range(blocks)])  # v_l
        self.v3 = nn.Linear(d, d, bias=False)                                     # V3
        self.u1 = nn.Linear(d, d, bias=False)                                     # U1
        self.u2 = nn.Linear(d, d, bias=False)                                     # U2
        self.u = nn.Linear(d, 1, bias=False)                                      # u
        self.g1 = nn.Linear(d, d, bias=True)                                      # G1, b_g
        self.g2 = nn.Linear(d, d, bias=False)                                     # G2

    def scales(self, embedded: Tensor, valid: Tensor) -> list[Tensor]:
        """Densely connected CNN (eq. 4-5): E [B, W, d], valid [B, W] -> 'blocks'
        feature maps C^l, each [B, W, k]; empty slots are 0."""
        keep = valid.unsqueeze(2).to(embedded.dtype)                              # [B, W, 1]
        maps = [torch.relu(self.convs[0](embedded)) * keep]                       # C^1
        for conv in self.convs[1:]:
            below = torch.cat(maps, dim=2)                                        # [B, W, (l-1)k]
            previous = torch.cat([torch.zeros_like(below[:, :1]), below[:, :-1]], dim=1)
            maps.append(torch.relu(conv(torch.cat([previous, below], dim=2))) * keep)
        return maps

    def item_vectors(self) -> Tensor:
        return self.embedding.weight                                              # [N+1, d]

    def attentions(self, window: Tensor) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
        """Per-scale and cross-scale attention (eq. 6-11): window [B, W] -> (alpha^l
        [B, W] per scale, beta [B, L], s_g [B, k], e_|s| [B, d])."""
        valid = window != 0
        embedded = self.embedding(window)                                         # [B, W, d]
        last = embedded[:, -1]                                                    # e_|s| [B, d]
        e_l = self.v3(last)                                                       # eq. 6
        alphas, per_scale = [], []
        for maps, v1, v in zip(self.scales(embedded, valid), self.v1, self.v_att, strict=True):
            logits = v(torch.sigmoid(v1(maps) + e_l.unsqueeze(1))).squeeze(2)    # [B, W]
            alpha = masked_softmax(logits, valid)                                 # eq. 7
            alphas.append(alpha)
            per_scale.append((alpha.unsqueeze(2) * maps).sum(1))                  # s^l, eq. 8
        s = torch.stack(per_scale, dim=1)                                         # [B, L, k]
        count = valid.sum(1, keepdim=True).clamp(min=1).to(embedded.dtype)        # [B, 1]
        mean = embedded.sum(1) / count                                            # m_s, eq. 9
        beta = torch.softmax(                                                     # eq. 10
            self.u(torch.sigmoid(self.u1(s) + self.u2(mean).unsqueeze(1))).squeeze(2), dim=1)
        s_g = (beta.unsqueeze(2) * s).sum(1)                                      # eq. 11
        return alphas, beta, s_g, last

    def query(self, window: Tensor) -> Tensor:
        """s_f (eq. 12): [B, W] -> [B, d]."""
        _, _, s_g, last = self.attentions(window)
        gate = torch.sigmoid(self.g1(s_g) + self.g2(last))                        # eq. 12
        return gate * s_g + (1.0 - gate) * last                                   # s_f [B, d]
