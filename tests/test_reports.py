"""The HTML report without a browser: sections, self-containment, escaping, robustness, the CLI.

The runs are synthetic TEST FIXTURES (tests/report_fixtures.py): predictions from estimate(),
"measured" times derived from them. They exercise the page, they are not measurements.
"""

import html as htmllib
import json
import math
import re
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
from attncost.reports.data import from_runs, intersections, params_label  # noqa: E402
from attncost.reports.html import plot_text  # noqa: E402

runner = CliRunner()
pytestmark = pytest.mark.xdist_group("reports")  # one worker builds the module's pages once


@pytest.fixture(scope="module")
def full_html():
    return build_run_report([F.full_run()], ["run.json"])


@pytest.fixture(scope="module")
def full_figures(full_html):
    """The figures of the full fixture run's page (with one run, its path does not change them)."""
    return {f["id"]: f["figure"] for f in _figures(full_html)}


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


def test_the_points_table_shows_the_machines_pace_where_the_run_recorded_it(full_html):
    assert ">pace<" not in full_html  # a run without it: no column
    run = F.full_run(Ts=(512, 1024))
    run.hardware = F._hardware().model_copy(update={"pace_s": 1e-3})
    for i, p in enumerate(run.points):
        p.pace_s = 1.5e-3 if i == 0 else 1e-3
    page = build_run_report([run], ["paced.json"])
    assert ">pace<" in page and ">1.50x<" in page and ">1.00x<" in page and "the machine&#x27;s drift" in page


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
            ests.append(estimate(v, Shape(T=T, d=1024, heads=8), None, hw))
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


def test_prediction_report_shows_the_sweeps_own_ranges(monkeypatch):
    """Estimates from costmodel.evaluate carry their ranges of T: the report does not search again,
    and lists each range (dsa: fewer FLOPs than flash at small and at large T)."""
    import attncost.reports.data as report_data
    from attncost.costmodel.evaluate import evaluate

    shapes = [Shape(T=T, d=4096, heads=32, phase="train") for T in (1024, 65536)]
    ests = evaluate(["flash", "dsa"], "flash", shapes)  # no hardware: FLOPs
    (first, second) = ests[1].cheaper_ranges_T["flops"]
    monkeypatch.setattr(report_data, "evaluate", lambda *a, **k: pytest.fail("searched again"))
    page = build_prediction_report(ests)
    assert f"from T = {first[0]:,} to {first[1] - 1:,} and from T = {second[0]:,}" in page


def test_write_is_atomic_and_returns_path(tmp_path):
    out = write_run_report([F.single_point_run()], tmp_path / "sub" / "r.html")
    assert out.exists() and out.read_text().startswith("<!DOCTYPE html>")
    assert not list((tmp_path / "sub").glob(".*.tmp"))
    out2 = write_prediction_report([estimate("flash", Shape(T=1024, d=512, heads=4))], tmp_path / "p.html",
                                   None, "cmd")
    assert out2.exists()


# -- helpers -------------------------------------------------------------------------------

def test_units():
    assert fmt.flops(2.07e11) == "207 GFLOP"
    assert fmt.flops(1e12) == "1 TFLOP"
    assert fmt.nbytes(2**30) == "1 GiB"
    assert fmt.nbytes(64 * 2**20) == "64 MiB"
    assert fmt.ms(0.001234) == "1.23 ms"
    assert fmt.tokens(32768) == "32k"
    assert fmt.pct(-0.25) == "−25%"
    assert plot_text("<b>&") == "&lt;b&gt;&amp;"
    assert fmt.sig(0.187) == "0.187" and fmt.sig(35.2) == "35.2" and fmt.sig(1032) == "1,032"
    assert fmt.ms(0.0014, unit=False) == "1.4"


def test_log_ticks():
    vals, text = fmt.log_ticks(512, 32768, fmt.tokens, base=2, max_ticks=12)
    assert vals[0] == 512 and vals[-1] == 32768 and text[:2] == ["512", "1k"]
    vals, text = fmt.log_ticks(3 * 2**20, 2**31, fmt.nbytes, base=2)  # thinned to at most 10
    assert len(vals) <= 10 and text[0] == "2 MiB"
    vals, _ = fmt.log_ticks(2.0, 300.0, str)  # two decades: 1-2-5 steps
    assert vals[:4] == [1.0, 2.0, 5.0, 10.0]
    vals, _ = fmt.log_ticks(1e3, 1e15, str, max_ticks=6)  # twelve decades: powers of ten, thinned
    assert len(vals) <= 7 and all(math.log10(v) == round(math.log10(v)) for v in vals)
    assert fmt.log_ticks(0, 10, str) == ([], [])


