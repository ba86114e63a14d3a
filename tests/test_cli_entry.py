"""The ways in: the `attncost` app, `python -m attncost` and `python -m attncost.cli.main` all
register every command once, and `attncost predict` never loads torch, fvcore or plotly."""

import subprocess
import sys

import pytest

PREDICT = ["predict", "--d", "64", "--T", "128", "--variants", "flash,mha"]


@pytest.mark.parametrize("module", ["attncost", "attncost.cli.main"])
def test_python_dash_m_prints_the_table(module):
    out = subprocess.run([sys.executable, "-m", module, *PREDICT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "No such command" not in out.stderr
    assert "GFLOP" in out.stdout and "flash" in out.stdout and "mha" in out.stdout


def test_every_command_is_registered_once():
    from attncost.cli.app import app as bare
    from attncost.cli.main import app

    assert app is bare
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert sorted(names) == sorted(set(names))
    assert {"predict", "variants", "hardware", "profile", "calibrate", "crosscheck", "fidelity", "report"} <= set(names)


