"""crosscheck and fidelity fit the width they are given (COLUMNS): no cell cut ("…"), no line
longer than the width, every number whole; --wide shows every column; --csv beside --json."""

import csv
import re

import pytest
from typer.testing import CliRunner

from attncost.cli.main import app

runner = CliRunner()

COMMANDS = [
    ["crosscheck", "--variants", "flash,mla,dsa,sliding_window", "--T", "64"],
    ["crosscheck", "--variants", "flash,mla", "--T", "64,96"],
]


@pytest.mark.parametrize("columns", [80, 100])
@pytest.mark.parametrize("args", COMMANDS)
def test_fits_the_width(args, columns):
    result = runner.invoke(app, args, env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert max(len(line) for line in result.output.splitlines()) <= columns
    # numbers whole: no line of a cell starts with the tail of a FLOP count
    assert not re.search(r"^\s+[\d.]* ?[kMGTP]?FLOP\b", result.output, re.M)


def test_wide_shows_every_count():
    narrow = runner.invoke(app, COMMANDS[0], env={"COLUMNS": "100"}).output
    wide = runner.invoke(app, COMMANDS[0] + ["--wide"], env={"COLUMNS": "100"}).output
    assert "where they differ" not in narrow and "where they differ" in wide and "…" not in wide


def test_crosscheck_csv(tmp_path):
    path = tmp_path / "flops.csv"
    result = runner.invoke(app, ["crosscheck", "--variants", "flash,mla", "--T", "64", "--csv", str(path)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(path.open()))
    assert [r["variant"] for r in rows] == ["flash", "mla"] and rows[0]["shape.T"] == "64"
