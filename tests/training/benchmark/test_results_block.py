"""The README's results block is generated from the benchmark reports: the checked-in
README must match the checked-in reports, and the generator must render what the
results say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from tests.helpers import make_tiny_dataset
from training.benchmark.results_block import render, update
from training.benchmark.runner import benchmark, parse_epochs

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.usefixtures("single_thread")


def test_results_block_matches_the_checked_in_reports() -> None:
    current, fresh = update(ROOT / "docs" / "results.md")
    assert current == fresh, "docs/results.md is stale: run `nextclick readme-results`"


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    data = make_tiny_dataset().save(root / "data" / "tiny")
    benchmark(data, ["pop", "spop", "gru4rec"], root / "reports" / "tiny", epochs="gru4rec=1",
              latency_clicks=5, resamples=50, progress=False, command="nextclick benchmark tiny")
    return root


def test_render_shows_the_reported_numbers(tiny_report: Path) -> None:
    summary = json.loads((tiny_report / "reports/tiny/results.json").read_text())
    text = render([Path("reports/tiny")], tiny_report)
    assert "#### tiny" in text and "`nextclick benchmark tiny`" in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| model")}
    assert list(rows) == summary["ranking"]
    for name in summary["ranking"]:
        metrics = summary["models"][name]["metrics"]
        cells = [c.strip().strip("*") for c in rows[name].strip("|").split("|")]
        assert cells[1] == f"{100 * metrics['recall@5']:.2f}"
        assert cells[3] == f"{100 * metrics['recall@10']:.2f}"
        assert cells[6] == f"{100 * metrics['mrr@20']:.2f}"
    best = summary["ranking"][0]
    assert f"**{100 * summary['models'][best]['metrics']['mrr@20']:.2f}**" in rows[best]
    assert f"Best by mrr@20: **{best}**" in text
    assert "gru4rec 1" in text  # the epoch cap is stated
    assert rows["pop"].count("| fit |") == 1 and "| 1 (1) |" in rows["gru4rec"]
    assert "Which model should I use?" in text and "**tiny**" in text


def test_readme_results_cli_check_and_rewrite(tiny_report: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    readme = tiny_report / "README.md"
    readme.write_text("# Demo\n\n<!-- benchmark-results: reports/tiny -->\nold numbers\n"
                      "<!-- /benchmark-results -->\n\nafter\n")
    before = readme.read_text()
    assert main(["readme-results", "--readme", str(readme), "--check"]) == 1
    assert readme.read_text() == before  # --check only compares
    assert main(["readme-results", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old numbers" not in text and "#### tiny" in text and text.endswith("\nafter\n")
    assert main(["readme-results", "--readme", str(readme), "--check"]) == 0
    readme.write_text("# no block\n")
    assert main(["readme-results", "--readme", str(readme)]) == 2
    assert "no <!-- benchmark-results" in capsys.readouterr().err


def test_epoch_caps_parse_and_reject_nonsense() -> None:
    assert parse_epochs(None) == {} and parse_epochs("3") == {"*": 3}
    assert parse_epochs("narm=3, hln=1,*=2") == {"narm": 3, "hln": 1, "*": 2}
    for bad in ("0", "narm", "narm=x", "=3", "narm=0"):
        with pytest.raises(ValueError, match="--epochs"):
            parse_epochs(bad)
