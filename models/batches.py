"""What the models read from training batches: the protocols that ``training.fit.batching``
fulfils, so a model never imports the training package."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class ParallelSteps(Protocol):
    """What session-/user-parallel training batches provide (``training.fit.batching``).

    Every tensor is [B, T]: B parallel rows, T consecutive steps. Row b at step t feeds
    ``items[b, t]`` and is trained to predict ``targets[b, t]`` (0 = no target). Rows
    whose data ran out are idle: item 0, target 0.
    """

    items: Tensor          # [B, T] int64
    targets: Tensor        # [B, T] int64
    session_start: Tensor  # [B, T] bool: first click of a session on this row
    user_start: Tensor     # [B, T] bool: first click of a new user on this row


class UserSteps(ParallelSteps, Protocol):
    """User-parallel steps that also carry each step's user index (RUM, BPR-MF, FPMC)."""

    users: Tensor          # [B, T] int64: 0 = anonymous / idle


class PrefixSteps(Protocol):
    """One target per row after a right-padded prefix of the same session (NARM-style)."""

    items: Tensor    # [B, T] int64, right-padded with 0
    lengths: Tensor  # [B] int64, clicks in each prefix (>= 1)
    targets: Tensor  # [B] int64
    users: Tensor    # [B] int64 (0 = anonymous)