def test_intersections_interpolate_in_log_space():
    a = [(1024, 2.0), (2048, 2.0)]
    b = [(1024, 1.0), (2048, 4.0)]
    [(T, v, d)] = intersections(a, b)
    assert d == "below" and 1024 < T < 2048 and v == pytest.approx(2.0)
    assert intersections(b, b) == []


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
    """Two files on one page: both runs, named with their files, every point counted, the
    hostile strings of the second escaped."""
    from attncost.costmodel.variants import REGISTRY

    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "r.html"
    F.single_point_run().save(a)
    hostile = F.xss_run()
    hostile.points = [p for p in hostile.points if p.variant in REGISTRY]  # a file names known variants only
    hostile.save(b)
    res = runner.invoke(app, ["report", str(a), str(b), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert f"(2 runs, {1 + len(hostile.points)} points)" in res.output
    rest = _strip_plotly_bundle(out.read_text())
    assert str(a) in rest and str(b) in rest
    assert "single point" in rest and "&lt;script&gt;alert(1)&lt;/script&gt;" in rest
    assert "<script>alert(1)" not in rest and "<img src=x" not in rest


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


def test_a_run_reads_its_embedded_profile_wherever_it_lies(tmp_path):
    """The profile a run was predicted with travels in the results file: a moved file gives the
    same report, and a profile file lying beside it is never looked for."""
    import shutil

    from attncost.costmodel.hardware import get_hardware, load_profile
    from attncost.costmodel.results import Run

    root = Path(__file__).resolve().parents[1] / "examples"
    run = Run.load(root / "cpu-prefill-fp32.json")
    profile = load_profile(root / "cpu-calibrated.json")
    moved = tmp_path / "elsewhere" / "run.json"
    moved.parent.mkdir()
    run.model_copy(update={"hardware": profile}).save(moved)
    data = from_runs([Run.load(moved)], [str(moved)])
    assert data.sources[0].hardware is not None and data.sources[0].hardware.name == profile.name
    # a run that names a profile file but does not embed it: no profile, even with the file beside it
    bare = tmp_path / "bare.json"
    run.model_copy(update={"hardware": None}).save(bare)
    shutil.copy(root / "cpu-calibrated.json", tmp_path / "cpu-calibrated.json")
    assert run.environment.hardware_profile.endswith("cpu-calibrated.json")
    assert from_runs([Run.load(bare)], [str(bare)]).sources[0].hardware is None
    # a built-in name needs no file
    named = F.single_point_run()
    assert named.hardware is None and named.environment.hardware_profile == "a100"
    assert from_runs([named]).sources[0].hardware.profile == get_hardware("a100")


# -- cost vs fidelity ------------------------------------------------------------------------
# FIXTURE: a small hand-made `attncost fidelity --json` document (made-up cosines, not
# measurements), plus the committed example examples/fidelity-cpu.json (a real CPU run).

from attncost.costmodel.fidelity_doc import FidelityFileError, load_fidelity  # noqa: E402
from attncost.reports import SECTIONS_FIDELITY, build_fidelity_report  # noqa: E402
from attncost.costmodel.fidelity_doc import FidelityDoc, check_fidelity  # noqa: E402
from attncost.reports.fidelity_data import fidelity_data, pareto_front  # noqa: E402

EXAMPLE_FIDELITY = Path(__file__).resolve().parents[1] / "examples" / "fidelity-cpu.json"


def _fid_point(variant, label, params, cos, T=1024, inputs="structured", causal=True, status="ok", base=0.2):
    shape = {"batch": 1, "T": T, "d": 256, "heads": 4, "kv_heads": None, "dtype": "fp32", "causal": causal,
             "phase": "prefill"}
    ok = status == "ok"
    return {"variant": variant, "label": label, "kind": "approximation", "status": status,
            "reason": None if ok else "fixture: not measured", "params": params, "T": T, "d": 256, "heads": 4,
            "batch": 1, "inputs": inputs, "causal": causal, "shape": shape,
            "cosine_output": cos if ok else None, "rel_error_output": (1 - cos) if ok else None,
            "cosine_attention": None, "rel_error_attention": None,
            "baseline_cosine_output": base if ok else None, "baseline_rel_error_output": None,
            "distill": None, "notes": []}


def fidelity_fixture(label_of_linformer="linformer k=64"):
    """FIXTURE (made-up numbers): flash exact, sliding_window close, linformer cheap, performer
    dominated, mla skipped; at two T on structured inputs and one T on random ones."""
    pts = []
    for T in (256, 1024):
        pts += [_fid_point("flash", "flash", {}, 1.0, T),
                _fid_point("sliding_window", "sliding_window window=128", {"window": 128}, 0.97, T),
                _fid_point("linformer", label_of_linformer, {"k": 64}, 0.6, T, causal=False),
                _fid_point("performer", "performer features=256", {"features": 256}, 0.1, T),
                _fid_point("mla", "mla", {}, None, T, status="skipped")]
    pts.append(_fid_point("flash", "flash", {}, 1.0, 1024, inputs="random"))
    return {"schema": "attncost-fidelity", "schema_version": 1,
            "settings": {"d": 256, "heads": 4, "batch": 1, "seed": 0}, "points": pts}


def test_pareto_front_hand_example():
    # (cost, fidelity): lower cost and higher fidelity are better
    items = [(1.0, 0.5),   # 0: cheapest: front
             (2.0, 0.4),   # 1: dominated by 0
             (2.0, 0.8),   # 2: front
             (3.0, 0.8),   # 3: dominated by 2 (same fidelity, dearer)
             (4.0, 1.0),   # 4: front
             (5.0, 1.0 - 1e-12),  # 5: dominated by 4 (equal within tolerance, dearer)
             (1.0, 0.5),   # 6: a twin of 0: both on the front
             (0.5, 0.1)]   # 7: cheapest of all: front
    assert pareto_front(items) == [7, 0, 6, 2, 4]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 0.3)]) == [0]


