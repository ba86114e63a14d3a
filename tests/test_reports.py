"""The HTML report without a browser: sections, self-containment, escaping, robustness, the CLI.

The runs are synthetic TEST FIXTURES (tests/report_fixtures.py): predictions from estimate(),
"measured" times derived from them. They exercise the page, they are not measurements.
"""

import html as htmllib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report_fixtures as F  # noqa: E402

from attncost.cli.main import app  # noqa: E402
from attncost.costmodel.estimate import estimate  # noqa: E402
from attncost.costmodel.shape import Shape  # noqa: E402
from attncost.reports import (SECTIONS_PREDICTION, SECTIONS_RUN, build_prediction_report,  # noqa: E402
                              build_run_report, write_prediction_report, write_run_report)
from attncost.reports import fmt  # noqa: E402
from attncost.reports.colors import PALETTE, color_for  # noqa: E402
from attncost.reports.data import crossovers, from_runs, params_label  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def full_html():
    return build_run_report([F.full_run()], ["run.json"])


def _figures(page: str) -> list:
    m = re.search(r'<script type="application/json" id="attncost-figures">(.*?)</script>', page, re.S)
    assert m, "no figure data"
    return json.loads(m.group(1))


def _strip_plotly_bundle(page: str) -> str:
    """The page without the inlined plotly.js (whose source mentions URLs in strings and docs)."""
    start = page.index("<script>")
    end = page.index("</script>", start)
    return page[:start] + page[end:]


def test_every_section_and_a_toc(full_html):
    for sid in SECTIONS_RUN:
        assert f'<section id="{sid}">' in full_html
        assert f'href="#{sid}"' in full_html
    assert len(_figures(full_html)) == 6
    assert full_html.count('<div class="plot"') == 6


