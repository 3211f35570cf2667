"""The ``nextclick`` entry point: the subcommands it lists, their help, one-line errors."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from cli.main import COMMANDS, build_parser, main

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


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_is_written_for_users(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Plain text (no reStructuredText marks), every option explained with a short
    placeholder, defaults stated at most once, and no word broken across lines."""
    parser = _subparsers(build_parser([name, "--help"]))[name]
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or not action.option_strings:
            continue
        flag = action.option_strings[-1]
        assert action.help, f"{name} {flag}: no help"
        assert action.help.count("default") <= 1, f"{name} {flag}: {action.help}"
        if action.nargs != 0:
            assert action.metavar is not None or action.choices is None, \
                f"{name} {flag}: choices listed as a metavar"
    with pytest.raises(SystemExit):
        main([name, "--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "nextclick " + name + "``" not in text
    for line in text.splitlines():
        assert not re.search(r"[A-Za-z]-$", line), f"broken word: {line!r}"
    if name == "prepare":  # each default once: the protocol defaults live in one table
        assert text.count("(default 1800)") == 1
        assert len(re.findall(r"last-session\s+5/2/2", text)) == 1


def test_errors_are_one_line_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model", "no-such-model", "--data", "nowhere", "--out", "x"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("nextclick train: error:") and "\n" not in error


def test_console_script_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "cli.main", "--help"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0 and "nextclick" in result.stdout
