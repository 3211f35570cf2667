"""RUM: recommender with user memory networks, item level (RUM-I) and feature level (RUM-F).

Paper: X. Chen, H. Xu, Y. Zhang, J. Tang, Y. Cao, Z. Qin, H. Zha. "Sequential
Recommendation with User Memory Networks", WSDM 2018. Defaults: K = 20 memory slots,
D = 50 (the paper tunes D in {10, ..., 50}), α = 0.2 (MERGE weight; the paper sweeps it in
Fig. 3), β = 1. Training settings (Adam, lr 0.01, 32 user rows x 10 events per update)
are ours, tuned briefly on movielens-small (README, RUM protocol).

Model (user u, candidate item i, item embeddings q_i, memory M^u = [m_1 .. m_K])::

    p_u   = MERGE(p*_u, p^m_u) = p*_u + α p^m_u                              eq. 2-3
    ŷ_ui  = σ(p_uᵀ q_i)                                                        eq. 4
    L     = -Σ log σ(ŷ_ui) - Σ log(1 - σ(ŷ_uj)) + λ ||Θ||²    (j sampled)      eq. 5

  item level (RUM-I): m_k = q of the k-th most recent item of u (FIFO, K slots)
    z_ik  = softmax_k(β q_iᵀ m_k)   over the filled slots only                eq. 7
    p^m_u = Σ_k z_ik m_k            (0 while the memory is empty)             eq. 8
    write: push q_j of the clicked item j, drop the oldest when full

  feature level (RUM-F): global latent features F = [f_1 .. f_K] (K × D)
    z_ik  = softmax_k(β q_iᵀ f_k)                                             eq. 9
    p^m_u = Σ_k z_ik m_k                                                       eq. 10
    write (clicked item j): erase_j = σ(E q_j + b_E), add_j = tanh(A q_j + b_A)
    m_k  <- m_k ⊙ (1 - z_jk erase_j)                                          eq. 11-12
    m_k  <- m_k + z_jk add_j                                                  eq. 13

Full-catalogue scoring (scores are the logits p_u(i)ᵀ q_i; σ is monotone), with
S = Q Mᵀ [N+1, K] per user:  s_i = q_iᵀ p*_u + α Σ_k z_ik S_ik.  RUM-I: z = softmax(β S),
O(N·K·D) per request, computed as one matmul, a softmax and a sum over the contiguous
slot axis (``_item_read``). RUM-F: z = softmax(β Q Fᵀ) depends on the parameters only, so outside
training it is computed once per parameter version and the exported score graph holds it
as a constant [N+1, K] (a request then costs O(N·K) for the read plus the S = Q Mᵀ
product, against RUM-I's candidate-dependent softmax per row).

Deviations from the paper:
- Serving mapping (see ``models.user_seq``): the session state holds a copy of M^u taken
  at session start, ``advance`` applies the write for each click, ``end_session`` returns
  the session's memory as the new M^u. ``p*_u`` is part of the user state; users unknown at
  training time (every user the service sees, which knows only external ids) get a
  learned default intrinsic embedding (row 0 of the user table, trained by user dropout).
- RUM-I stores the *item indices* of the K most recent clicks (newest first, 0 = empty
  slot), not their embedding vectors: M^u = Q[slots]. Same values, but the state survives
  retraining and is 20 int64s in Redis.
- Gradients flow through the memory within a training chunk (``bptt`` events) only; the
  carried memory is detached between chunks.
- L2 (λ) on the embeddings used by each training event instead of on all parameters.
- FPMC (the paper's K = 1 special case) is its own model, ``models/fpmc.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.base import ModelConfig, State, StateSpec
from models.registry import register
from models.user_seq import UserSequenceConfig, UserSequenceModel

VARIANTS = ("item", "feature")


@dataclass
class RUMConfig(UserSequenceConfig):
    variant: str = "item"           # "item" (RUM-I) or "feature" (RUM-F)
    memory_slots: int = 20          # K
    alpha: float = 0.2              # MERGE weight of the memory embedding
    beta: float = 1.0               # read softmax strength


@dataclass
class RUMFeatureConfig(RUMConfig):
    variant: str = "feature"


class RUM(UserSequenceModel):
    name = "rum"
    config_class = RUMConfig
    config: RUMConfig
    # Both reads make a [B, N+1, K] tensor, memory-bound when many sessions share a score
    # run: at 40k items per session RUM-I 2.4 ms in runs of 1-2 against 3.6 ms in runs of
    # 16-32, RUM-F 1.3 ms in runs of 2 against 3.6 ms in runs of 32.
    score_rows = 2

    def __init__(self, n_items: int, n_users: int, config: ModelConfig | None = None):
        super().__init__(n_items, n_users, config)
        cfg = self.config
        self._check_variant("rum", cfg.variant, VARIANTS)
        if cfg.memory_slots < 1:
            raise ValueError(f"{self.name}: memory_slots must be >= 1, got {cfg.memory_slots}")
        dim = cfg.embedding_size
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=0)        # Q [N+1, D]
        nn.init.normal_(self.item_embedding.weight, std=0.1)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        if cfg.variant == "feature":
            self.features = nn.Parameter(0.1 * torch.randn(cfg.memory_slots, dim))  # F [K, D]
            self.erase = nn.Linear(dim, dim)                                       # E, b_E
            self.add = nn.Linear(dim, dim)                                         # A, b_A
        self._weights_cache: tuple[tuple[int, ...], Tensor] | None = None

    def memory_spec(self) -> list[StateSpec]:
        cfg = self.config
        if cfg.variant == "item":
            return [StateSpec("slots", (cfg.memory_slots,), "int64", "session")]
        return [StateSpec("memory", (cfg.memory_slots, cfg.embedding_size), "float32",
                          "session")]

    # ---- read ---------------------------------------------------------------------
    def _feature_weights(self, items: Tensor | None) -> Tensor:
        """z_ik = softmax_k(β q_iᵀ f_k): [N+1, K] for all items, [B, C, K] for items [B, C]."""
        if items is None and not self.training and not torch.is_grad_enabled():
            return self._precomputed_feature_weights()
        q = self.item_embedding.weight if items is None else self.item_embedding(items)
        return torch.softmax(self.config.beta * (q @ self.features.T), dim=-1)

    def train(self, mode: bool = True) -> RUM:
        super().train(mode)
        if not mode and self.config.variant == "feature":
            with torch.no_grad():  # fill the cache now, so an export traces a constant
                self._precomputed_feature_weights()
        return self

    def _precomputed_feature_weights(self) -> Tensor:
        """All items' read weights [N+1, K], computed once per parameter version. They
        depend on the parameters only, so outside training they are a constant: the
        exporter writes them into the score graph as one (an [N+1, K] initializer instead
        of N·K·D multiply-adds and a softmax per request)."""
        table, features = self.item_embedding.weight, self.features
        key = (table._version, features._version, table.data_ptr(), features.data_ptr())
        if self._weights_cache is None or self._weights_cache[0] != key:
            q = table.detach()
            weights = torch.softmax(self.config.beta * (q @ features.detach().T), dim=-1)
            self._weights_cache = (key, weights)
        return self._weights_cache[1]

    def _memory_vectors(self, memory: State) -> tuple[Tensor, Tensor]:
        """M [B, K, D] and the filled-slot mask [B, K] (float)."""
        if self.config.variant == "item":
            slots = memory["slots"]                                                # [B, K]
            return self.item_embedding(slots), (slots != 0).to(torch.float32)
        values = memory["memory"]
        return values, torch.ones(values.shape[:2], device=values.device)

    def candidate_scores(self, intrinsic: Tensor, memory: State,
                         candidates: Tensor | None) -> Tensor:
        cfg = self.config
        vectors, filled = self._memory_vectors(memory)                             # [B,K,D]
        q = self.item_embedding.weight if candidates is None else self.item_embedding(candidates)
        base = (intrinsic @ q.T if candidates is None                              # [B, N+1]
                else (q * intrinsic.unsqueeze(1)).sum(-1))                         # [B, C]
        if cfg.variant == "item":
            return base + cfg.alpha * self._item_read(q, vectors, filled)
        # q_iᵀ (p* + α Σ_k z_ik m_k) = q_iᵀ p* + α Σ_k z_ik S_ki, z from eq. 9
        if candidates is None:
            similarity = torch.matmul(vectors, q.T)                                # [B, K, N+1]
            weights = self._feature_weights(None).T.unsqueeze(0)                   # [1, K, N+1]
        else:
            similarity = vectors @ q.transpose(1, 2)                               # [B, K, C]
            weights = self._feature_weights(candidates).transpose(1, 2)            # [B, K, C]
        return base + cfg.alpha * (weights * similarity).sum(1)

    def _item_read(self, q: Tensor, vectors: Tensor, filled: Tensor) -> Tensor:
        """RUM-I's read for every candidate, q_iᵀ p^m_u = Σ_k softmax_k(β S_ik) S_ik over
        the filled slots (eq. 7-8; 0 while the memory is empty), laid out [B, C, K] so the
        softmax and the sum run over the contiguous slot axis, with the empty-slot mask
        folded into the product as one more column: L = [q 1] [βM' | bias]ᵀ in one matmul.
        An empty slot k gets the newest slot's vector and a bias of -40, so its logit is the
        newest slot's minus 40: its weight is at most e^-40 of the row's largest, nothing in
        float32, while exp stays clear of denormal floats (a -1e9 mask underflowed to them,
        which x86 computes in microcode: 8.6 ms per served click with some slots empty
        against 2.5 ms with none or all). q: [C, D] (shared) or [B, C, D]; vectors
        [B, K, D], newest first; filled [B, K]. Returns [B, C]."""
        beta = self.config.beta
        ones = torch.ones_like(q[..., :1])
        q_aug = torch.cat([q, ones], dim=-1)                                       # [.., C, D+1]
        keys = torch.where(filled.unsqueeze(2) > 0, vectors, vectors[:, :1])      # [B, K, D]
        bias = (filled - 1.0) * 40.0                                               # [B, K]
        m_aug = torch.cat([beta * keys, bias.unsqueeze(2)], dim=2)                 # [B, K, D+1]
        logits = torch.matmul(q_aug, m_aug.transpose(1, 2))                        # [B, C, K]
        weights = torch.softmax(logits, dim=2)
        read = (weights * logits).sum(2) / beta                                    # [B, C]
        return torch.where(filled.sum(1, keepdim=True) > 0, read, torch.zeros_like(read))

    # ---- write --------------------------------------------------------------------
    def write(self, item: Tensor, memory: State) -> State:
        clicked = item != 0                                                        # [B]
        if self.config.variant == "item":
            slots = memory["slots"]                                                # [B, K]
            pushed = torch.cat([item.unsqueeze(1), slots[:, :-1]], dim=1)          # FIFO
            return {"slots": torch.where(clicked.unsqueeze(1), pushed, slots)}
        values = memory["memory"]                                                  # [B, K, D]
        q = self.item_embedding(item)                                              # [B, D]
        z = self._feature_weights(item.unsqueeze(1)).squeeze(1).unsqueeze(2)       # [B, K, 1]
        erase = torch.sigmoid(self.erase(q)).unsqueeze(1)                          # [B, 1, D]
        add = torch.tanh(self.add(q)).unsqueeze(1)                                 # [B, 1, D]
        written = values * (1 - z * erase) + z * add                               # eq. 11-13
        return {"memory": torch.where(clicked.view(-1, 1, 1), written, values)}

    def regularised_parameters(self, users: Tensor, items: Tensor) -> list[Tensor]:
        return [self.user_embedding(users), self.item_embedding(items).flatten(1)]


@register
class RUMItem(RUM):
    """RUM-I: the memory holds the K most recent items."""

    name = "rum-item"


@register
class RUMFeature(RUM):
    """RUM-F: the memory holds K latent feature slots written by erase/add."""

    name = "rum-feature"
    config_class = RUMFeatureConfig
