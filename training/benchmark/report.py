"""Report files of ``nextclick benchmark``: ``plots/*.png``, ``report.md`` and a
self-contained ``report.html`` (same content; images referenced from ``plots/``).

Plots use matplotlib's object API, as ``training.evaluation.run_report`` does (no pyplot state)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from training.evaluation.run_report import BREAKDOWN_PLOTS, new_figure
from training.tables import markdown_table, number, p_text, pct

SUMMARY_KS = (5, 10, 20)


def summary_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["model", *(f"{n}@{k}" for k in SUMMARY_KS for n in ("Recall", "MRR")),
              "Coverage@20", "Popularity@20", "epochs (best)", "train s", "samples/s",
              "size MB", "latency ms (p95)"]
    rows = []
    samples = (summary.get("dataset") or {}).get("fit_samples")
    for name in summary["ranking"]:
        entry = summary["models"][name]
        m = entry["metrics"]
        latency = entry.get("latency") or {}
        rows.append([name, *(pct(m.get(f"{n}@{k}")) for k in SUMMARY_KS
                             for n in ("recall", "mrr")),
                     pct(m.get("coverage@20")), pct(m.get("popularity@20")),
                     epochs_trained(entry), number(entry["train"]["wall_seconds"]),
                     number(samples_per_second(entry, samples), 0),
                     number(entry["size"]["checkpoint_bytes"] / 1e6, 2),
                     f"{number(latency.get('median_ms'), 2)} ({number(latency.get('p95_ms'), 2)})"])
    return header, rows


def epochs_trained(entry: dict[str, Any]) -> str:
    train = entry.get("train") or {}
    if train.get("epochs") is None:
        return "-"
    if (entry.get("config") or {}).get("epochs") is None:  # count models: one pass
        return "fit"
    return f"{train['epochs']} ({train.get('best_epoch')})"


def breakdown_rows(summary: dict[str, Any], key: str, k: int = 20
                   ) -> tuple[list[str], list[list[str]]]:
    names = summary["ranking"]
    buckets: dict[str, tuple[int, int]] = {}
    for name in names:
        for row in summary["models"][name]["metrics"].get("breakdowns", {}).get(key) or []:
            buckets.setdefault(str(row["bucket"]), (int(row["low"]), int(row["n"])))
    labels = sorted(buckets, key=lambda label: buckets[label][0])
    header = ["model", *(f"{label} (n={buckets[label][1]})" for label in labels)]
    rows = []
    for name in names:
        by = {str(r["bucket"]): r for r in
              summary["models"][name]["metrics"].get("breakdowns", {}).get(key) or []}
        rows.append([name, *(f"{pct(by[b][f'recall@{k}'])} / {pct(by[b][f'mrr@{k}'])}"
                             if b in by else "-" for b in labels)])
    return header, rows


# ---- plots ----------------------------------------------------------------------------

def write_plots(summary: dict[str, Any], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    names = summary["ranking"]
    models = summary["models"]
    written: list[Path] = []
    if not names:
        return written

    figure, axes = new_figure(2)
    for axis, metric, label in zip(axes, ("recall", "mrr"), ("Recall", "MRR"), strict=True):
        for name in names:
            m = models[name]["metrics"]
            ks = sorted(int(key.split("@")[1]) for key in m if key.startswith(f"{metric}@"))
            axis.plot(ks, [100 * m[f"{metric}@{k}"] for k in ks], marker=".", label=name,
                      **_line_style(names.index(name)))
        axis.set_xlabel("K (list length)")
        axis.set_ylabel(f"{label}@K (%)")
        axis.set_xticks(range(1, 21, 2))
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    _figure_legend(figure, axes[0])
    figure.suptitle("Accuracy by list length K")
    written.append(_save(figure, folder / "accuracy_at_k.png"))

    for key, (stem, x_label, title) in BREAKDOWN_PLOTS.items():
        header, _ = breakdown_rows(summary, key)
        if len(header) < 3:  # one bucket (e.g. no user history) says nothing
            continue
        labels = [h.split(" (n=")[0] for h in header[1:]]
        figure, axes = new_figure(2)
        for axis, metric, label in zip(axes, ("recall", "mrr"), ("Recall", "MRR"),
                                       strict=True):
            for name in names:
                rows_by = {str(r["bucket"]): r for r in
                           models[name]["metrics"].get("breakdowns", {}).get(key) or []}
                xs = [i for i, b in enumerate(labels) if b in rows_by]
                axis.plot(xs, [100 * rows_by[labels[i]][f"{metric}@20"] for i in xs],
                          marker="o", label=name, **_line_style(names.index(name)))
            axis.set_xticks(range(len(labels)), header[1:], fontsize=7, rotation=30,
                            ha="right")
            axis.set_xlabel(x_label)
            axis.set_ylabel(f"{label}@20 (%)")
            axis.set_ylim(bottom=0)
            axis.grid(alpha=0.3)
        _figure_legend(figure, axes[0])
        figure.suptitle(f"Accuracy {title}")
        written.append(_save(figure, folder / f"{stem}.png"))

    panels = [("coverage@20", "catalogue coverage@20 (%)", 100.0),
              ("popularity@20", "popularity percentile of recommended (%)", 100.0)]
    figure, axes = new_figure(2)
    for axis, (metric, label, scale) in zip(axes, panels, strict=True):
        _bars(axis, names, [scale * models[n]["metrics"].get(metric, 0.0) for n in names], label)
    figure.suptitle("What gets recommended (top-20 lists)")
    written.append(_save(figure, folder / "catalogue.png"))

    cost = [("train wall time (s)", [models[n]["train"]["wall_seconds"] for n in names]),
            ("checkpoint size (MB)", [models[n]["size"]["checkpoint_bytes"] / 1e6
                                      for n in names]),
            ("latency per click, median (ms)",
             [(models[n].get("latency") or {}).get("median_ms", 0.0) for n in names])]
    figure, axes = new_figure(3)
    for axis, (label, values) in zip(axes, cost, strict=True):
        _bars(axis, names, values, label)
    figure.suptitle("Cost")
    written.append(_save(figure, folder / "cost.png"))
    return written


def _line_style(index: int) -> dict[str, Any]:
    """Ten colours, then the same colours dashed, then dotted: 16 models stay apart."""
    from matplotlib import colormaps

    return {"color": colormaps["tab10"](index % 10),
            "linestyle": ("-", "--", ":")[min(index // 10, 2)]}


def _figure_legend(figure: Any, axis: Any) -> None:
    """One legend for both panels, outside them (in ranking order), so no line is hidden."""
    handles, labels = axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right center", fontsize=8)


def _bars(axis: Any, names: list[str], values: list[float], label: str) -> None:
    positions = range(len(names))
    axis.bar(positions, values, color="#4c72b0")
    axis.set_xticks(positions, names, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel(label, fontsize=9)
    axis.grid(alpha=0.3, axis="y")


def _save(figure: Any, path: Path) -> Path:
    figure.savefig(path, dpi=110)
    return path


# ---- text reports ------------------------------------------------------------------------

def _significance_text(summary: dict[str, Any]) -> list[str]:
    sig = summary.get("significance")
    if not sig:
        return ["Fewer than two models finished: no significance test."]
    lines = [f"Best by {sig['by']}: **{sig['best']}**; runner-up: **{sig['runner_up']}** "
             f"({sig['n']} paired test targets). Per target: hit (Recall) or reciprocal rank "
             f"(MRR, 0 beyond K); Wilcoxon signed-rank (two-sided, normal approximation) and "
             f"paired bootstrap 95% CI of the mean difference (best - runner-up)."]
    for metric, result in sig.items():
        if not isinstance(result, dict) or "wilcoxon" not in result:
            continue
        low, high = result["ci95"]
        w = result["wilcoxon"]
        lines.append(f"- {metric}: difference {100 * result['mean_difference']:+.2f} points, "
                     f"95% CI [{100 * low:+.2f}, {100 * high:+.2f}]; Wilcoxon z = {w['z']:.2f}, "
                     f"p {p_text(w['p'])} ({w['n']} non-zero differences)")
    return lines


PEER_NOTE = ("Same split, exported in RecBole's atomic benchmark-file format (train rows = "
             "every prefix of the training sessions, test rows = our test targets with a "
             "known click before them). Differences that move the numbers: RecBole uses its "
             "own model defaults (embedding 64, hidden 128, CE loss over all items, "
             "histories of at most 50 clicks) with batch size 512 (NARM's), trains all the "
             "epochs given (no early stop; it keeps the epoch with the best validation "
             "MRR@20), and "
             "ranks with torch.topk (ties broken by position, not pessimistically as ours).")


def peer_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    peers = summary.get("peers") or {}
    header = ["model", *(f"{n}@{k}" for k in SUMMARY_KS for n in ("Recall", "MRR")),
              "test rows", "epochs", "seconds", "samples/s", "versions"]
    rows = []
    for entry in peers.values():
        if not isinstance(entry, dict) or "metrics" not in entry:
            continue
        m = entry["metrics"]
        versions = ", ".join(f"{k} {v}" for k, v in (entry.get("versions") or {}).items())
        rows.append([entry["model"], *(pct(m.get(f"{n}@{k}")) for k in SUMMARY_KS
                                       for n in ("recall", "mrr")),
                     str((peers.get("rows") or {}).get("test", "-")), str(entry["epochs"]),
                     number(entry["seconds"]), number(peer_samples_per_second(summary, entry), 0),
                     versions])
    return header, rows


def samples_per_second(entry: dict[str, Any], samples: int | None) -> float | None:
    """Training throughput of a gradient-trained model's selection fit (refit excluded)."""
    train = entry.get("train") or {}
    if not samples or (entry.get("config") or {}).get("epochs") is None \
            or not train.get("fit_seconds") or not train.get("epochs"):
        return None
    return float(samples * int(train["epochs"]) / float(train["fit_seconds"]))


