"""The RUM table (docs/results.md) and the α-sweep plot of experiments/rum_experiments.sh
(reads the runs' metrics.json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LABELS = {"pop": "MP", "bpr": "BPR-MF", "fpmc": "FPMC", "rum-item": "RUM(I)",
          "rum-feature": "RUM(F)"}
METRICS = ("precision@5", "recall@5", "f1@5", "hr@5", "ndcg@5")


def _load(run: Path) -> tuple[dict, dict] | None:
    if not (run / "metrics.json").is_file():
        return None
    return (json.loads((run / "metrics.json").read_text()),
            json.loads((run / "run.json").read_text()))


def table(root: Path) -> str:
    lines = []
    for ds_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "sweep"):
        lines += [f"**{ds_dir.name}**", "",
                  "| model | P@5 | R@5 | F1@5 | HR@5 | NDCG@5 | users | epochs (best) "
                  "| seen items |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for model, label in LABELS.items():
            loaded = _load(ds_dir / model)
            if loaded is None:
                continue
            metrics, info = loaded
            cells = " | ".join(f"{100 * metrics[m]:.2f}" for m in METRICS)
            epochs = f"{info['epochs']} ({info['best_epoch']})"
            seen = "excluded" if metrics.get("exclude_seen") else "kept"
            lines.append(f"| {label} | {cells} | {metrics['n_users']} | {epochs} | {seen} |")
        lines.append("")
    return "\n".join(lines)


def sweep(root: Path, alphas: list[str], plot: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    lines = ["| α | " + " | ".join(f"{LABELS[m]} {k}" for m in ("rum-item", "rum-feature")
                                   for k in ("F1@5", "NDCG@5")) + " |",
             "|---|---|---|---|---|"]
    rows: dict[str, list[str]] = {alpha: [] for alpha in alphas}
    for model, marker in (("rum-item", "o"), ("rum-feature", "s")):
        xs, f1, ndcg = [], [], []
        for alpha in alphas:
            loaded = _load(root / "sweep" / f"{model}-alpha{alpha}")
            if loaded is None:
                rows[alpha] += ["", ""]
                continue
            metrics, _ = loaded
            xs.append(float(alpha))
            f1.append(100 * metrics["f1@5"])
            ndcg.append(100 * metrics["ndcg@5"])
            rows[alpha] += [f"{f1[-1]:.2f}", f"{ndcg[-1]:.2f}"]
        axes[0].plot(xs, f1, marker=marker, label=LABELS[model])
        axes[1].plot(xs, ndcg, marker=marker, label=LABELS[model])
    for axis, name in zip(axes, ("F1@5 (%)", "NDCG@5 (%)"), strict=True):
        axis.set_xlabel("α (MERGE weight of the memory)")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle("RUM on movielens-small (user-ratio), test split")
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=110)
    lines += [f"| {alpha} | " + " | ".join(cells) + " |" for alpha, cells in rows.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=Path, default=Path("runs/rum"))
    parser.add_argument("--alphas", default="0 0.2 0.4 0.6 0.8 1")
    parser.add_argument("--plot", type=Path, default=Path("docs/results/rum_alpha_sweep.png"))
    args = parser.parse_args()
    print(table(args.runs))
    if (args.runs / "sweep").is_dir():
        print(sweep(args.runs, args.alphas.split(), args.plot))
        print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    main()
