"""What each entry point leaves unimported: the analytic model and `attncost predict` never load
torch (they must feel instant and run where torch is absent), and the report helpers the CLI
formats with never load plotly. Each case runs in a fresh interpreter."""

import subprocess
import sys

import pytest

PREDICT = ("from attncost.cli.main import app; from typer.testing import CliRunner; "
           "r = CliRunner().invoke(app, ['predict', '--d', '256', '--heads', '4', '--T', '256']); "
           "assert r.exit_code == 0, r.output")

CASES = {
    "predict": (PREDICT, ("torch", "fvcore", "plotly")),
    "costmodel": ("import attncost.costmodel.estimate, attncost.costmodel.crossover, attncost.costmodel.evaluate, "
                  "attncost.costmodel.fit", ("torch",)),
    "whole-model costs": ("import attncost.costmodel.model_cost as m; m.predict_model('gpt2', T=64)", ("torch",)),
    "reports": ("import attncost.reports, attncost.cli.report", ("torch",)),
    "cli commands": ("import attncost.cli.main, attncost.cli.fidelity, attncost.cli.profile", ("torch",)),
    "number formats": ("import attncost.reports.fmt, attncost.reports.html", ("torch", "plotly")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_entry_point_leaves_heavy_modules_out(name):
    code, forbidden = CASES[name]
    probe = f"{code}\nimport sys; print(' '.join(m for m in {forbidden!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{name} imported {out.stdout.strip()}"
