"""The ways in: the `attncost` app, `python -m attncost` and `python -m attncost.cli.main` all
register every command once, and `attncost predict` loads no other command's module."""

import subprocess
import sys

import pytest

PREDICT = ["predict", "--d", "64", "--T", "128", "--variants", "flash,mha"]


@pytest.mark.parametrize("module", ["attncost", "attncost.cli.main"])
def test_python_dash_m_prints_the_table(module):
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", module, *PREDICT], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "No such command" not in out.stderr
    loaded = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    others = ("calibrate", "profile", "report", "fidelity", "crosscheck", "pick")
    assert not loaded & {f"attncost.cli.{m}" for m in others}
    assert "GFLOP" in out.stdout and "flash" in out.stdout and "mha" in out.stdout


def test_every_command_is_registered_once():
    """Each command loads on demand, its module imported once; --help lists every command."""
    import typer

    from attncost.cli.app import COMMANDS, app as bare
    from attncost.cli.main import app

    assert app is bare
    group = typer.main.get_command(app)
    ctx = group.make_context("attncost", ["predict"], resilient_parsing=True)
    listed = group.list_commands(ctx)
    assert all(group.get_command(ctx, n) is not None for n in listed)
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert sorted(names) == sorted(set(names)) and set(names) == set(listed) == set(COMMANDS)
    assert {"predict", "variants", "hardware", "profile", "calibrate", "crosscheck", "fidelity", "report",
            "pick"} <= set(names)