def peer_samples_per_second(summary: dict[str, Any], entry: dict[str, Any]) -> float | None:
    """A peer's training throughput: its train rows x epochs / its training seconds."""
    rows = ((summary.get("peers") or {}).get("rows") or {}).get("train")
    seconds = entry.get("train_seconds")
    return float(rows * int(entry["epochs"]) / seconds) if rows and seconds else None


def _plot_list(folder: Path) -> list[tuple[str, str]]:
    titles = {"accuracy_at_k": "Recall@K and MRR@K, K = 1..20",
              "by_session_length": "By session length (Recall@20 / MRR@20)",
              "by_position": "By position in session (Recall@20 / MRR@20)",
              "by_history_length": "By user-history length (Recall@20 / MRR@20)",
              "catalogue": "Catalogue coverage and popularity", "cost": "Cost"}
    return [(titles[stem], f"plots/{stem}.png") for stem in titles
            if (folder / "plots" / f"{stem}.png").exists()]


def _intro(summary: dict[str, Any]) -> list[str]:
    data, settings = summary["dataset"], summary["settings"]
    return [
        f"Dataset `{data['path']}` (fingerprint `{data['fingerprint']}`, protocol "
        f"{data['protocol']}, {data['n_items']} items, {data['n_users']} users). Full ranking "
        f"over all items, ties {settings['tie_policy']}, epochs "
        f"{epochs_text(settings.get('epochs'))}, seed {settings['seed']}"
        + (f", {settings['max_sessions']} test sessions" if settings["max_sessions"] else "")
        + (", refit on all training sessions after validation picked the epochs (count "
           "models fit on all of them)" if settings.get("refit") else "")
        + (", the papers' training recipes (`--paper-recipe`)"
           if settings.get("paper_recipe") else ", our training recipes where they "
           "measured better than the papers' (each model file's deviations)")
        + f". Models ordered by {settings['metric']}. Values in %."
        + repeats_text(data),
        f"Latency: {settings['latency']} on {settings['device']} (the model alone; the "
        "served path is measured by `nextclick bench`). Train s: wall time of training "
        "including validation. Size: checkpoint file.",
        f"Command: `{summary['command']}`" if summary.get("command") else "",
    ]


