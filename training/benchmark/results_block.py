"""The model-results section of docs/results.md, generated from the benchmark reports
(``reports/<name>/results.json``) by ``nextclick readme-results``, so no number in it is
typed by hand.

The page holds one generated block::

    <!-- benchmark-results: reports/retailrocket reports/tmall -->
    ...generated markdown...
    <!-- /benchmark-results -->

The opening marker lists the report folders, in order. ``nextclick readme-results``
rewrites the block in place; ``--check`` only compares and exits 1 when the page is stale
(a test runs that check against the checked-in reports). Per report: the command that made
it, a table (best value per column in bold), the significance test, RecBole's numbers on the
same split, what was not run and why; then a "which model should I use" guide whose every
figure comes from the same files.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from training.benchmark.report import (
    epochs_text,
    epochs_trained,
    peer_samples_per_second,
    samples_per_second,
)
from training.tables import markdown_table, number, p_text, pct

BEGIN = re.compile(r"<!-- benchmark-results:(?P<reports>[^>]*)-->\n")
END = "<!-- /benchmark-results -->"
COLUMNS = (("R@5", "recall@5"), ("MRR@5", "mrr@5"), ("R@10", "recall@10"),
           ("MRR@10", "mrr@10"), ("R@20", "recall@20"), ("MRR@20", "mrr@20"),
           ("Cov@20", "coverage@20"))
COUNT_NOTE = "fit = count model, one pass over the training clicks"


def load(report: Path) -> dict[str, Any]:
    path = report / "results.json"
    try:
        summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a benchmark result ({exc})") from exc
    if "models" not in summary or "ranking" not in summary:
        raise ValueError(f"{path}: not a benchmark result (no models/ranking)")
    return summary


def _model_table(summary: dict[str, Any]) -> list[str]:
    names = summary["ranking"]
    models = summary["models"]
    best = {key: max(models[n]["metrics"].get(key, 0.0) for n in names) for _, key in COLUMNS}
    header = ["model", *(title for title, _ in COLUMNS), "epochs (best)", "s/epoch",
              "samples/s", "train s", "MB", "ms/click"]
    samples = (summary.get("dataset") or {}).get("fit_samples")
    rows = []
    for name in names:
        entry = models[name]
        cells = []
        for _, key in COLUMNS:
            value = entry["metrics"].get(key)
            text = "-" if value is None else pct(value)
            cells.append(f"**{text}**" if value is not None and value == best[key]
                         and key != "coverage@20" else text)
        latency = entry.get("latency") or {}
        train = entry["train"]
        per_epoch = train.get("fit_seconds", 0.0) / max(int(train.get("epochs") or 1), 1)
        rows.append([name, *cells, epochs_trained(entry), f"{per_epoch:.1f}",
                     number(samples_per_second(entry, samples), 0),
                     f"{train['wall_seconds']:.1f}",
                     f"{entry['size']['checkpoint_bytes'] / 1e6:.2f}",
                     f"{latency.get('median_ms', float('nan')):.2f}"])
    return markdown_table(header, rows).split("\n")


def _significance(summary: dict[str, Any]) -> str:
    sig = summary.get("significance")
    if not sig or sig["by"] not in sig:
        return ""
    result = sig[sig["by"]]
    low, high = result["ci95"]
    return (f"Best by {sig['by']}: **{sig['best']}**, ahead of {sig['runner_up']} by "
            f"{100 * result['mean_difference']:+.2f} points (paired bootstrap 95% CI "
            f"{100 * low:+.2f}..{100 * high:+.2f}; Wilcoxon p {p_text(result['wilcoxon']['p'])}; "
            f"{sig['n']:,} test targets).")


def _peers(summary: dict[str, Any]) -> list[str]:
    peers = summary.get("peers") or {}
    rows = [entry for entry in peers.values() if isinstance(entry, dict) and "metrics" in entry]
    if not rows:
        return []
    versions = ", ".join(f"{k} {v}" for k, v in (rows[0].get("versions") or {}).items())
    lines = [f"RecBole on the same split ({versions}; its own defaults, batch 512, the epoch "
             "with the best validation MRR@20 kept, ties broken by position):", ""]
    header = ["model", "Recall@5", "MRR@5", "Recall@20", "MRR@20", "epochs", "seconds",
              "samples/s"]
    cells = [[entry["model"], pct(entry["metrics"]["recall@5"]), pct(entry["metrics"]["mrr@5"]),
              pct(entry["metrics"]["recall@20"]), pct(entry["metrics"]["mrr@20"]),
              str(entry["epochs"]), f"{entry['seconds']:.0f}",
              number(peer_samples_per_second(summary, entry), 0)] for entry in rows]
    return lines + markdown_table(header, cells).split("\n")


def report_section(folder: Path, summary: dict[str, Any], link: str | None = None
                   ) -> list[str]:
    """One report's part of the block; ``link`` is the report folder as the page links it
    (default: the folder as named)."""
    data, settings = summary["dataset"], summary["settings"]
    first = summary["models"][summary["ranking"][0]]["metrics"] if summary["ranking"] else {}
    repeats = data.get("repeats") or {}
    facts = [f"{int(first.get('n', 0)):,} test targets", f"protocol `{data['protocol']}`",
             f"{data['n_items']:,} items", f"{data['n_users']:,} users",
             f"epochs {epochs_text(settings.get('epochs'))}", f"seed {settings['seed']}"]
    if settings.get("refit"):
        facts.append("refit on all training sessions")
    if settings.get("paper_recipe"):
        facts.append("the papers' training recipes")
    if data.get("valid_sessions") == 0:
        facts.append("no validation split: all training sessions, last epoch kept")
    if repeats.get("targets"):
        facts.append(f"{100 * repeats['in_prefix']:.1f}% of targets repeat an item of their "
                     f"session ({100 * repeats['last_click']:.1f}% the last click)")
    lines = [f"#### {folder.name}", "",
             f"`{summary['command']}` — [report]({link or folder.as_posix()}/report.html): "
             + "; ".join(facts) + ".", ""]
    lines += _model_table(summary)
    significance = _significance(summary)
    if significance:
        lines += ["", significance]
    peers = _peers(summary)
    if peers:
        lines += ["", *peers]
    not_run = {**summary.get("skipped", {}), **summary.get("failures", {})}
    if not_run:
        lines += ["", "Not run: " + "; ".join(f"{n} ({why})" for n, why in not_run.items())
                  + "."]
    return lines


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 else f"{value:,.0f} s"


def _is_count(entry: dict[str, Any]) -> bool:
    return (entry.get("config") or {}).get("epochs") is None


def guide(reports: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    """'Which model should I use', one finding per report, from the same numbers."""
    lines = ["**Which model should I use?** What these reports say (run `nextclick benchmark` "
             "on a sample of your own log: the count models take minutes):", ""]
    for folder, summary in reports:
        ranking, models = summary["ranking"], summary["models"]
        if not ranking:
            continue
        metric = summary["settings"]["metric"]
        best = ranking[0]
        counts = [n for n in ranking if _is_count(models[n])]
        neural = [n for n in ranking if not _is_count(models[n])]
        parts = [f"**{folder.name}**: {best} leads on {metric} "
                 f"({pct(models[best]['metrics'][metric])})"]
        if counts and neural:
            c, n = counts[0], neural[0]
            gap = models[n]["metrics"][metric] - models[c]["metrics"][metric]
            parts.append(f"the best gradient-trained model ({n}) is {abs(100 * gap):.2f} "
                         f"points {'above' if gap > 0 else 'below'} the best count model ({c}), "
                         f"which trains in {_seconds(models[c]['train']['wall_seconds'])} vs "
                         f"{_seconds(models[n]['train']['wall_seconds'])}")
        repeats = summary["dataset"].get("repeats") or {}
        if repeats.get("targets"):
            parts.append(f"{100 * repeats['in_prefix']:.0f}% of next clicks repeat an item of "
                         "the session"
                         + (", so session popularity (S-POP/SKNN) is the bar to clear"
                            if repeats["in_prefix"] >= 0.3 else
                            ", so co-click models (Item-KNN, the RNNs) matter more than "
                            "repeating"))
        widest = max(ranking, key=lambda n: models[n]["metrics"].get("coverage@20", 0.0))
        parts.append(f"widest catalogue coverage: {widest} "
                     f"({pct(models[widest]['metrics'].get('coverage@20', 0.0))}% of items "
                     "in some top-20)")
        lines.append("- " + "; ".join(parts) + ".")
    lines += ["- Users with a history (HRNN protocol sections below): HRNN-Init where the "
              "user's past is predictive; check it with `nextclick evaluate --ignore-history`.",
              f"- In the tables, {COUNT_NOTE}; latency is the eager model alone (batch 1, "
              "median), the served path is `nextclick bench`."]
    return lines


def render(folders: list[Path], root: Path = Path("."), page_dir: Path | None = None) -> str:
    """The block for ``folders`` (relative to ``root``); links are relative to ``page_dir``,
    the folder of the page that holds the block (default: ``root``)."""
    reports = [(folder, load(root / folder)) for folder in folders]
    base = (page_dir or root).resolve()
    lines: list[str] = []
    for folder, summary in reports:
        link = Path(os.path.relpath((root / folder).resolve(), base)).as_posix()
        lines += [*report_section(folder, summary, link), ""]
    lines += guide(reports)
    return "\n".join(lines) + "\n"


def update(path: Path, root: Path | None = None) -> tuple[str, str]:
    """(current text, text with every generated block re-rendered). Report folders in a
    block are relative to ``root`` (default: the nearest folder above ``path`` that holds
    the first of them, i.e. the repository root for docs/results.md)."""
    text = path.read_text(encoding="utf-8")
    pieces, position = [], 0
    for match in BEGIN.finditer(text):
        end = text.find(END, match.end())
        if end < 0:
            raise ValueError(f"{path}: {match.group(0).strip()} has no {END}")
        folders = [Path(p) for p in match.group("reports").split()]
        if not folders:
            raise ValueError(f"{path}: {match.group(0).strip()} names no report folder")
        base = root if root is not None else _root_holding(path, folders[0])
        pieces += [text[position:match.end()], render(folders, base, path.parent)]
        position = end
    if not pieces:
        raise ValueError(f"{path}: no <!-- benchmark-results: ... --> block")
    pieces.append(text[position:])
    return text, "".join(pieces)


def _root_holding(path: Path, folder: Path) -> Path:
    for candidate in path.resolve().parents:
        if (candidate / folder).exists():
            return candidate
    return path.resolve().parent
