"""Shared serving/training plumbing of the window models (NARM, HMN, HLN).

These models read the whole (recent) session at every prediction, so their serving
state is the bounded click window itself, not a recurrent vector:

* state ``window``: int64 [B, W], the W most recent clicks, **right-aligned**: the newest
  click is in the last column, older ones to its left, 0 = empty slot (a session shorter
  than W has zeros on the left).
* ``advance`` shifts the window one column to the left and writes the new click into the
  last column; item 0 leaves the row unchanged.
* ``score`` runs the network over the window: the subclass's ``query`` maps the window to
  a vector q [B, E] and the scores are dot products with the item vectors,
  ``q @ item_vectors().T`` (all three papers end in such a softmax layer). Empty slots
  (item 0) are masked out wherever the network reads the window, so a window
  ``[0, 0, a, b]`` scores exactly like the session ``a, b``.
* ``forward(items [B, T], state)`` advances through the T columns, stacks the window
  after each position ([B, T, W]) and scores all of them in one batched call: the
  "window at each position" forward, equal to stepping by construction.
* ``loss`` (``batching = "prefix"``): the window after each prefix (the last W clicks),
  full softmax cross-entropy against the next click.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from models.base import SessionModel, State, StateSpec

#: Stand-in for -inf in masked softmaxes: exp() of it is exactly 0 next to any real score,
#: and unlike -inf a fully masked row gives no NaN (ONNX Runtime and torch agree).
MASK_VALUE = -1e9


def shift_in(window: Tensor, item: Tensor) -> Tensor:
    """window [B, W] int64, item [B] -> [B, W]: drop the oldest column, append ``item``;
    rows with item 0 are unchanged."""
    shifted = torch.cat([window[:, 1:], item.unsqueeze(1)], dim=1)        # [B, W]
    return torch.where((item != 0).unsqueeze(1), shifted, window)


def masked_softmax(logits: Tensor, valid: Tensor, dim: int = -1) -> Tensor:
    """Softmax over the ``valid`` entries along ``dim``; exactly 0 elsewhere, and all 0
    when nothing is valid. logits and valid broadcast to the same shape."""
    weights = torch.softmax(torch.where(valid, logits, torch.full_like(logits, MASK_VALUE)),
                            dim=dim)
    return weights * valid.to(weights.dtype)


def init_item_table_(embedding: torch.nn.Embedding) -> None:
    """Xavier-normal item table (std sqrt(2 / (N + 1 + E)), about the NARM authors'
    sqrt(2 / N)), padding row 0. With torch's N(0, 1) default every random item vector is
    long and nearly orthogonal to the others, so from the first updates a window model
    scores the session's own items far above the rest and learns little else (HMN,
    ``experiments/init_compare.py --model hmn``: 0.65 vs 4.97 Recall@20 on retailrocket-users)."""
    with torch.no_grad():
        torch.nn.init.xavier_normal_(embedding.weight)
        embedding.weight[0].zero_()


class WindowModel(SessionModel):
    """Base of the window models. Subclasses define ``query`` and ``item_vectors`` and
    keep ``max_length`` (the window width W) in their config."""

    batching = "prefix"

    @property
    def window_size(self) -> int:
        return int(self.config.max_length)  # type: ignore[attr-defined]

    def state_spec(self) -> list[StateSpec]:
        return [StateSpec("window", (self.window_size,), "int64", "session")]

    def advance(self, item: Tensor, state: State) -> State:
        return {"window": shift_in(state["window"], item)}

    def query(self, window: Tensor) -> Tensor:
        """Session representation from the window: [B, W] -> [B, E]."""
        raise NotImplementedError

    def item_vectors(self) -> Tensor:
        """Output item vectors e_i: [N+1, E] (row 0 = padding)."""
        raise NotImplementedError

    def score(self, state: State) -> Tensor:
        scores = self.query(state["window"]) @ self.item_vectors().T               # [B, N+1]
        return self.mask_padding(scores)

    def windows(self, items: Tensor, window: Tensor) -> Tensor:
        """Window after each position: items [B, T], start window [B, W] -> [B, T, W]."""
        out = []
        for position in range(items.shape[1]):
            window = shift_in(window, items[:, position])
            out.append(window)
        return torch.stack(out, dim=1)

    def forward(self, items: Tensor, state: State) -> Tensor:
        windows = self.windows(items, state["window"])                    # [B, T, W]
        scores = self.score({"window": windows.flatten(0, 1)})            # [B*T, N+1]
        return scores.view(items.shape[0], items.shape[1], -1)            # [B, T, N+1]

    def loss(self, batch: Any) -> Tensor:
        """Cross-entropy over all items of the next click after each prefix
        (``PrefixBatch``: items [B, T] right-padded, targets [B])."""
        start = self.start_session({}, batch.items.shape[0])["window"]
        window = self.windows(batch.items, start)[:, -1]                  # [B, W]
        # items 1..N only; slicing the weights (not the [B, N+1] scores) keeps the
        # backward pass from materialising a second score-sized tensor
        logits = self.query(window) @ self.item_vectors()[1:].T          # [B, N]
        return F.cross_entropy(logits, batch.targets - 1)