def test_self_contained(full_html):
    assert full_html.count("<script>") >= 1
    assert not re.search(r"<script[^>]*\bsrc\s*=", full_html, re.I)
    assert not re.search(r"<link\b", full_html, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", full_html, re.I)
    rest = _strip_plotly_bundle(full_html)
    assert "http://" not in rest and "https://" not in rest
    assert "Content-Security-Policy" in full_html and "connect-src &#x27;none&#x27;" in full_html
    # plotly.js is inlined once (its version banner appears once)
    assert full_html.count("plotly.js v") == 1


def test_findings_are_computed(full_html):
    summary = full_html[full_html.index('<section id="summary">'):full_html.index('<section id="flops">')]
    assert "beats flash" in summary or "never beat" in summary
    assert "mha ran out of memory at T = 32,768" in summary
    assert "failed with an error" in summary
    assert "The model&#x27;s median time error is" in summary
    assert "a100" in full_html  # the hardware profile of the run
    assert "attncost profile --d 2048" in full_html  # the exact command


def test_oom_and_error_points_are_marked(full_html):
    figs = {f["id"]: f["figure"] for f in _figures(full_html)}
    symbols = json.dumps(figs["fig-time"]["data"]) + json.dumps(figs["fig-memory"]["data"])
    assert "x-thin-open" in symbols and "asterisk-open" in symbols
    assert "star" in json.dumps(figs["fig-time"]["data"])  # crossovers


def test_units_and_log_axes(full_html):
    figs = {f["id"]: f["figure"] for f in _figures(full_html)}
    for fid in ("fig-flops", "fig-time", "fig-memory", "fig-roofline"):
        lay = figs[fid]["layout"]
        assert lay["xaxis"]["type"] == "log" and lay["yaxis"]["type"] == "log", fid
        assert lay["xaxis"]["title"]["text"] and lay["yaxis"]["title"]["text"], fid
    assert any("GFLOP" in t or "TFLOP" in t for t in figs["fig-flops"]["layout"]["yaxis"]["ticktext"])
    assert any(t.endswith("ms") for t in figs["fig-time"]["layout"]["yaxis"]["ticktext"])
    assert any(t.endswith("iB") for t in figs["fig-memory"]["layout"]["yaxis"]["ticktext"])


def test_colours_are_consistent_per_variant(full_html):
    figs = _figures(full_html)
    for f in figs:
        for tr in f["figure"]["data"]:
            name = htmllib.unescape(tr.get("name") or "")
            line = (tr.get("line") or {}).get("color")
            for v in PALETTE:
                if name == v or name.startswith(v + "(") or name.startswith(v + " "):
                    if line and line != "#666" and not name.endswith("ceiling"):
                        assert line == color_for(v), (f["id"], name, line)
    assert len(set(PALETTE.values())) == len(PALETTE)
    from attncost.costmodel.variants import NAMES
    assert set(NAMES) <= set(PALETTE)


def test_xss_is_escaped_everywhere():
    page = build_run_report([F.xss_run(), F.single_point_run()], ["<evil>.json", "b.json"])
    rest = _strip_plotly_bundle(page)
    for bad in ("<script>alert(1)", "<img src=x", "<svg onload", "<b>GPU</b>", "</pre><b>x</b>", "<evil>",
                "<i>x</i>"):
        assert bad not in rest, bad
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rest
    assert "&lt;img src=x onerror=alert(2)&gt;" in rest
    # plotly text: escaped, and the JSON carries no raw "<" at all
    m = re.search(r'id="attncost-figures">(.*?)</script>', page, re.S)
    assert "<" not in m.group(1)
    figs = json.loads(m.group(1))
    text = json.dumps(figs)
    assert "&lt;script&gt;" in text and "<script>" not in text  # the run name in legends
    assert "&lt;svg onload=alert(3)&gt;" in text  # the variant name
    assert "%{" not in "".join(json.dumps(t.get("hovertemplate", "")) for f in figs for t in f["figure"]["data"])


@pytest.mark.parametrize("make", [F.single_point_run, F.no_ok_run])
def test_degenerate_runs_give_a_valid_page(make):
    page = build_run_report([make()])
    for sid in SECTIONS_RUN:
        assert f'<section id="{sid}">' in page
    assert page.rstrip().endswith("</html>")
    assert len(_figures(page)) == 6


def test_empty_run():
    from attncost.costmodel.results import Run

    page = build_run_report([Run(environment=F.environment(), points=[])])
    assert "No comparison can be drawn" in page
    assert len(_figures(page)) == 6


def test_several_runs_share_the_charts():
    a, b = F.full_run(Ts=(1024, 4096, 16384), name="box A"), F.full_run(Ts=(1024, 4096, 16384), name="box B")
    page = build_run_report([a, b])
    figs = {f["id"]: f["figure"] for f in _figures(page)}
    names = [t.get("name", "") for t in figs["fig-time"]["data"]]
    assert any(n.endswith("· box A") for n in names) and any(n.endswith("· box B") for n in names)
    assert "on box A" in page and "on box B" in page


def test_same_run_names_are_told_apart():
    data = from_runs([F.single_point_run(), F.single_point_run()])
    assert [s.label for s in data.sources] == ["single point", "single point #2"]


def test_prediction_report():
    hw = F._hardware()
    ests = []
    for v in ("flash", "mha", "linformer", "performer"):
        for T in (512, 4096, 32768):
            try:
                ests.append(estimate(v, Shape(T=T, d=1024, heads=8), None, hw))
            except ImportError:
                ests.append(estimate(v, Shape(T=T, d=1024, heads=8)))
    ests.append(estimate("linformer", Shape(T=4096, d=1024, heads=8, phase="decode")))  # n/a
    page = build_prediction_report(ests, hw, command="attncost predict --d 1024 <x>")
    for sid in SECTIONS_PREDICTION:
        assert f'<section id="{sid}">' in page
    assert 'id="crosscheck"' not in page and 'id="model-error"' not in page
    assert "attncost predict --d 1024 &lt;x&gt;" in page
    no_hw = build_prediction_report([estimate("flash", Shape(T=1024, d=512, heads=4)),
                                     estimate("mha", Shape(T=1024, d=512, heads=4))])
    assert "needs fewer FLOPs" in no_hw or "need fewer FLOPs" in no_hw or "FLOPs" in no_hw
    assert build_prediction_report([]).rstrip().endswith("</html>")


def test_write_is_atomic_and_returns_path(tmp_path):
    out = write_run_report([F.single_point_run()], tmp_path / "sub" / "r.html")
    assert out.exists() and out.read_text().startswith("<!DOCTYPE html>")
    assert not list((tmp_path / "sub").glob(".*.tmp"))
    out2 = write_prediction_report([estimate("flash", Shape(T=1024, d=512, heads=4))], tmp_path / "p.html",
                                   None, "cmd")
    assert out2.exists()


def test_reports_do_not_import_torch():
    code = "import sys, attncost.reports, attncost.cli.report; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- helpers -------------------------------------------------------------------------------

def test_units():
    assert fmt.flops(2.07e11) == "207 GFLOP"
    assert fmt.flops(1e12) == "1 TFLOP"
    assert fmt.nbytes(2**30) == "1 GiB"
    assert fmt.nbytes(64 * 2**20) == "64 MiB"
    assert fmt.ms(0.001234) == "1.23 ms"
    assert fmt.tokens(32768) == "32k"
    assert fmt.pct(-0.25) == "−25%"
    assert fmt.plot_text("<b>&") == "&lt;b&gt;&amp;"


def test_crossovers_interpolate_in_log_space():
    a = [(1024, 2.0), (2048, 2.0)]
    b = [(1024, 1.0), (2048, 4.0)]
    [(T, v, d)] = crossovers(a, b)
    assert d == "below" and 1024 < T < 2048 and v == pytest.approx(2.0)
    assert crossovers(b, b) == []


def test_params_label():
    s = Shape(T=4096, d=2048, heads=16)
    assert params_label("linformer", {"k": 256}, s) == "linformer(k=256)"
    assert params_label("flash", {}, s) == "flash"
    assert params_label("performer", {"features": 256, "chunk": 64}, s) == "performer(features=256)"


# -- the CLI -------------------------------------------------------------------------------

def test_cli_report(tmp_path):
    run_file = tmp_path / "run.json"
    F.full_run(Ts=(1024, 4096)).save(run_file)
    out = tmp_path / "out.html"
    res = runner.invoke(app, ["report", str(run_file), "-o", str(out), "--variant-heatmap", "gqa"])
    assert res.exit_code == 0, res.output
    assert str(out.resolve()) in res.output.replace("\n", "")
    assert "Speedup of gqa" in out.read_text()


def test_cli_two_runs(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    F.single_point_run().save(a)
    F.xss_run().save(b)
    res = runner.invoke(app, ["report", str(a), str(b), "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("content, words", [
    (None, "no such results file"),
    ("{not json", "is not JSON"),
    ('{"points": []}', "is not an attncost results file"),
    ('[1, 2]', "is not an attncost results file"),
])
def test_cli_bad_input(tmp_path, content, words):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    res = runner.invoke(app, ["report", str(path), "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 2
    assert words in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "r.html").exists()


def test_cli_bad_flags(tmp_path):
    run_file = tmp_path / "run.json"
    F.single_point_run().save(run_file)
    for args, words in ((["--baseline", "nope"], "--baseline: unknown variant"),
                        (["--variant-heatmap", "<x>"], "--variant-heatmap: unknown variant"),
                        (["-o", str(tmp_path)], "is a directory")):
        res = runner.invoke(app, ["report", str(run_file), *args])
        assert res.exit_code == 2, (args, res.output)
        assert words in res.output, res.output
    res = runner.invoke(app, ["report", str(tmp_path), "-o", str(tmp_path / "x.html")])
    assert res.exit_code == 2 and "is a directory" in res.output


def test_profile_file_named_by_a_run_is_found_beside_it(tmp_path):
    """`profile --hardware examples/x.json` records the path as typed; the report, run from any
    folder, looks for the file beside the results file."""
    import shutil
    from pathlib import Path

    from attncost.costmodel.results import Run
    from attncost.reports.data import from_runs

    root = Path(__file__).resolve().parents[1] / "examples"
    run_path = tmp_path / "cpu-prefill-fp32.json"
    shutil.copy(root / "cpu-prefill-fp32.json", run_path)
    shutil.copy(root / "cpu-calibrated.json", tmp_path / "cpu-calibrated.json")
    run = Run.load(run_path)
    assert run.environment.hardware_profile == "examples/cpu-calibrated.json"
    data = from_runs([run], [str(run_path)])
    assert data.sources[0].hardware is not None
    assert data.sources[0].hardware.name.startswith("calibrated-")