def epochs_text(epochs: Any) -> str:
    """The settings' epoch caps in words (older results store one number or None)."""
    if not epochs:
        return "paper default"
    if isinstance(epochs, int):
        return str(epochs)
    caps = dict(epochs)
    rest = caps.pop("*", None)
    named = ", ".join(f"{name} {value}" for name, value in sorted(caps.items()))
    if not named:
        return str(rest)
    return "paper default, capped at " + named + (f", others {rest}" if rest else "")


def repeats_text(data: dict[str, Any]) -> str:
    repeats = data.get("repeats")
    if not repeats or not repeats.get("targets"):
        return ""
    return (f" {100 * repeats['in_prefix']:.1f}% of the {repeats['targets']} test targets "
            f"repeat an item of their session, {100 * repeats['last_click']:.1f}% the last "
            "click.")


def write_markdown(summary: dict[str, Any], folder: Path) -> Path:
    header, rows = summary_rows(summary)
    parts = ["# Benchmark", "", *[line for line in _intro(summary) if line], "",
             markdown_table(header, rows), "", "## Significance", "",
             *_significance_text(summary)]
    p_header, p_rows = peer_rows(summary)
    if p_rows:
        parts += ["", "## Peer implementation: RecBole", "", PEER_NOTE, "",
                  markdown_table(p_header, p_rows)]
    if summary.get("failures"):
        parts += ["", "## Failed", ""] + [f"- {n}: {e}" for n, e in summary["failures"].items()]
    if summary.get("skipped"):
        parts += ["", "## Not run", ""] + [f"- {n}: {e}" for n, e in summary["skipped"].items()]
    for title, path in _plot_list(folder):
        parts += ["", f"## {title}", "", f"![{title}]({path})"]
    for key, (_, _, title) in BREAKDOWN_PLOTS.items():
        b_header, b_rows = breakdown_rows(summary, key)
        if len(b_header) > 1:
            parts += ["", f"### Recall@20 / MRR@20 {title}", "", markdown_table(b_header, b_rows)]
    target = folder / "report.md"
    target.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return target


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline_markdown(text: str) -> str:
    """Escape, then the two inline marks the report text uses: **bold** and `code`."""
    out = html.escape(text)
    for mark, tag in (("**", "strong"), ("`", "code")):
        pieces = out.split(mark)
        out = "".join(piece if i % 2 == 0 else f"<{tag}>{piece}</{tag}>"
                      for i, piece in enumerate(pieces))
    return out


