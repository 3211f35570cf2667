"""How much can *any* personalised session start state add on a dataset?

Usage: .venv/bin/python experiments/start_state_bound.py DATA [--epochs N] [--seed S]
       [--set KEY=VALUE ...]

HRNN-Init personalises a session only through its start state, tanh(W_init c_u + b)
(eq. 4), with c_u computed by GRU_usr from the user's past sessions. This diagnostic
replaces GRU_usr by a free, learned vector per user (an embedding row e_u, trained on the
user's training sessions exactly where HRNN trains c_u: at each session start, through
W_init, with the same user-parallel batches, TOP1 loss, optimiser and paper-default
hyperparameters). The embedding is an upper bound for what a *static* user state can
carry; it cannot see the previous session (HRNN's c_u can).

It then scores the test sessions of a ``last-session`` dataset twice with the same
network: from the user's e_u, and from e = 0 (HRNN's "no history" start state). Full
ranking, pessimistic ties, every click after the first is a target, as ``nextclick
evaluate``. The paired difference is what session-start personalisation is worth there.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from models.base import ModelConfig
from models.batches import ParallelSteps
from models.hrnn import HRNNInit, HRNNInitConfig
from models.ranking_losses import ranking_loss
from training.data.dataset import PreparedDataset
from training.evaluation.metrics import metrics_from_ranks, rank_targets
from training.fit.loop import train
from training.fit.overrides import config_overrides

CUTOFFS = (5, 20)


class UserEmbeddingStart(HRNNInit):
    """HRNN-Init whose start state reads a per-user embedding instead of GRU_usr."""

    def __init__(self, n_items: int, n_users: int, config: ModelConfig | None = None):
        super().__init__(n_items, n_users, config)
        self.user_vectors = nn.Embedding(n_users + 1, self.config.user_hidden_size,
                                         padding_idx=0)
        nn.init.normal_(self.user_vectors.weight[1:], std=0.1)

    def training_step(self, batch: Any, carry: Any = None) -> tuple[Tensor, Any]:
        """HRNN-Init's user-parallel step with the session opened from the row's user
        vector (eq. 4 with e_u in place of c_u); carries the session hidden state."""
        steps: ParallelSteps = batch
        users: Tensor = batch.users
        rows, length = steps.items.shape
        hidden = carry if isinstance(carry, Tensor) and carry.shape[0] == rows else \
            torch.zeros(rows, self.session_gru.state_size)
        losses = []
        for t in range(length):
            opened = self.start_session({"user_hidden": self.user_vectors(users[:, t])}, rows)
            hidden = torch.where(steps.session_start[:, t].unsqueeze(1),
                                 opened["session_hidden"], hidden)
            hidden = self.advance(steps.items[:, t], {"session_hidden": hidden})["session_hidden"]
            step_loss = ranking_loss(self.session_gru.top(hidden), steps.targets[:, t],
                                     self.output_weight, self.output_bias,
                                     self.config.loss, self.config.bpreg)
            if step_loss is not None:
                losses.append(step_loss)
        loss = torch.stack(losses).mean() if losses else hidden.new_zeros(())
        return loss, hidden.detach()


def score_test_sessions(model: UserEmbeddingStart, dataset: PreparedDataset,
               personalised: bool) -> tuple[np.ndarray, np.ndarray]:
    """Ranks and positions (1 = second click) of every test target."""
    test = dataset.test
    sessions = test["session"].to_numpy()
    starts = np.flatnonzero(np.r_[True, sessions[1:] != sessions[:-1]])
    ends = np.r_[starts[1:], len(sessions)]
    items = test["item"].to_numpy().astype(np.int64)
    is_target = test["target"].to_numpy()
    width = int((ends - starts).max())
    clicks = np.zeros((len(starts), width), dtype=np.int64)
    scored = np.zeros((len(starts), width), dtype=bool)
    for row, (begin, end) in enumerate(zip(starts, ends, strict=True)):
        clicks[row, :end - begin] = items[begin:end]
        scored[row, :end - begin] = is_target[begin:end]
    users = torch.from_numpy(test["user"].to_numpy()[starts].astype(np.int64))
    user_vectors = model.user_vectors(users) if personalised else torch.zeros(
        len(starts), model.config.user_hidden_size)
    state = model.start_session({"user_hidden": user_vectors}, len(starts))
    ranks, positions = [], []
    for t in range(width - 1):
        state = model.advance(torch.from_numpy(clicks[:, t]), state)
        live = np.flatnonzero(scored[:, t + 1] & (clicks[:, t + 1] != 0))
        if live.size:
            scores = model.score(state)[torch.from_numpy(live)]
            ranks.append(rank_targets(scores, torch.from_numpy(clicks[live, t + 1])).numpy())
            positions.append(np.full(live.size, t + 1))
    return np.concatenate(ranks), np.concatenate(positions)


def train_bound(dataset: PreparedDataset, overrides: dict[str, Any], epochs: int,
                seed: int, log: bool = True) -> UserEmbeddingStart:
    """The network of HRNN-Init with per-user start vectors, trained by the library loop as
    ``nextclick train`` trains HRNN-Init (user-parallel batches, the config's optimiser),
    on the fitting sessions for exactly ``epochs`` epochs (no validation selection: the
    validation replay would score GRU_usr, which this variant does not use)."""
    fitting = dataclasses.replace(dataset, train=dataset.train.filter(~pl.col("valid")))
    with tempfile.TemporaryDirectory() as run:
        model, _ = train(UserEmbeddingStart, fitting, run, epochs=epochs, seed=seed,
                         overrides=overrides, patience=epochs, progress=log)
    assert isinstance(model, UserEmbeddingStart)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="HRNN-Init config override, as `nextclick train --set`")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = PreparedDataset.load(args.data)
    overrides = config_overrides(HRNNInitConfig, "hrnn-init", args.set)
    model = train_bound(dataset, overrides, args.epochs, args.seed)
    with torch.no_grad():
        results = {tag: score_test_sessions(model, dataset, tag == "user vector")
                   for tag in ("user vector", "zero vector")}
    print(f"{args.data}: Recall@K (%) of one network, start state from the user's vector "
          "or from zero")
    print("position | targets | " + " | ".join(f"{tag} R@{k}" for tag in results
                                              for k in CUTOFFS))
    positions = results["user vector"][1]
    for label, chosen in (("1", positions == 1), ("2", positions == 2),
                          ("3+", positions >= 3), ("all", positions >= 1)):
        cells = [100 * metrics_from_ranks(ranks[chosen], CUTOFFS)[f"recall@{k}"]
                 for ranks, _ in results.values() for k in CUTOFFS]
        print(f"{label:>8} | {int(chosen.sum()):7d} | "
              + " | ".join(f"{cell:.2f}" for cell in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
