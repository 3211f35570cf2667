"""Full-ranking next-item metrics: ranks with an explicit tie policy, accuracy metrics from
ranks, catalogue coverage / popularity bias from top-K lists, and bucketed breakdowns.

Every metric here is computed against the whole catalogue (all ``n_items`` columns of a
score row), never against sampled negatives: sampled metrics are known to reorder models
(Krichene & Rendle, 2020), and the service ranks the full catalogue too.

Ranks are 1-based. Column 0 of a score row is the padding item; it is ``-inf`` by the model
contract and is excluded from ranking explicitly, so a model that forgets to mask it, or a
target that scores ``-inf`` itself, cannot move a rank.

The tie policy matters for models that emit many equal scores (``pop`` on a long tail, an
untrained model, an all-zero user state): counting ties in the model's favour inflates
Recall@K, so the default is ``pessimistic``.

* ``pessimistic``: rank = 1 + #{j != t : s_j >= s_t}
* ``optimistic``:  rank = 1 + #{j : s_j > s_t}
* ``average``:     the mean of the two (ties share the middle rank; may be fractional)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor

TiePolicy = Literal["pessimistic", "optimistic", "average"]
TIE_POLICIES: tuple[str, ...] = get_args(TiePolicy)

#: Bucket edges (lower bounds) of the breakdowns the papers report. A label covers
#: ``[edge_i, edge_{i+1})``; the last bucket is open-ended ("10+").
POSITION_EDGES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
HISTORY_EDGES: tuple[int, ...] = (0, 1, 2, 3, 5, 10)
SESSION_LENGTH_EDGES: tuple[int, ...] = (2, 3, 4, 5, 6, 10, 20)


def check_tie_policy(tie_policy: str) -> TiePolicy:
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"unknown tie policy {tie_policy!r}; "
                         f"choose one of {', '.join(TIE_POLICIES)}")
    return tie_policy  # type: ignore[return-value]


def check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    """Sorted, de-duplicated cut-offs; each must be a positive integer."""
    values = tuple(ks)
    if not values:
        raise ValueError("at least one cut-off K is needed")
    for k in values:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"cut-off K must be a positive integer, got {k!r}")
    return tuple(sorted({int(k) for k in values}))


_COMPARE = {"ge": (np.greater_equal, torch.ge), "gt": (np.greater, torch.gt),
            "eq": (np.equal, torch.eq)}


def _count_per_row(body: Tensor, target_scores: Tensor, op: str) -> Tensor:
    """#{j : body[b, j] <op> target_scores[b]} as float64 [B], in one pass.

    On CPU this goes through numpy (zero-copy): its compare + count_nonzero is several
    times faster than torch's bool reduction there, and this pass is the cost of ranking
    a 40k-item catalogue."""
    numpy_op, torch_op = _COMPARE[op]
    if body.device.type == "cpu" and body.dtype in (torch.float32, torch.float64):
        counts = np.count_nonzero(numpy_op(body.detach().numpy(),
                                           target_scores.detach().numpy()), axis=1)
        return torch.from_numpy(counts.astype(np.float64))
    return torch_op(body, target_scores).sum(dim=1).to(torch.float64)


def rank_targets(scores: Tensor, targets: Tensor, tie_policy: str = "pessimistic",
                 check_nan: bool = True) -> Tensor:
    """1-based rank of each row's target among items ``1..n_items`` (column 0 excluded).

    scores: [B, n_items + 1] float; targets: [B] int64 in ``1..n_items``. One comparison
    pass over the score matrix per batch (two for ``average``). Returns float64 ranks [B].
    Raises ``ValueError`` on NaN scores, which would otherwise rank silently: a NaN target
    score is always checked; ``check_nan=False`` skips the full-matrix scan (the evaluator
    does, because ``TopKTracker`` sees any NaN at the head of its top-K lists anyway).
    """
    policy = check_tie_policy(tie_policy)
    if scores.dim() != 2 or targets.dim() != 1 or scores.shape[0] != targets.shape[0]:
        raise ValueError(f"scores must be [B, n_items + 1] and targets [B]; got "
                         f"{tuple(scores.shape)} and {tuple(targets.shape)}")
    if targets.numel() == 0:
        return torch.zeros(0, dtype=torch.float64, device=scores.device)
    if int(targets.min()) < 1 or int(targets.max()) >= scores.shape[1]:
        raise ValueError(f"target items must lie in 1..{scores.shape[1] - 1}; got "
                         f"{int(targets.min())}..{int(targets.max())}")
    body = scores[:, 1:]
    target_scores = scores.gather(1, targets.view(-1, 1))
    if bool(torch.isnan(target_scores).any()) or (check_nan and bool(torch.isnan(body).any())):
        raise ValueError("model produced NaN scores; cannot rank")
    if policy == "pessimistic":
        # >= counts the target itself, which supplies the "1 +".
        return _count_per_row(body, target_scores, "ge")
    ahead = _count_per_row(body, target_scores, "gt")
    if policy == "optimistic":
        return ahead + 1.0
    tied_others = _count_per_row(body, target_scores, "eq") - 1.0
    return ahead + 1.0 + tied_others / 2.0


def metrics_from_ranks(ranks: np.ndarray | Sequence[float], ks: Iterable[int]) -> dict[str, float]:
    """Accuracy metrics (fractions in [0, 1]) from 1-based ranks, one target per case.

    ``recall@K`` (= HR@K) = share of ranks <= K; ``mrr@K`` = mean of 1/rank, 0 beyond K;
    ``ndcg@K`` = mean of 1/log2(rank + 1), 0 beyond K (one relevant item, so IDCG = 1);
    ``precision@K`` = recall@K / K (one relevant item per list). With no ranks every
    metric is 0.0 and ``n`` is 0 (JSON has no NaN).
    """
    values = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    n = int(values.size)
    for k in check_ks(ks):
        if n == 0:
            recall = mrr = ndcg = 0.0
        else:
            hit = values <= k
            recall = float(hit.mean())
            mrr = float(np.where(hit, 1.0 / values, 0.0).mean())
            ndcg = float(np.where(hit, 1.0 / np.log2(values + 1.0), 0.0).mean())
        out[f"recall@{k}"] = recall
        out[f"mrr@{k}"] = mrr
        out[f"ndcg@{k}"] = ndcg
        out[f"precision@{k}"] = recall / k
    out["n"] = n
    return out


def popularity_percentiles(counts: np.ndarray) -> np.ndarray:
    """Mid-rank popularity percentile of each item from its training click count.

    counts: [n_items + 1] with index 0 = padding. Returns float64 [n_items + 1] in [0, 1]:
    ``(#items less popular + 0.5 * #other items equally popular + 0.5) / n_items``, so 1.0
    means "the most popular item", ~0.5 the median item, and ties share one value. A
    percentile (rather than a raw count) keeps ``popularity@K`` comparable across datasets
    with very different click volumes. Index 0 gets 0.
    """
    body = np.asarray(counts[1:], dtype=np.float64)
    n = body.size
    out = np.zeros(n + 1, dtype=np.float64)
    if n == 0:
        return out
    ordered = np.sort(body)
    less = np.searchsorted(ordered, body, side="left")
    less_or_equal = np.searchsorted(ordered, body, side="right")
    out[1:] = (less + 0.5 * (less_or_equal - less)) / n
    return out


class TopKTracker:
    """Accumulates the top-K lists the model would serve, for ``coverage@K`` (share of the
    catalogue that appears in at least one top-K list) and ``popularity@K`` (mean
    popularity percentile over all recommended slots; see ``popularity_percentiles``).

    Ties inside a top-K list are broken by ``torch.topk`` (arbitrarily), as a server would.
    Lives on the scores' device so the per-batch update never leaves the GPU.
    """

    def __init__(self, n_items: int, ks: Iterable[int], percentiles: np.ndarray,
                 device: torch.device | None = None):
        if percentiles.shape != (n_items + 1,):
            raise ValueError(f"percentiles must have shape ({n_items + 1},), "
                             f"got {percentiles.shape}")
        self.n_items = n_items
        self.ks = check_ks(ks)
        self.k_max = min(max(self.ks), n_items)
        self.percentiles = np.asarray(percentiles, dtype=np.float64)
        # How often each item was recommended: integer counts, so the summary does not
        # depend on batch size or order (float sums would, in the last bits).
        self.recommended = {k: torch.zeros(n_items + 1, dtype=torch.int64, device=device)
                            for k in self.ks}

    def update(self, scores: Tensor) -> None:
        if scores.shape[0] == 0 or self.k_max == 0:
            return
        values, top = torch.topk(scores[:, 1:], self.k_max, dim=1, sorted=True)
        # topk orders NaN above everything, so a NaN anywhere in a row shows up here.
        if bool(torch.isnan(values[:, 0]).any()):
            raise ValueError("model produced NaN scores; cannot rank")
        top = top + 1
        for k in self.ks:
            chosen = top[:, : min(k, self.k_max)].reshape(-1)
            self.recommended[k].index_add_(0, chosen, torch.ones_like(chosen))

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for k in self.ks:
            counts = self.recommended[k].cpu().numpy()
            slots = int(counts.sum())
            out[f"coverage@{k}"] = (float((counts[1:] > 0).sum()) / self.n_items
                                    if self.n_items else 0.0)
            out[f"popularity@{k}"] = (float(counts @ self.percentiles) / slots
                                      if slots else 0.0)
        return out


def bucket_labels(edges: Sequence[int]) -> list[str]:
    """Human labels of ``[edge_i, edge_{i+1})`` buckets: "3", "3-4", and "10+" for the last."""
    labels = []
    for i, low in enumerate(edges):
        if i == len(edges) - 1:
            labels.append(f"{low}+")
        else:
            high = edges[i + 1] - 1
            labels.append(str(low) if high == low else f"{low}-{high}")
    return labels


def bucketize(values: np.ndarray, edges: Sequence[int]) -> np.ndarray:
    """Bucket index of each value (``-1`` for values below the first edge)."""
    return np.searchsorted(np.asarray(edges), np.asarray(values), side="right") - 1


def breakdown(ranks: np.ndarray, values: np.ndarray, edges: Sequence[int],
              ks: Iterable[int]) -> list[dict[str, Any]]:
    """Recall@K / MRR@K / NDCG@K per bucket of ``values`` (one value per ranked case).

    Returns one JSON-ready row per non-empty bucket, in bucket order:
    ``{"bucket": "3-4", "low": 3, "n": 120, "recall@5": ..., "mrr@5": ..., ...}``.
    Values below the first edge get their own leading bucket (e.g. position 0, scored
    before any click of the session) rather than disappearing.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    values = np.asarray(values)
    cut_offs = check_ks(ks)
    index = bucketize(values, edges)
    labels = bucket_labels(edges)
    rows: list[dict[str, Any]] = []
    if (index < 0).any():
        below = values[index < 0]
        low, high = int(below.min()), int(below.max())
        label = str(low) if low == high else f"{low}-{high}"
        rows.append(_bucket_row(label, low, ranks[index < 0], cut_offs))
    for i, label in enumerate(labels):
        mask = index == i
        if mask.any():
            rows.append(_bucket_row(label, int(edges[i]), ranks[mask], cut_offs))
    return rows


def _bucket_row(label: str, low: int, ranks: np.ndarray, ks: tuple[int, ...]) -> dict[str, Any]:
    scores = metrics_from_ranks(ranks, ks)
    row: dict[str, Any] = {"bucket": label, "low": low, "n": int(ranks.size)}
    for k in ks:
        for name in ("recall", "mrr", "ndcg"):
            row[f"{name}@{k}"] = scores[f"{name}@{k}"]
    return row


def user_list_metrics(hits: np.ndarray, n_relevant: np.ndarray,
                      ks: Iterable[int]) -> dict[str, float]:
    """Per-user top-K list metrics of RUM (Chen et al., WSDM 2018, eq. 20-22), averaged
    over users: each user has one recommended list and a *set* of held-out items.

    hits: [U, K_max] bool, ``hits[u, j]`` = the list's (j+1)-th item is in u's test set;
    n_relevant: [U] int, the size of u's test set (>= 1). For each K:

    * ``precision@K`` = |R_K ∩ T| / K;  ``recall@K`` = |R_K ∩ T| / |T|
    * ``f1@K`` = 2 P R / (P + R) per user (0 when P + R = 0), then averaged
    * ``hr@K`` = 1 if R_K ∩ T is not empty
    * ``ndcg@K`` = Σ_j hit_j / log2(j + 1) over positions j = 1..K, divided by the ideal
      DCG Σ_{j=1..min(K, |T|)} 1 / log2(j + 1)

    A list shorter than K (a catalogue smaller than K) counts its missing slots as misses.
    ``n`` is the number of users.
    """
    hits = np.asarray(hits, dtype=bool)
    relevant = np.asarray(n_relevant, dtype=np.float64)
    if hits.ndim != 2 or relevant.shape != (hits.shape[0],):
        raise ValueError(f"hits must be [U, K] and n_relevant [U]; got {hits.shape} and "
                         f"{relevant.shape}")
    if relevant.size and relevant.min() < 1:
        raise ValueError("every user needs at least one relevant (test) item")
    out: dict[str, float] = {}
    n = hits.shape[0]
    discount = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2, dtype=np.float64))
    for k in check_ks(ks):
        if n == 0:
            for name in ("precision", "recall", "f1", "hr", "ndcg"):
                out[f"{name}@{k}"] = 0.0
            continue
        top = hits[:, :k]
        found = top.sum(axis=1).astype(np.float64)
        precision = found / k
        recall = found / relevant
        total = precision + recall
        f1 = np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1.0), 0.0)
        dcg = (top * discount[: top.shape[1]]).sum(axis=1)
        ideal_discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
        ideal = np.cumsum(ideal_discount)[np.minimum(relevant, k).astype(np.int64) - 1]
        out[f"precision@{k}"] = float(precision.mean())
        out[f"recall@{k}"] = float(recall.mean())
        out[f"f1@{k}"] = float(f1.mean())
        out[f"hr@{k}"] = float((found > 0).mean())
        out[f"ndcg@{k}"] = float((dcg / ideal).mean())
    out["n"] = n
    return out
