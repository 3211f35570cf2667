"""BPR-MF: matrix factorisation trained with Bayesian personalised ranking.

Paper: S. Rendle, C. Freudenthaler, Z. Gantner, L. Schmidt-Thieme. "BPR: Bayesian
Personalized Ranking from Implicit Feedback", UAI 2009 (a baseline of RUM, WSDM 2018).

Model::

    x_ui = p_uᵀ q_i
    L    = -Σ log σ(x_ui - x_uj) + λ (||p_u||² + ||q_i||² + ||q_j||²)   (j uniform)

Deviations from the paper:
- Trained with Adam on user-sequence batches (``models.user_seq``): every training event
  (u, i) is one positive with one uniformly sampled negative j, in time order, instead of
  LearnBPR's bootstrap sampling of (u, i, j) triples; the order does not matter to MF.
- ``p_u`` lives in the user state (``user_intrinsic``); users unknown at training time,
  which includes every user the service sees, get a learned default embedding (row 0 of
  the user table, trained by user dropout). There is no memory: sessions do not change
  the scores.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from models.base import ModelConfig, State, StateSpec
from models.registry import register
from models.user_seq import UserSequenceConfig, UserSequenceModel


@dataclass
class BPRConfig(UserSequenceConfig):
    """Only the shared fields."""


@register
class BPRMF(UserSequenceModel):
    name = "bpr"
    config_class = BPRConfig
    loss_kind = "bpr"

    def __init__(self, n_items: int, n_users: int, config: ModelConfig | None = None):
        super().__init__(n_items, n_users, config)
        self.item_embedding = nn.Embedding(n_items + 1, self.embedding_size)       # [N+1, D]
        nn.init.normal_(self.item_embedding.weight, std=0.1)

    def memory_spec(self) -> list[StateSpec]:
        return []

    def write(self, item: Tensor, memory: State) -> State:
        return {}

    def candidate_scores(self, intrinsic: Tensor, memory: State,
                         candidates: Tensor | None) -> Tensor:
        if candidates is None:
            return intrinsic @ self.item_embedding.weight.T                        # [B, N+1]
        q: Tensor = self.item_embedding(candidates)                                # [B, C, D]
        return (q * intrinsic.unsqueeze(1)).sum(-1)

    def regularised_parameters(self, users: Tensor, items: Tensor) -> list[Tensor]:
        return [self.user_embedding(users), self.item_embedding(items).flatten(1)]



