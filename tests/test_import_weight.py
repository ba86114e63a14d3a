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


def test_a_later_report_reads_plotlys_answers_from_the_store(tmp_path):
    """A report asks plotly for its templates, colour scales and subplot grids once: later processes
    read the answers the store kept, never import plotly's figure classes (nor the dataframe library
    they load), and write the same page."""
    import json
    import os
    import re

    page = tmp_path / "p.html"
    code = ("import sys; from attncost.cli.main import app; from typer.testing import CliRunner; "
            f"r = CliRunner().invoke(app, ['predict', '--d', '256', '--heads', '4', '--T', '256:2048', '--html', "
            f"{str(page)!r}, '--overwrite']); assert r.exit_code == 0, r.output\n"
            "print(' '.join(m for m in ('plotly.subplots', 'plotly.graph_objects', 'narwhals') if m in sys.modules))")
    env = dict(os.environ, ATTNCOST_CACHE_DIR=str(tmp_path / "store"))
    pages, imported = [], []
    for run in range(3):
        if run == 2:  # files that cannot be read are asked anew and replaced
            for kept in (tmp_path / "store").glob("plotly-*/*.json"):
                kept.write_text("{not json")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        imported.append(out.stdout.strip())
        pages.append(re.sub(r"generated [^<]*", "", page.read_text()))
    assert "plotly.subplots" in imported[0] and imported[1] == "" and "plotly.subplots" in imported[2]
    assert pages[0] == pages[1] == pages[2]
    assert all(json.loads(kept.read_text())["answer"] for kept in (tmp_path / "store").glob("plotly-*/*.json"))
