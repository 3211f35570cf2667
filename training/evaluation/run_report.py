"""Human-readable evaluation output: a console table, ``report.md`` with PNG breakdown plots
for one run, and ``compare_runs`` for model-comparison tables.

Plots use matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg) rather
than ``pyplot``, so nothing here touches global backend state or needs a display, and
importing this module stays cheap (matplotlib is imported on first plot).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.tables import markdown_table, pct

#: Breakdown key in metrics.json -> (file stem, axis label, title).
BREAKDOWN_PLOTS: dict[str, tuple[str, str, str]] = {
    "position": ("by_position", "position in session (clicks seen)", "by position in session"),
    "history_length": ("by_history_length", "user history (sessions before)",
                       "by user-history length"),
    "session_length": ("by_session_length", "session length (clicks)", "by session length"),
}


def metric_ks(metrics: dict[str, Any]) -> list[int]:
    """The cut-offs present in a metrics dict (from its ``recall@K`` keys), ascending."""
    return sorted(int(key.split("@", 1)[1]) for key in metrics
                  if key.startswith("recall@") and key.split("@", 1)[1].isdigit())


def format_table(metrics: dict[str, Any]) -> str:
    """A fixed-width console table: one row per K, metrics as percentages."""
    columns = ("recall", "mrr", "ndcg", "coverage", "popularity")
    titles = ("Recall", "MRR", "NDCG", "Coverage", "Popularity")
    header = f"{'K':>4}  " + "  ".join(f"{title:>10}" for title in titles)
    lines = [f"{metrics.get('model', 'model')} on {metrics.get('split', '?')}: "
             f"n={metrics.get('n', 0)} targets in {metrics.get('n_sessions', '?')} sessions, "
             f"ties {metrics.get('tie_policy', '?')}", header]
    for k in metric_ks(metrics):
        cells = []
        for name in columns:
            value = metrics.get(f"{name}@{k}")
            cells.append(f"{100 * value:>9.2f}%" if isinstance(value, int | float)
                         else f"{'-':>10}")
        lines.append(f"{k:>4}  " + "  ".join(cells))
    return "\n".join(lines)


def new_figure(panels: int) -> Any:
    """A figure with ``panels`` axes, two per row (returned flat, in reading order)."""
    from matplotlib.figure import Figure

    columns = min(panels, 2)
    rows = (panels + columns - 1) // columns
    figure = Figure(figsize=(5.2 * columns, 3.6 * rows + 0.4), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).reshape(-1)
    for spare in axes[panels:]:
        spare.set_visible(False)
    return figure, axes[:panels]


def _tick_labels(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [f"{row['bucket']}\nn={row['n']}" for row in rows]


def plot_breakdowns(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    """One PNG per breakdown in ``metrics["breakdowns"]``: Recall@K and MRR@K (one line
    per K) against the bucket, with each bucket's number of targets under its label.
    Breakdowns with a single bucket (e.g. history length on anonymous data) are not
    plotted: one point says nothing the summary table does not."""
    breakdowns = metrics.get("breakdowns") or {}
    ks = metric_ks(metrics)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for key, (stem, x_label, title) in BREAKDOWN_PLOTS.items():
        rows = breakdowns.get(key) or []
        if len(rows) < 2:
            continue
        figure, axes = new_figure(2)
        x = list(range(len(rows)))
        for axis, name in zip(axes, ("recall", "mrr"), strict=True):
            for k in ks:
                axis.plot(x, [100 * row[f"{name}@{k}"] for row in rows], marker="o",
                          label=f"{name.upper() if name == 'mrr' else 'Recall'}@{k}")
            axis.set_xticks(x, _tick_labels(rows), fontsize=7)
            axis.set_xlabel(x_label)
            axis.set_ylabel(f"{'MRR' if name == 'mrr' else 'Recall'}@K (%)")
            axis.set_ylim(bottom=0)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
        figure.suptitle(f"{metrics.get('model', 'model')} ({metrics.get('split', '?')}) {title}")
        path = out_dir / f"{stem}.png"
        figure.savefig(path, dpi=110)
        written.append(path)
    return written


def write_report(metrics: dict[str, Any], run_dir: Path) -> Path:
    """``RUN/report.md`` (summary, breakdown tables, embedded plots) and ``RUN/plots/``."""
    plots = plot_breakdowns(metrics, run_dir / "plots")
    ks = metric_ks(metrics)
    dataset = metrics.get("dataset") or {}
    parts = [
        f"# {metrics.get('model', 'model')}: evaluation on {metrics.get('split', '?')}",
        "",
        f"- dataset: `{dataset.get('path', '?')}` (fingerprint `{dataset.get('fingerprint', '')}`,"
        f" protocol {dataset.get('protocol', '?')})",
        f"- {metrics.get('n', 0)} target clicks in {metrics.get('n_sessions', '?')} sessions; "
        f"full ranking over {dataset.get('n_items', '?')} items; tie policy "
        f"{metrics.get('tie_policy', '?')}; {metrics.get('eval_seconds', '?')} s",
        "- all values in %; popularity = mean training-popularity percentile of recommended "
        "items (50 = median item, 100 = the most popular)",
        "",
        markdown_table(
            ["K", "Recall", "MRR", "NDCG", "Precision", "Coverage", "Popularity"],
            [[str(k), *(pct(metrics.get(f"{name}@{k}")) for name in
                        ("recall", "mrr", "ndcg", "precision", "coverage", "popularity"))]
             for k in ks]),
    ]
    breakdowns = metrics.get("breakdowns") or {}
    for key, (stem, x_label, title) in BREAKDOWN_PLOTS.items():
        rows = breakdowns.get(key) or []
        if not rows:
            continue
        header = [x_label, "n"] + [f"{n}@{k}" for k in ks for n in ("Recall", "MRR")]
        body = [[str(row["bucket"]), str(row["n"]),
                 *(pct(row[f"{n}@{k}"]) for k in ks for n in ("recall", "mrr"))]
                for row in rows]
        parts += ["", f"## {title.capitalize()}", "", markdown_table(header, body)]
        if any(path.stem == stem for path in plots):
            parts += ["", f"![{title}](plots/{stem}.png)"]
    path = run_dir / "report.md"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def load_metrics(run: Path) -> dict[str, Any]:
    path = run / "metrics.json" if run.is_dir() else run
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics.json; run `nextclick evaluate --run {run}`")
    try:
        metrics: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if "n" not in metrics or not metric_ks(metrics):
        raise ValueError(f"{path}: not a nextclick metrics.json (no n / recall@K keys)")
    return metrics


def compare_runs(runs: Sequence[Path], out: Path, title: str = "Model comparison") -> Path:
    """A Markdown table (one row per run: Recall@K and MRR@K for every K the runs share,
    plus coverage/popularity at the largest K and n) at ``out`` (``.md`` is added if
    missing), and ``<out stem>.png`` beside it: Recall@K and MRR@K by position in session
    and by user-history length, one line per model, at the smallest shared K (the HRNN
    paper plots @5). Runs evaluated on different splits/datasets are flagged, not mixed
    silently. Returns the Markdown path."""
    if not runs:
        raise ValueError("compare_runs needs at least one run folder")
    loaded = [(Path(run), load_metrics(Path(run))) for run in runs]
    shared = sorted(set.intersection(*(set(metric_ks(m)) for _, m in loaded)))
    if not shared:
        raise ValueError("the runs share no cut-off K; evaluate them with the same --ks")
    names = _unique_names([str(m.get("model") or run.name) for run, m in loaded])
    k_top = shared[-1]
    header = ["model", *(f"{n}@{k}" for k in shared for n in ("Recall", "MRR")),
              f"Coverage@{k_top}", f"Popularity@{k_top}", "n"]
    rows = [[name, *(pct(m.get(f"{n}@{k}")) for k in shared for n in ("recall", "mrr")),
             pct(m.get(f"coverage@{k_top}")), pct(m.get(f"popularity@{k_top}")), str(m["n"])]
            for name, (_, m) in zip(names, loaded, strict=True)]
    out = out if out.suffix == ".md" else out.with_name(out.name + ".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure_path = out.with_suffix(".png")
    parts = [f"# {title}", "", "Full ranking over all items; values in %.", ""]
    settings = {(m.get("split"), (m.get("dataset") or {}).get("fingerprint"), m.get("tie_policy"))
                for _, m in loaded}
    if len(settings) > 1:
        parts += ["**Warning:** these runs differ in split, dataset or tie policy: "
                  + "; ".join(f"{name}: {m.get('split')}/"
                              f"{(m.get('dataset') or {}).get('fingerprint')}/"
                              f"{m.get('tie_policy')}"
                              for name, (_, m) in zip(names, loaded, strict=True)), ""]
    else:
        split, fingerprint, ties = next(iter(settings))
        parts += [f"Split `{split or '?'}`, dataset `{fingerprint or '?'}`, ties {ties or '?'}.",
                  ""]
    parts.append(markdown_table(header, rows))
    if _plot_comparison(loaded, names, shared[0], figure_path, title):
        parts += ["", f"![{title}]({figure_path.name})"]
    out.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return out


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique


def _plot_comparison(loaded: list[tuple[Path, dict[str, Any]]], names: list[str], k: int,
                     path: Path, title: str) -> bool:
    panels = [(key, name) for key in ("position", "history_length") for name in ("recall", "mrr")
              if any((m.get("breakdowns") or {}).get(key) for _, m in loaded)]
    if not panels:
        return False
    figure, axes = new_figure(len(panels))
    for axis, (key, metric) in zip(axes, panels, strict=True):
        _, x_label, panel_title = BREAKDOWN_PLOTS[key]
        # Union of buckets over runs, in order of their lower bound.
        buckets: dict[str, int] = {}
        for _, m in loaded:
            for row in (m.get("breakdowns") or {}).get(key) or []:
                buckets.setdefault(str(row["bucket"]), int(row.get("low", len(buckets))))
        labels = sorted(buckets, key=buckets.__getitem__)
        for name, (_, m) in zip(names, loaded, strict=True):
            rows = (m.get("breakdowns") or {}).get(key) or []
            by_bucket = {str(row["bucket"]): row for row in rows}
            xs = [i for i, label in enumerate(labels) if label in by_bucket]
            axis.plot(xs, [100 * by_bucket[labels[i]][f"{metric}@{k}"] for i in xs],
                      marker="o", label=name)
        axis.set_xticks(range(len(labels)), labels, fontsize=8)
        axis.set_xlabel(x_label)
        axis.set_ylabel(f"{'MRR' if metric == 'mrr' else 'Recall'}@{k} (%)")
        axis.set_title(panel_title, fontsize=10)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.savefig(path, dpi=110)
    return True