def test_fidelity_section_from_fixture():
    page = build_fidelity_report([fidelity_fixture()], ["fixture.json"])
    for sid in SECTIONS_FIDELITY:  # one section: no contents list
        assert f'<section id="{sid}">' in page and f'href="#{sid}"' not in page
    assert 'class="toc"' not in page
    figs = _figures(page)
    assert len(figs) == 1 and figs[0]["id"] == "fig-fidelity"
    data = figs[0]["figure"]["data"]
    fronts = [t for t in data if t.get("name") == "Pareto front"]
    assert len(fronts) == 3  # one step line per (T, inputs)
    assert all(t.get("line", {}).get("shape") == "hv" for t in fronts)
    layout = figs[0]["figure"]["layout"]
    assert [layout[k].get("type") for k in sorted(layout) if k.startswith("xaxis")].count("log") == 3
    assert "no point at this T and input kind" in json.dumps(layout)  # random inputs at T = 1,024 only
    assert "FLOPs per layer" in json.dumps(layout)  # no hardware: cost in FLOPs, said on the axis
    text = htmllib.unescape(re.sub(r"<[^>]+>", " ", page[page.index('<section id="fidelity">'):]))
    assert "2 points skipped" in text and "mla (skipped: fixture: not measured)" in text
    assert "performer features=256" in text and "dominated" in text
    # by the cost model at d = 256, sliding_window(128) needs fewer FLOPs than linformer(k=64) here,
    # so linformer, less faithful, is dominated
    assert re.search(r"At T = 1,024 on structured inputs, the Pareto front \(by FLOPs\), cheapest first, is "
                     r"sliding_window window=128 \(cosine 0.970, [^)]*\), flash \(cosine 1.000, [^)]*\); 2 of 4 "
                     r"points are dominated: performer features=256 and linformer k=64", text)
    assert "less faithful than uniform attention" in text  # performer 0.1 < 0.2
    fd = fidelity_data([fidelity_fixture()])
    f = next(f for f in fd.facets if f.T == 1024 and f.inputs == "structured")
    assert [q.label for q in f.front] == ["sliding_window window=128", "flash"]
    perf = next(q for q in f.points if q.variant == "performer")
    assert not perf.on_front and perf.dominated_by is not None


def test_fidelity_with_hardware_uses_predicted_time():
    fd = fidelity_data([fidelity_fixture()], hardware=F._hardware())
    assert fd.metric == "time" and fd.hardware == "a100"
    page = build_fidelity_report([fidelity_fixture()], hardware=F._hardware())
    assert "predicted time per layer on" in json.dumps(_figures(page)[0]["figure"]["layout"])


def test_fidelity_labels_are_escaped():
    evil = '<img src=x onerror=alert(1)>"&'
    page = build_fidelity_report([fidelity_fixture(evil)], ["<b>x</b>.json"])
    assert "<img src=x" not in page
    assert "<b>x</b>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # escaped in the HTML text and in plotly's strings
    for fig in _figures(page):
        assert "<img" not in json.dumps(fig)


