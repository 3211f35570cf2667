"""Does a trained HLN leap at all? The share of clicks its Leap Recurrent Unit skips
(q_t = 1, the inference threshold p_t > 0.5) in each pass of the Preference Manager, and
the mean leap probability p_t, over the test windows of a prepared dataset.

    python experiments/hln_leap_share.py data/retailrocket reports/retailrocket/runs/hln

The paper's gain over NARM rests on the gate skipping clicks unrelated to the session's
preference; a share of 0.00 means the trained model reads every click, i.e. works as
repeated passes of a preference-gated GRU (docs/results.md, "What we changed and why").
"""

from __future__ import annotations

import argparse

import torch

from models.hln import Hln
from training.data.dataset import PreparedDataset
from training.fit.checkpoint import load_run


def test_windows(dataset: PreparedDataset, width: int, limit: int) -> torch.Tensor:
    """Right-aligned windows of the clicks before each test target, [n, width]."""
    windows = []
    rows = dataset.test.group_by("session", maintain_order=True).agg("item", "target")
    for row in rows.iter_rows(named=True):
        for position, is_target in enumerate(row["target"]):
            if is_target:
                clicks = row["item"][max(0, position - width):position]
                windows.append([0] * (width - len(clicks)) + clicks)
    return torch.tensor(windows[:limit])


def leap_shares(model: Hln, windows: torch.Tensor) -> list[tuple[float, float]]:
    """(share of valid clicks leapt, mean leap probability) for each pass."""
    valid = windows != 0
    shares = []
    with torch.no_grad():
        x = model.embedding(windows)
        preference = x.new_zeros(windows.shape[0], model.config.hidden_size)
        for _ in range(model.config.passes):
            hidden = torch.zeros_like(preference)
            leaps, probabilities = [], []
            for slot in range(windows.shape[1]):
                xt = x[:, slot]
                gated = torch.sigmoid(model.w_p(xt) + model.u_p(preference)) * xt
                probabilities.append(torch.sigmoid(model.w_q(hidden) + model.u_q(gated)))
                hidden, leap = model.lru_step(xt, hidden, preference, valid[:, slot])
                leaps.append(leap)
            preference = preference + hidden
            shares.append((float(torch.cat(leaps, 1)[valid].mean()),
                           float(torch.cat(probabilities, 1)[valid].mean())))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="prepared dataset folder")
    parser.add_argument("runs", nargs="+", help="trained HLN run folders")
    parser.add_argument("--windows", type=int, default=3000, help="test windows read")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = PreparedDataset.load(args.data)
    for run in args.runs:
        model, _ = load_run(run)
        if not isinstance(model, Hln):
            raise SystemExit(f"{run}: not an HLN run")
        windows = test_windows(dataset, model.config.max_length, args.windows)
        clicks = (windows != 0).sum(1).float()
        shares = leap_shares(model.eval(), windows)
        print(f"{run}: {windows.shape[0]} windows, {clicks.mean():.1f} clicks each on "
              f"average; leap share per pass "
              + ", ".join(f"{share:.2f}" for share, _ in shares) + "; mean leap probability "
              + ", ".join(f"{p:.2f}" for _, p in shares))


if __name__ == "__main__":
    main()
