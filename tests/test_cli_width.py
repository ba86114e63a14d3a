"""Every table fits 80 and 100 columns with no number cut: no "…", no line wider than the
terminal, and the figures the --json output gives appear whole. Extend COMMANDS with a command and
a function that lists the figures its table must show."""

import json

import pytest
from typer.testing import CliRunner

from attncost.cli.main import app
from attncost.reports.fmt import sig

runner = CliRunner()


def _layer_ms(doc) -> list:
    return [sig(r["time_s"] * 1e3) for r in doc["results"] if r["time_s"] is not None]


def _model_ttft(doc) -> list:
    return [sig(r["ttft_s"] * 1e3) for r in doc["results"] if r.get("ttft_s") is not None]


def _none(doc) -> list:
    return []


# (arguments, figures the table shows, read from the same command's --json)
COMMANDS = [
    (["predict", "--d", "2048", "--T", "32768"], _layer_ms),
    (["predict", "--d", "1024", "--T", "512:8192"], _layer_ms),
    (["predict", "--model", "llama-3-8b", "--T", "8192", "--batch", "32"], _model_ttft),
    (["hardware"], _none),
    (["variants"], _none),
]


@pytest.mark.parametrize("width", [80, 100])
@pytest.mark.parametrize("args,figures", COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
def test_no_cell_is_cut(args, figures, width):
    r = runner.invoke(app, args, env={"COLUMNS": str(width)})
    assert r.exit_code == 0, r.output
    assert "…" not in r.output
    long = [line for line in r.output.splitlines() if len(line) > width]
    assert not long, long
    shown = figures(json.loads(runner.invoke(app, args + ["--json"]).output)) if figures is not _none else []
    for fig in shown:
        assert fig in r.output, fig


def test_wide_prints_a_table_when_piped():
    """--wide is as wide as the table needs, piped or not: the header row, not a block per row."""
    for args in (["predict", "--d", "1024", "--T", "4096"], ["hardware"],
                 ["predict", "--model", "gpt2", "--T", "1024"]):
        out = runner.invoke(app, [*args, "--wide"], env={"COLUMNS": ""}).output
        assert any(line.split()[:1] in (["variant"], ["name"], ["T"]) for line in out.splitlines() if line.strip()), out
