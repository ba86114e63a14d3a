"""Every command's --help reads clean at 80 and 100 columns: what an option takes is named (D, T,
FILE, LIST, ...) or, for a flag, left blank, never typer's Python types; no stray " ." left where
a "[...]" was taken for markup; ranges of T say "doubling"."""

import re

import pytest
from typer.testing import CliRunner

from attncost.cli.main import app

runner = CliRunner()

COMMANDS = ["", "predict", "variants", "hardware", "profile", "fidelity", "crosscheck", "report", "calibrate", "pick"]


@pytest.mark.parametrize("width", [80, 100])
def test_help_names_what_options_take(width):
    for command in COMMANDS:
        out = runner.invoke(app, [command, "--help"] if command else ["--help"], env={"COLUMNS": str(width)}).output
        assert "--help" in out, command
        for bad in ("<bool>", "<list[", "<str>", "<int>", "<float>", "<path>", "<Path>"):
            assert bad not in out, (command, bad)
        assert not re.search(r"(?<!\.) \.(?!\.)", out), (command, re.findall(r".{30} \.(?!\.)", out))
        assert "powers of two" not in out, command
        assert not re.search(r"--[a-z-]+\s+[A-Z]+-[A-Z]+\s", out), command  # the flag's name: MAX-TIME, CP-KIND


def test_metavars():
    out = runner.invoke(app, ["predict", "--help"], env={"COLUMNS": "100"}).output
    for line, metavar in (("--d ", " D "), ("--html", " FILE "), ("--param", " NAME=VALUE "), ("--csv", " FILE ")):
        assert any(line in row and metavar in row for row in out.splitlines()), (line, metavar)
    assert "doubling" in out


def test_metavars_of_calibrate_and_pick():
    """What an option takes, named for a user: never typer's type nor the flag's name in capitals."""
    for command, pairs in (("calibrate", (("--device", " DEVICE "), ("--out", " FILE "), ("--nproc", " N "))),
                           ("pick", (("--max-time", " TIME "), ("--max-memory", " SIZE "), ("--max-kv", " SIZE "),
                                     ("--sort", " KEY "), ("--fidelity", " FILE.json ")))):
        out = runner.invoke(app, [command, "--help"], env={"COLUMNS": "100"}).output
        for option, metavar in pairs:
            assert any(option + " " in row and metavar in row for row in out.splitlines()), (command, option)
