"""The one interface every nextclick model implements.

Training, evaluation, export and serving are generic over this interface, so nothing
outside ``models/`` needs model-specific code.

Conventions (all models):

* Items are indexed ``1..n_items``; index ``0`` is padding. Score tensors have
  ``n_items + 1`` columns and column 0 is always ``-inf`` (never recommended).
* ``advance(item, state)`` with ``item == 0`` leaves that row's state unchanged. The
  service maps unknown items to 0, and batched evaluation pads finished rows with 0.
* Every state tensor has a leading batch dimension; ``StateSpec.shape`` excludes it.
* A user's initial state is all zeros (the service creates it from the spec alone).
* Serving methods are pure: they never write to their inputs and return new tensors.
* ``self.training`` (not a flag argument) switches dropout / sampling behaviour.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bundle import StateSpec  # the manifest's state tensor spec (torch-free)

__all__ = ["USER_BATCHINGS", "ModelConfig", "SessionModel", "State", "StateSpec",
           "spec_zeros"]

State = dict[str, Tensor]

#: batchings of the models that learn from user ids: they cannot train on user-less data
USER_BATCHINGS = ("user-parallel", "user-sequence")


def spec_zeros(spec: StateSpec, batch_size: int, device: torch.device | None = None) -> Tensor:
    """A zero state tensor for ``spec``: [batch_size, *spec.shape]."""
    dtype = torch.float32 if spec.dtype == "float32" else torch.int64
    return torch.zeros((batch_size, *spec.shape), dtype=dtype, device=device)


@dataclass
class ModelConfig:
    """Base of every model's config dataclass. Field defaults are the paper's values,
    except where a training-recipe change measured better (each is listed in the model
    file's deviations); ``paper_recipe`` holds the paper's values for those fields, which
    ``--paper-recipe`` (``nextclick train`` and ``benchmark``) restores."""

    paper_recipe: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SessionModel(nn.Module):
    """Base class. Subclasses set ``name``, ``config_class``, and implement the methods
    that raise ``NotImplementedError`` here."""

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    #: how training batches are built: "session-parallel" (GRU4Rec), "user-parallel"
    #: (HRNN), "user-sequence" (user-parallel plus user ids: RUM, BPR-MF, FPMC), "prefix"
    #: (NARM-style prefix augmentation) or "counts" (non-neural fit).
    batching: ClassVar[str] = "session-parallel"
    #: the most sessions one serving ``score`` run should take (None: any number). A
    #: model whose score makes a [B, N, K] intermediate (RUM-I) outgrows the CPU caches
    #: when many sessions share a run; the engine splits larger batches into runs of this.
    score_rows: ClassVar[int | None] = None

    @classmethod
    def needs_users(cls) -> bool:
        """True for models that learn from user ids (HRNN, RUM, BPR-MF, FPMC): a dataset
        without users leaves them nothing to learn."""
        return cls.batching in USER_BATCHINGS

    def __init__(self, n_items: int, n_users: int, config: ModelConfig | None = None):
        super().__init__()
        self.n_items = n_items
        self.n_users = n_users
        self.config = config if config is not None else self.config_class()

    # ---- state --------------------------------------------------------------------
    def state_spec(self) -> list[StateSpec]:
        """Session- and user-scoped state tensors, in a fixed order."""
        raise NotImplementedError

    def session_spec(self) -> list[StateSpec]:
        return [s for s in self.state_spec() if s.scope == "session"]

    def user_spec(self) -> list[StateSpec]:
        return [s for s in self.state_spec() if s.scope == "user"]

    def init_user_state(self, batch_size: int) -> State:
        device = self._device()
        return {s.name: spec_zeros(s, batch_size, device) for s in self.user_spec()}

    def user_state_for(self, users: Tensor) -> State:
        """Initial user state of dataset users (users [B] int64 indices, 0 = unknown),
        for offline evaluation. Default: ``init_user_state`` (the model does not know
        users by index). Models with a trained user table (RUM, BPR-MF, FPMC) seed it."""
        return self.init_user_state(users.shape[0])

    def start_session(self, user_state: State, batch_size: int) -> State:
        """Session state at the start of a session. Models without user state ignore
        ``user_state`` (it is then an empty dict) and return zeros."""
        device = self._device()
        return {s.name: spec_zeros(s, batch_size, device) for s in self.session_spec()}

    # ---- serving --------------------------------------------------------------------
    def advance(self, item: Tensor, state: State) -> State:
        """Fold one click per row into the session state. item: [B] int64."""
        raise NotImplementedError

    def score(self, state: State) -> Tensor:
        """Next-item scores from a session state: [B, n_items + 1], column 0 = -inf."""
        raise NotImplementedError

    def step(self, item: Tensor, state: State) -> tuple[Tensor, State]:
        new_state = self.advance(item, state)
        return self.score(new_state), new_state

    def end_session(self, session_state: State, user_state: State) -> State:
        """User state after a session closes (HRNN's GRU_usr). Default: unchanged."""
        return dict(user_state)

    # ---- training ---------------------------------------------------------------
    def forward(self, items: Tensor, state: State) -> Tensor:
        """The full (training-path) forward over padded sessions.

        items: [B, T] int64, right-padded with 0; state: session state at the session
        start (``start_session``). Returns scores after each position: [B, T, n_items + 1].
        Must equal stepping ``step`` over the same clicks (the contract test checks it),
        but is free to use fused kernels (``nn.GRU`` over the sequence, etc.).
        """
        raise NotImplementedError

    def forward_by_steps(self, items: Tensor, state: State) -> Tensor:
        """``forward`` as ``step`` over the columns of ``items`` [B, T] -> [B, T, N+1]: the
        whole forward of models with no fused training path (count-based baselines)."""
        outputs = []
        for position in range(items.shape[1]):
            scores, state = self.step(items[:, position], state)
            outputs.append(scores)
        return torch.stack(outputs, dim=1)

    def loss(self, batch: Any) -> Tensor:
        """Scalar training loss over one batch of the kind named by ``batching``."""
        if self.batching == "counts":
            raise NotImplementedError(
                f"{self.name} is fitted with fit_counts, not by gradient descent")
        raise NotImplementedError

    def training_step(self, batch: Any, carry: Any = None) -> tuple[Tensor, Any]:
        """Loss over one batch and what to carry into the next batch of the same epoch.

        The parallel batchings play each row's sessions across consecutive batches, so
        recurrent models carry their (detached) hidden states from one chunk to the next;
        the training loop owns that carry and passes ``None`` at the start of an epoch.
        Stateless models (the default) carry nothing."""
        return self.loss(batch), None

    def fit_counts(self, sessions: list[list[int]]) -> None:
        """Non-neural models (``batching == "counts"``) fit from training sessions."""
        raise NotImplementedError

    # ---- helpers ----------------------------------------------------------------
    def _check_variant(self, family: str, variant: str, variants: tuple[str, ...]) -> None:
        """Models registered as ``<family>-<variant>`` take the variant from their config;
        reject an unknown variant or one that contradicts the registered name."""
        if variant not in variants:
            raise ValueError(f"{self.name}: variant must be one of {variants}, got {variant!r}")
        if self.name != family and self.name != f"{family}-{variant}":
            raise ValueError(f"{self.name}: variant={variant!r} contradicts the model name; "
                             f"use {family}-{variant}")

    def _device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @staticmethod
    def mask_padding(scores: Tensor) -> Tensor:
        """Column 0 (padding) to -inf without writing into ``scores``."""
        pad = torch.zeros_like(scores[:, :1]).fill_(float("-inf"))
        return torch.cat([pad, scores[:, 1:]], dim=1)
