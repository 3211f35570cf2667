"""FPMC: factorising personalised Markov chains, with baskets of one item.

Paper: S. Rendle, C. Freudenthaler, L. Schmidt-Thieme. "Factorizing Personalized Markov
Chains for Next-Basket Recommendation", WWW 2010 (a baseline of RUM, WSDM 2018, which
shows FPMC is RUM-I with K = 1, sec. 4.3).

Model (user u, last item l, candidate i)::

    x_uli = p_uᵀ v^{IU}_i + (v^{IL}_i)ᵀ v^{LI}_l        eq. 5-6 with |B_{t-1}| = 1
    L     = -Σ log σ(x_uli - x_ulj) + λ ||Θ_used||²     (S-BPR, j uniform)

With v^{IU} = v^{IL} = q and v^{LI} = α q this is RUM-I's score with one slot
(``tests/models/test_rum.py`` checks it).

Deviations from the paper:
- Sequences of single clicks (baskets of size 1); before the user's first click the
  transition term is 0.
- Trained with Adam on user-sequence batches (``models.user_seq``): every event in time
  order with one uniform negative, not bootstrap-sampled quadruples.
- ``p_u`` lives in the user state; unknown users get a learned default embedding (row 0 of
  the user table). The last item ``l`` is the memory: session state ``last``, folded back
  into the user state when a session ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.base import ModelConfig, State, StateSpec
from models.registry import register
from models.user_seq import UserSequenceConfig, UserSequenceModel


@dataclass
class FPMCConfig(UserSequenceConfig):
    """The shared fields; D is the same size for both factorisations."""


@register
class FPMC(UserSequenceModel):
    name = "fpmc"
    config_class = FPMCConfig
    loss_kind = "bpr"

    def __init__(self, n_items: int, n_users: int, config: ModelConfig | None = None):
        super().__init__(n_items, n_users, config)
        dim = self.embedding_size
        self.item_user = nn.Embedding(n_items + 1, dim)                            # V^{IU}
        self.item_last = nn.Embedding(n_items + 1, dim)                            # V^{IL}
        self.last_item = nn.Embedding(n_items + 1, dim)                            # V^{LI}
        for table in (self.item_user, self.item_last, self.last_item):
            nn.init.normal_(table.weight, std=0.1)

    def memory_spec(self) -> list[StateSpec]:
        return [StateSpec("last", (1,), "int64", "session")]

    def write(self, item: Tensor, memory: State) -> State:
        last = memory["last"]                                                      # [B, 1]
        return {"last": torch.where((item != 0).unsqueeze(1), item.unsqueeze(1), last)}

    def candidate_scores(self, intrinsic: Tensor, memory: State,
                         candidates: Tensor | None) -> Tensor:
        last = memory["last"][:, 0]                                                # [B]
        seen = (last != 0).to(torch.float32).unsqueeze(1)                          # [B, 1]
        transition = self.last_item(last) * seen                                   # [B, D]
        if candidates is None:
            every: Tensor = (intrinsic @ self.item_user.weight.T
                             + transition @ self.item_last.weight.T)               # [B, N+1]
            return every
        user_part = (self.item_user(candidates) * intrinsic.unsqueeze(1)).sum(-1)  # [B, C]
        chosen: Tensor = user_part + (self.item_last(candidates)
                                      * transition.unsqueeze(1)).sum(-1)
        return chosen

    def regularised_parameters(self, users: Tensor, items: Tensor) -> list[Tensor]:
        return [self.user_embedding(users), self.item_user(items).flatten(1),
                self.item_last(items).flatten(1)]
