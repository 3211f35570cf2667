"""The ``nextclick`` entry point: the subcommands it lists, their help, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cli.main import COMMANDS, main

SUBCOMMANDS = ["synth", "prepare", "train", "evaluate", "export", "serve", "events",
               "replay", "retrain", "bench", "benchmark", "readme-results"]


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(COMMANDS) == SUBCOMMANDS
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"    {name}" in text


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: nextclick {name}" in text
    assert "example" in text  # every command shows how it is used


def test_errors_are_one_line_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model", "no-such-model", "--data", "nowhere", "--out", "x"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("nextclick train: error:") and "\n" not in error


def test_console_script_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "cli.main", "--help"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0 and "nextclick" in result.stdout