def write_html(summary: dict[str, Any], folder: Path) -> Path:
    header, rows = summary_rows(summary)
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
             "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}tr:nth-child(even){background:#f6f6f6}"
             "img{max-width:100%;border:1px solid #eee}code{background:#f0f0f0;padding:0 3px}")
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>nextclick benchmark"
             f"</title><style>{style}</style></head><body><h1>Benchmark</h1>"]
    parts += [f"<p>{_inline_markdown(line)}</p>" for line in _intro(summary) if line]
    parts.append(_html_table(header, rows))
    parts.append("<h2>Significance</h2>")
    sig = _significance_text(summary)
    parts.append(f"<p>{_inline_markdown(sig[0])}</p>")
    if len(sig) > 1:
        parts.append("<ul>" + "".join(f"<li>{_inline_markdown(line[2:])}</li>"
                                      for line in sig[1:]) + "</ul>")
    p_header, p_rows = peer_rows(summary)
    if p_rows:
        parts += ["<h2>Peer implementation: RecBole</h2>", f"<p>{html.escape(PEER_NOTE)}</p>",
                  _html_table(p_header, p_rows)]
    if summary.get("failures"):
        parts.append("<h2>Failed</h2><ul>" + "".join(
            f"<li>{html.escape(n)}: {html.escape(e)}</li>"
            for n, e in summary["failures"].items()) + "</ul>")
    if summary.get("skipped"):
        parts.append("<h2>Not run</h2><ul>" + "".join(
            f"<li>{html.escape(n)}: {html.escape(e)}</li>"
            for n, e in summary["skipped"].items()) + "</ul>")
    for title, path in _plot_list(folder):
        parts.append(f"<h2>{html.escape(title)}</h2><img src='{path}' alt='{html.escape(title)}'>")
    for key, (_, _, title) in BREAKDOWN_PLOTS.items():
        b_header, b_rows = breakdown_rows(summary, key)
        if len(b_header) > 1:
            parts.append(f"<h3>Recall@20 / MRR@20 {html.escape(title)}</h3>"
                         + _html_table(b_header, b_rows))
    parts.append("</body></html>")
    target = folder / "report.html"
    target.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return target


def write_reports(summary: dict[str, Any], folder: Path) -> list[Path]:
    plots = write_plots(summary, folder / "plots")
    return [write_markdown(summary, folder), write_html(summary, folder), *plots]
