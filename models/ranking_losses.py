"""The ranking losses of the GRU4Rec family (GRU4Rec, HRNN): TOP1 and BPR-max over the
in-batch negatives of session-/user-parallel training, or a full-softmax cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def in_batch_scores(hidden: Tensor, targets: Tensor, output_weight: Tensor,
                    output_bias: Tensor) -> Tensor:
    """Scores of every row against every row's target: [A, H] x [A] -> [A, A]; the
    diagonal holds the positives, the rest are the session-parallel negatives."""
    return hidden @ output_weight[targets].T + output_bias[targets]


def top1_loss(scores: Tensor) -> Tensor:
    """TOP1 (Hidasi et al. 2016, eq. in sec. 3.1.3) with in-batch negatives::

        L_i = 1/N_S * sum_{j != i} sigmoid(r_j - r_i) + sigmoid(r_j ** 2)

    scores: [A, A] (already through the final activation); mean over rows."""
    size = scores.shape[0]
    positive = scores.diagonal().unsqueeze(1)                      # [A, 1]
    terms = torch.sigmoid(scores - positive) + torch.sigmoid(scores ** 2)
    off_diagonal = ~torch.eye(size, dtype=torch.bool, device=scores.device)
    return (terms * off_diagonal).sum(1).div(size - 1).mean()


def bpr_max_loss(scores: Tensor, regularization: float) -> Tensor:
    """BPR-max (Hidasi & Karatzoglou 2018): softmax-weighted BPR over the negatives plus
    the score regulariser ``regularization * sum_j s_j r_j**2``."""
    size = scores.shape[0]
    positive = scores.diagonal().unsqueeze(1)
    off_diagonal = ~torch.eye(size, dtype=torch.bool, device=scores.device)
    masked = scores.masked_fill(~off_diagonal, float("-inf"))
    weights = torch.softmax(masked, dim=1)                         # s_j over negatives
    bpr = (weights * torch.sigmoid(positive - scores)).sum(1)
    penalty = (weights * scores ** 2).sum(1)
    return (-torch.log(bpr + 1e-24) + regularization * penalty).mean()


def final_activation(scores: Tensor, loss: str) -> Tensor:
    """GRU4Rec's output non-linearity for the pairwise losses: tanh for TOP1 (keeps the
    sigmoid(r_j**2) regulariser bounded); identity otherwise. Monotone, so serving
    rankings use the raw logits."""
    return torch.tanh(scores) if loss == "top1" else scores


LOSSES = ("top1", "bpr-max", "ce")


def ranking_loss(hidden: Tensor, targets: Tensor, output_weight: Tensor, output_bias: Tensor,
                 loss: str, bpreg: float) -> Tensor | None:
    """The per-step loss for rows with a target. hidden: [B, H], targets: [B] (0 = none).
    Returns None when the step has too few rows (pairwise losses need >= 2 rows)."""
    active = targets != 0
    count = int(active.sum())
    if loss == "ce":
        if count == 0:
            return None
        logits = hidden[active] @ output_weight[1:].T + output_bias[1:]   # [A, N]
        return F.cross_entropy(logits, targets[active] - 1)
    if count < 2:
        return None
    scores = in_batch_scores(hidden[active], targets[active], output_weight, output_bias)
    scores = final_activation(scores, loss)
    if loss == "top1":
        return top1_loss(scores)
    return bpr_max_loss(scores, bpreg)