def test_run_report_with_the_example_fidelity_file():
    doc = load_fidelity(EXAMPLE_FIDELITY)
    page = build_run_report([F.full_run()], ["run.json"], fidelity=[doc], fidelity_paths=[str(EXAMPLE_FIDELITY)])
    for sid in SECTIONS_RUN + SECTIONS_FIDELITY:
        assert f'<section id="{sid}">' in page
    assert page.index('<section id="fidelity">') < page.index('<section id="environment">')
    assert len(_figures(page)) == 7
    assert "predicted time per layer on a100" in page or "FLOPs per layer" in page
    assert "Pareto front" in page and "uniform-mean baseline" in page


@pytest.mark.parametrize("doc, words", [
    ([1], "top level"),
    ({"schema": "attncost-fidelity", "schema_version": 99, "points": []}, "schema_version"),
    ({"schema": "attncost-fidelity", "schema_version": 1, "points": [{"variant": "flash"}]}, "points.0.label"),
])
def test_check_fidelity_rejects_bad_documents(doc, words):
    with pytest.raises(FidelityFileError, match=re.escape(words)):
        check_fidelity(doc, "x.json")


def test_fidelity_document_is_typed():
    doc = load_fidelity(EXAMPLE_FIDELITY)
    assert isinstance(doc, FidelityDoc) and doc.schema_id == "attncost-fidelity" and doc.settings.d == 256
    assert all(p.status != "ok" or -1 <= p.cosine_output <= 1 + 1e-9 for p in doc.points)
    raw = fidelity_fixture()
    assert check_fidelity(raw).points[0].shape.T == 256
    for key, value, words in (("cosine_output", float("nan"), "points.0.cosine_output: input should be a finite"),
                              ("cosine_output", None, "points.0: cosine_output: expected a number"),
                              ("causal", "yes", "points.0.causal"), ("T", 0, "points.0.T")):
        bad = json.loads(json.dumps(raw))
        bad["points"][0][key] = value
        with pytest.raises(FidelityFileError, match=re.escape(words)):
            check_fidelity(bad, "x.json")


def test_cli_report_with_fidelity(tmp_path):
    run_file = tmp_path / "run.json"
    F.single_point_run().save(run_file)
    fid = tmp_path / "fid.json"
    fid.write_text(json.dumps(fidelity_fixture()))
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(run_file), "--fidelity", str(fid), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert '<section id="fidelity">' in out.read_text() and '<section id="roofline">' in out.read_text()
    out2 = tmp_path / "f.html"  # fidelity alone, no run, the example file twice (repeatable)
    res = runner.invoke(app, ["report", "--fidelity", str(EXAMPLE_FIDELITY), "--fidelity", str(fid),
                              "-o", str(out2)])
    assert res.exit_code == 0, res.output
    assert "2 fidelity files" in res.output
    page = out2.read_text()
    assert '<section id="fidelity">' in page and '<section id="roofline">' not in page
    res = runner.invoke(app, ["report", "-o", str(tmp_path / "none.html")])  # neither: usage error
    assert res.exit_code == 2 and "Missing argument" in res.output


