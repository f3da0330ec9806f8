"""docs/user-guide.md stays in sync with the CLI: its reference is the commands' --help output."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cli_reference", REPO / "docs" / "cli_reference.py")
cli_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli_reference)


def test_the_cli_reference_matches_the_parser():
    assert cli_reference.current() == cli_reference.render(), (
        "docs/user-guide.md is out of date: run `python docs/cli_reference.py --write`"
    )


def test_every_command_is_in_the_reference_with_help_text():
    from colabkit.cli import build_parser

    guide = cli_reference.GUIDE.read_text()
    for parser in cli_reference.walk(build_parser()):
        assert f"### `{parser.prog}`" in guide
        assert parser.description, f"{parser.prog} has no description"


@pytest.mark.parametrize("command", [["train", "mnist"], []])
def test_the_reference_is_what_colabkit_help_prints(command):
    env = {**os.environ, "COLUMNS": cli_reference.WIDTH}
    done = subprocess.run(
        [sys.executable, "-m", "colabkit", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )

    assert done.returncode == 0
    prog = " ".join(["colabkit", *command])
    block = re.search(rf"### `{prog}`\n\n```text\n(.*?)\n```", cli_reference.current(), re.S)
    assert block is not None and block.group(1) == done.stdout.rstrip()