@pytest.mark.parametrize("content, words", [
    (None, "no such fidelity file"),
    ("{not json", "is not JSON"),
    ('{"schema": "attncost-fidelity", "schema_version": 1}', "is not an attncost fidelity file"),
    ("RUN", "is not an attncost fidelity file"),
])
def test_cli_report_bad_fidelity_file(tmp_path, content, words):
    path = tmp_path / "bad.json"
    if content == "RUN":
        F.single_point_run().save(path)
    elif content is not None:
        path.write_text(content)
    res = runner.invoke(app, ["report", "--fidelity", str(path), "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 2, res.output
    assert words in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r.html").exists()


def test_cli_fidelity_html(tmp_path):
    out = tmp_path / "fid.html"
    res = runner.invoke(app, ["fidelity", "--variants", "flash,sliding_window,linformer", "--T", "64",
                              "--d", "64", "--heads", "2", "--inputs", "structured", "--param",
                              "linformer.k=8,32", "--html", str(out)])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    assert '<section id="fidelity">' in page and "Pareto front" in page
    res = runner.invoke(app, ["fidelity", "--T", "64", "--html", str(tmp_path)])
    assert res.exit_code == 2 and "is a directory" in res.output


# -- what a reader sees: labels, legends, markers, words -----------------------------------------

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_RUNS = [ROOT / "examples" / "cpu-prefill-fp32.json", ROOT / "examples" / "cpu-decode-fp32.json"]


def _page_text(page: str) -> str:
    """What a reader can read: the HTML text (no style, no script) and every string of the figures
    (of a whole page; a part of one has its text alone)."""
    figs = _figures(page) if 'id="attncost-figures"' in page else []
    body = re.sub(r"<(style|script)\b.*?</\1>", " ", page, flags=re.S)
    strings: list = []

    def walk(o):
        if isinstance(o, str):
            strings.append(o)
        elif isinstance(o, (list, tuple)):
            for x in o:
                walk(x)
        elif isinstance(o, dict):
            for x in o.values():
                walk(x)

    walk(figs)
    return htmllib.unescape(re.sub(r"<[^>]+>", " ", body) + "\n" + "\n".join(strings))


@pytest.fixture(scope="module")
def example_runs():
    from attncost.costmodel.results import Run

    return [Run.load(p) for p in EXAMPLE_RUNS]


@pytest.fixture(scope="module")
def example_page(example_runs):
    return build_run_report(example_runs, [str(p) for p in EXAMPLE_RUNS])


def test_two_runs_name_the_run_only_where_needed(example_page, example_runs):
    """The prefill and the decode run differ by phase: the phase tells their series apart, so no
    label carries the run's name, and a sentence names its run once."""
    names = [r.name or p.stem for r, p in zip(example_runs, EXAMPLE_RUNS)]
    data = from_runs(example_runs, [str(p) for p in EXAMPLE_RUNS])
    assert not [s.label for s in data.series if any(n in s.label for n in names)]
    assert {s.label for s in data.series if s.variant == "mha"} == {"mha · prefill", "mha · decode"}
    summary = example_page[:example_page.index('<section id="flops">')]
    sentences = [htmllib.unescape(li) for li in re.findall(r"<li>(.*?)</li>", summary)]
    assert len(sentences) > 10
    for line in sentences:
        assert sum(line.count(n) for n in names) <= 1, line
    assert "gqa(kv_heads=1) and mqa beat flash at every T on cpu-prefill-fp32" in " ".join(sentences)


def test_two_runs_of_one_shape_draw_flops_once():
    """FLOPs do not depend on the device: two runs of the same shapes draw one FLOPs line per
    variant (and one legend entry), while their times keep the runs apart."""
    a, b = F.full_run(Ts=(1024, 4096, 16384), name="box A"), F.full_run(Ts=(1024, 4096, 16384), name="box B")
    figs = {f["id"]: f["figure"] for f in _figures(build_run_report([a, b]))}
    totals = [t for t in figs["fig-flops"]["data"] if t.get("line", {}).get("dash") != "dot" and t["x"][0] is not None]
    shown = [t["name"] for t in figs["fig-flops"]["data"] if t.get("showlegend") is not False and t.get("name")]
    variants = [v for v, _ in F.VARIANTS]
    assert len(shown) == len(set(shown))
    assert sorted(htmllib.unescape(n) for n in shown if n not in ("total", "attention core")) == sorted(
        s.name for s in from_runs([a]).series)
    panels = len(figs["fig-flops"]["layout"]["annotations"])  # a title per panel: exact, low-rank, learned
    drawn_in = {}  # the baseline is drawn in every panel, each other variant once
    for t in totals:
        drawn_in[t["name"]] = drawn_in.get(t["name"], 0) + 1
    assert all(n == (panels if name == "flash" else 1) for name, n in drawn_in.items()), drawn_in
    assert len(drawn_in) == len(variants)
    assert all("box" not in t["name"] for t in figs["fig-flops"]["data"])
    assert any(t.get("name", "").endswith("· box B") for t in figs["fig-time"]["data"])


def test_measured_and_predicted_crossovers_are_drawn_apart(full_figures):
    figs = full_figures
    stars = {t["name"]: t["marker"] for t in figs["fig-time"]["data"] if t.get("name", "").startswith("crossovers (")}
    assert set(stars) == {"crossovers (measured)", "crossovers (predicted)"}
    assert stars["crossovers (predicted)"]["color"] == "white"  # hollow: outlined in the variant's colour
    measured = stars["crossovers (measured)"]
    assert measured["color"] != "white" and measured["line"]["color"] == "black"  # filled, outlined in black
    keys = [t["name"] for t in figs["fig-time"]["data"] if t.get("legendrank") == 1]
    assert "crossover with flash, measured" in keys and "crossover with flash, predicted" in keys


def test_device_memory_is_drawn_only_near_the_data(example_page, full_figures):
    """The CPU runs peak far below the device's memory: it is said in words, not drawn; the
    fixture's mha at 32k comes within 4x of the a100's 80 GiB: drawn."""
    far = {f["id"]: f["figure"] for f in _figures(example_page)}["fig-memory"]
    assert not [t for t in far["data"] if (t.get("name") or "").endswith(" memory")]
    memory = _page_text(example_page[example_page.index('<section id="memory">'):
                                     example_page.index('<section id="crossover">')])
    assert "Far above every value shown, so not drawn: calibrated-amd-epyc has" in memory
    near = full_figures["fig-memory"]
    assert [t for t in near["data"] if (t.get("name") or "").endswith(" memory")]


def test_a_calibrated_profile_draws_its_measured_ceiling(example_runs, full_figures):
    """A fitted profile's roofline tops out at peak x the fitted efficiency of large matmuls, drawn
    as the measured ceiling beside the datasheet peak; an assumed profile has the datasheet alone."""
    from attncost.reports.hardware import hardware_info

    fig = {f["id"]: f["figure"] for f in _figures(build_run_report(example_runs[:1]))}["fig-roofline"]
    lines = {t["name"]: t for t in fig["data"] if t.get("mode") == "lines"}
    hw = hardware_info(example_runs[0].hardware)
    assert hw.fitted
    peak = hw.profile.tensor_peak("fp32")
    measured = lines["calibrated-amd-epyc measured ceiling (fp32)"]["y"][-1]
    assert measured == pytest.approx(peak * hw.profile.matmul_eff("fp32").max_eff) and measured < peak / 2
    assert lines["calibrated-amd-epyc datasheet peak (fp32)"]["y"][-1] == pytest.approx(peak)
    assumed = full_figures["fig-roofline"]
    names = [t["name"] for t in assumed["data"] if t.get("mode") == "lines"]
    assert names == ["a100 datasheet peak (bf16)"] and not hardware_info("a100").fitted


def test_no_internal_names_on_the_page(example_page):
    pages = [example_page, build_run_report([F.full_run(), F.no_ok_run()]),
             build_prediction_report([estimate(v, Shape(T=T, d=1024, heads=8), None, F._hardware())
                                      for v in ("flash", "mla") for T in (1024, 8192)]),
             build_fidelity_report([fidelity_fixture()], ["fixture.json"])]
    for page in pages:
        text = _page_text(page)
        for internal in ("Point.", "Run.", "Estimate", "Series", "Source(", "est.", "kv_cache_bytes",
                         "predicted_time_s", "peak_memory_bytes", "hardware_profile", "causal True",
                         "causal False", "None", "nan"):
            assert not re.search(r"(?<![\w.])" + re.escape(internal), text), internal


def test_small_multiples_one_panel_per_family():
    """Thirteen variants: the time and FLOPs charts have a panel per family, the baseline in each;
    a few variants keep one panel."""
    from attncost.costmodel.variants import NAMES, REGISTRY

    hw = F._hardware()
    ests = [estimate(v, Shape(T=T, d=1024, heads=8), None, hw) for v in NAMES for T in (1024, 4096)]
    figs = {f["id"]: f["figure"] for f in _figures(build_prediction_report(ests, hw))}
    families = {v.family for v in REGISTRY.values()}
    assert families == {"exact", "latent", "low-rank", "learned"}
    for fid in ("fig-flops", "fig-time"):
        lay = figs[fid]["layout"]
        titles = {a["text"] for a in lay["annotations"]}
        assert {"exact attention", "latent attention", "low-rank and kernel", "learned selectors and mixers"} <= titles
        axes = {t.get("xaxis", "x") for t in figs[fid]["data"] if t.get("name") == "flash" and t["x"][0] is not None}
        assert len(axes) == 4
        for name in ("mla(kv_lora_rank=512)", "linformer(k=256)", "topk(k=16)"):
            assert len({t.get("xaxis", "x") for t in figs[fid]["data"] if t.get("name") == name}) == 1
    few = {f["id"]: f["figure"] for f in _figures(build_prediction_report(ests[:6], hw))}
    assert "xaxis2" not in few["fig-time"]["layout"]


def test_kv_chart_caps_a_window_and_flattens_a_state():
    """What decode keeps, from the cost model's decode estimate: sliding_window's cache stops
    growing at its window, performer's state is flat, linformer has no decode path."""
    from attncost.reports.data import kv_data

    hw = F._hardware()
    Ts = (256, 1024, 4096, 16384)
    ests = [estimate(v, Shape(T=T, d=2048, heads=16), p, hw) for v, p in
            (("flash", None), ("sliding_window", {"window": 1024}), ("performer", None), ("linformer", None))
            for T in Ts]
    kv = kv_data(from_estimates_for_test(ests, hw))
    lines = {line.variant: line for line in kv.lines}
    flash = [b for _, b, _ in lines["flash"].points]
    window = [b for _, b, _ in lines["sliding_window"].points]
    assert flash == [T * 2 * 2048 * 2 for T in Ts]  # K and V, d values each, bf16
    assert window == flash[:2] + [flash[1]] * 2  # capped at 1,024 tokens
    assert lines["performer"].state and len({b for _, b, _ in lines["performer"].points}) == 1
    assert kv.no_decode == ["linformer(k=256)"]
    page = build_prediction_report(ests, hw)
    assert "only the last 1,024 tokens are kept (the window)" in _page_text(page)
    assert "No decode path, so no cache (n/a): linformer(k=256)" in _page_text(page)


def from_estimates_for_test(ests, hw):
    from attncost.reports.data import from_estimates

    return from_estimates(ests, hardware=hw)


def test_heatmap_says_at_which_width_the_crossover_holds():
    """The table's crossovers are taken at the data's d; the heatmap marks that row and says
    where else the variant is faster (MLA on an H100: at d = 8,192, not at 2,048)."""
    from attncost.costmodel.hardware import get_hardware

    h100 = get_hardware("h100")
    ests = [estimate(v, Shape(T=T, d=2048, heads=16), None, h100) for v in ("flash", "mla") for T in (512, 4096)]
    page = build_prediction_report(ests, h100, heatmap_variant="mla")
    text = _page_text(page)
    assert "The crossover table above holds at the width of the data, d = 2,048 (the marked row)" in text
    assert re.search(r"mla\(kv_lora_rank=\d+\) is faster than flash: at d = [\d,]+( to [\d,]+)?, at no T; "
                     r"at d = 8,192, for T = ", text), text[text.index("The heatmap compares"):][:600]
    heat = {f["id"]: f["figure"] for f in _figures(page)}["fig-heatmap"]["layout"]["yaxis"]
    assert [t for t in heat["ticktext"] if "▸" in t] == ["<b>2,048 ▸</b>"]


def test_the_page_says_its_figures_are_per_layer(example_page):
    summary = _page_text(example_page[:example_page.index('<section id="flops">')])
    assert "every figure is per attention layer" in summary
    assert "per layer: one attention layer" in summary


def test_fidelity_page_title_once_no_single_entry_contents():
    doc = fidelity_fixture()
    doc["settings"]["causal"] = True
    page = build_fidelity_report([doc], ["attncost fidelity (this run)"])
    h1 = re.search(r"<h1>(.*?)</h1>", page).group(1)
    assert h1 == "attncost fidelity report" and page.count("attncost fidelity report") == 2  # <title>, <h1>
    assert "Contents" not in _page_text(page)
    text = _page_text(page)
    assert "causal True" not in text and "; causal;" in text
    assert "The dotted one is its non-causal form" in " ".join(text.split())  # linformer: the non-causal mean
    fig = _figures(page)[0]["figure"]
    points = [t for t in fig["data"] if t.get("mode") == "markers" and isinstance(t["marker"].get("opacity"), list)]
    dominated = [(o, s) for t in points for o, s in zip(t["marker"]["opacity"], t["marker"]["size"]) if o < 1]
    assert dominated and all(o >= 0.7 and s >= 10 for o, s in dominated)
    labels = [a for a in fig["layout"]["annotations"] if a.get("bgcolor")]  # front labels: opaque, above lines
    assert {a["text"] for a in labels} >= {"flash", "sliding_window window=128"}
    assert not [t for t in fig["data"] if t.get("mode") == "text"]


# -- plotly.js: inline, or shared beside the pages ------------------------------------------------

def test_shared_plotly_js_is_written_once_beside_the_reports(tmp_path):
    from attncost.reports import PLOTLY_FILE, write_fidelity_report

    a = write_run_report([F.single_point_run()], tmp_path / "a.html", plotly_js="shared")
    js = tmp_path / PLOTLY_FILE
    assert js.read_text().lstrip("/*\n").startswith("plotly.js v") or "plotly.js v" in js.read_text()[:200]
    first = js.stat()
    b = write_fidelity_report([fidelity_fixture()], tmp_path / "b.html", plotly_js="shared")
    assert js.stat().st_mtime_ns == first.st_mtime_ns and js.stat().st_ino == first.st_ino  # not rewritten
    for page in (a.read_text(), b.read_text()):
        assert page.count(f'<script src="{PLOTLY_FILE}"></script>') == 1
        assert "plotly.js v" not in page and len(page) < 500_000
        assert "script-src &#x27;self&#x27; &#x27;unsafe-inline&#x27;" in page
        assert "connect-src &#x27;none&#x27;" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html", "b.html", PLOTLY_FILE]
    inline = write_run_report([F.single_point_run()], tmp_path / "c.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", inline) and inline.count("plotly.js v") == 1


def test_shared_plotly_js_never_replaces_another_file(tmp_path):
    from attncost.reports import PLOTLY_FILE

    (tmp_path / PLOTLY_FILE).write_text("my own script")
    with pytest.raises(FileExistsError, match="is not plotly.js"):
        write_run_report([F.single_point_run()], tmp_path / "a.html", plotly_js="shared")
    assert (tmp_path / PLOTLY_FILE).read_text() == "my own script" and not (tmp_path / "a.html").exists()
    with pytest.raises(ValueError, match="plotly_js"):
        build_run_report([F.single_point_run()], plotly_js="cdn")


def test_cli_plotly_js_flag(tmp_path):
    from attncost.reports import PLOTLY_FILE

    run_file = tmp_path / "run.json"
    F.single_point_run().save(run_file)
    out = tmp_path / "site"
    res = runner.invoke(app, ["report", str(run_file), "-o", str(out / "r.html"), "--plotly-js", "shared"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["predict", "--d", "512", "--T", "1024", "--variants", "flash,mha", "--html",
                              str(out / "p.html"), "--plotly-js", "shared"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["p.html", PLOTLY_FILE, "r.html"]
    assert f'<script src="{PLOTLY_FILE}">' in (out / "p.html").read_text()
    for args, words in ((["report", str(run_file), "-o", str(tmp_path / "x.html"), "--plotly-js", "cdn"],
                         "--plotly-js must be 'inline' or 'shared', not 'cdn'"),
                        (["predict", "--d", "512", "--T", "1024", "--plotly-js", "shared"],
                         "--plotly-js applies only with --html"),
                        (["fidelity", "--T", "64", "--plotly-js", "shared"], "--plotly-js applies only with --html")):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and words in res.output, (args, res.output)


def test_ceiling_of_a_dtype_the_profile_lacks_falls_back():
    """An fp8 run reported on a profile without fp8 tensor cores (the A100) gets the general
    ceiling rule, not the profile's HardwareError; fitted is Hardware.calibrated."""
    from attncost.costmodel.hardware import get_hardware
    from attncost.reports.hardware import hardware_info

    a100 = get_hardware("a100")
    info = hardware_info(a100)
    assert info.peak("fp8") == a100.peak_flops["bf16"]
    assert info.fitted is a100.calibrated is False and hardware_info(get_hardware("h100")).fitted is True


# -- which profile, and whether it was fitted ---------------------------------------------------

def test_the_summary_says_whether_the_profile_is_calibrated(example_page):
    """A prediction on a datasheet profile says so at the top of the page; a fitted one does not;
    a run's summary names the profile its predictions used."""
    from attncost.costmodel.hardware import get_hardware
    from attncost.reports.data import from_estimates
    from attncost.reports.page import summary_html

    for name, says in (("a100", True), ("h100", False)):
        hw = get_hardware(name)
        data = from_estimates([estimate("flash", Shape(T=1024, d=1024, heads=8), None, hw)], hardware=hw)
        assert ("datasheet peaks, not calibrated" in summary_html(data)) is says, name
    text = " ".join(_page_text(example_page[:example_page.index('<section id="flops">')]).split())
    assert "predicted on calibrated-amd-epyc" in text and "not calibrated" not in text


def test_environment_names_each_field_once(example_page):
    env = _page_text(example_page[example_page.index('<section id="environment">'):])
    assert "sdpa backend" not in env and env.count("SDPA backends that ran") == 2  # one per run
    assert "SDPA backend asked for" in env


def test_model_error_within_its_shape():
    """Errors of -20 %, -10 % and +8 % at one shape are -11 %, 0 and +20 % against its median, per point,
    per variant and in the summary."""
    from attncost.costmodel.results import Environment, Point, Run, Timing
    from attncost.reports.data import error_by_series, error_rows, within_shape

    pts = [Point(variant=v, shape=Shape(T=512, d=256, heads=4), predicted_time_s=p,
                 timing=Timing(median_s=1e-3, p10_s=1e-3, p90_s=1e-3, repetitions=5))
           for v, p in (("flash", 0.8e-3), ("gqa", 0.9e-3), ("mqa", 1.08e-3))]
    run = Run(environment=Environment(device="cpu"), points=pts)
    data = from_runs([run], ["run.json"])
    got = {r.variant: w for (s, r, *_), w in zip(error_rows(data), within_shape(error_rows(data)))}
    assert got == pytest.approx({"flash": 0.8 / 0.9 - 1, "gqa": 0.0, "mqa": 1.08 / 0.9 - 1})
    assert {s.variant: w for s, *_, w in error_by_series(data)} == pytest.approx(got)
    page = build_run_report([run], ["run.json"])
    assert "median within its shape" in page and "+20%" in page
    assert "a point&#x27;s median |error| is 11%" in page
