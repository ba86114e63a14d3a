"""`attncost pick`: the sweep, its Pareto front, constraints, fidelity interpolation and the CLI."""

import csv
import json
import math
import random

import pytest
from typer.testing import CliRunner

import attncost.cli.pick  # noqa: F401  (registers the command on the app)
from attncost.cli.main import app
from attncost.cli.pick import SIZE_UNITS, TIME_UNITS, parse_amount
from attncost.costmodel.fidelity_doc import check_fidelity
from attncost.costmodel.hardware import get_hardware
from attncost.costmodel.pick import (CONSTRAINTS, Constraints, FidelityTable, dominates, objectives, pareto_front,
                                     pick, sweep_grid, variant_grid)
from attncost.costmodel.shape import Shape

runner = CliRunner()
HW = get_hardware("h100")
SMALL = Shape(T=1024, d=256, heads=4)
ISSUE = ("pick", "--d", "2048", "--heads", "16", "--T", "32768", "--hardware", "h100", "--max-kv", "64MiB")


def run(*args):
    return runner.invoke(app, list(args))


def fid_point(variant, T, params, cosine, rel, heads=4, inputs="random", causal=True):
    shape = {"T": T, "d": 256, "heads": heads, "causal": causal, "dtype": "fp32"}
    return {"variant": variant, "label": variant, "status": "ok", "params": params, "T": T, "heads": heads,
            "inputs": inputs, "causal": causal, "shape": shape, "cosine_output": cosine, "rel_error_output": rel}


def fidelity_doc():
    """Windows 128 and 512 at T 256 and 1024 (two input kinds at T 1024), gqa by group size, linformer
    (not causal), performer features 16 to 256."""
    pts = [fid_point("sliding_window", 256, {"window": 128}, 0.9, 0.3),
           fid_point("sliding_window", 1024, {"window": 128}, 0.7, 0.6),
           fid_point("sliding_window", 1024, {"window": 128}, 0.6, 0.7, inputs="structured"),
           fid_point("sliding_window", 256, {"window": 512}, 1.0, 0.0),
           fid_point("sliding_window", 1024, {"window": 512}, 0.9, 0.2),
           fid_point("gqa", 1024, {"kv_heads": 2}, 0.8, 0.4),
           fid_point("mqa", 1024, {}, 0.5, 0.8),
           fid_point("linformer", 1024, {"k": 64}, 0.4, 0.9, causal=False),
           fid_point("linformer", 1024, {"k": 256}, 0.6, 0.7, causal=False)]
    pts += [fid_point("performer", 1024, {"features": m}, 0.3 + 0.1 * i, 1.0 - 0.1 * i)
            for i, m in enumerate((16, 32, 64, 128, 256))]
    return check_fidelity({"schema": "attncost-fidelity", "schema_version": 1, "points": pts})


@pytest.fixture(scope="module")
def fid_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fid") / "fidelity.json"
    path.write_text(fidelity_doc().model_dump_json(by_alias=True))
    return path


def brute_front(objs):
    return {i for i, o in enumerate(objs) if not any(dominates(q, o) for j, q in enumerate(objs) if j != i)}


def test_pareto_front_is_the_brute_force_one_with_ties():
    rng = random.Random(1)
    for n, dims in ((60, 2), (80, 3), (40, 3)):
        objs = [tuple(float(rng.randint(0, 6)) for _ in range(dims)) for _ in range(n)]
        assert set(pareto_front(objs)) == brute_front(objs)


@pytest.mark.parametrize("with_fidelity", [False, True])
def test_front_of_a_small_sweep_is_correct_by_brute_force(with_fidelity):
    c = Constraints(max_time=5e-4) if not with_fidelity else Constraints(min_cosine=0.5)
    r = pick(SMALL, HW, c, variants=("flash", "gqa", "mqa", "sliding_window", "linformer", "performer"),
             fidelity=fidelity_doc() if with_fidelity else None)
    feasible = r.feasible
    objs = [objectives(r.points[i], r.objective) for i in feasible]
    assert {feasible[i] for i in brute_front(objs)} == set(r.front)
    assert r.front and all(r.points[i].on_front for i in r.front)
    times = [r.points[i].time_s for i in r.front]
    assert times == sorted(times)  # best first by time


def test_every_front_point_meets_every_constraint():
    c = Constraints(max_time=2e-2, max_memory=2 * 2**30, max_kv=64 * 2**20, min_cosine=0.65, max_rel_error=0.75)
    r = pick(Shape(T=1024, d=256, heads=4), HW, c, fidelity=fidelity_doc())
    assert r.front
    for i in r.front:
        p = r.points[i]
        assert p.time_s <= c.max_time and p.memory_bytes <= c.max_memory and p.kv_bytes <= c.max_kv
        assert p.cosine >= c.min_cosine and p.rel_error <= c.max_rel_error
    broken = [p for p in r.points if p.broken]
    assert r.excluded == {n: sum(n in p.broken for p in broken) for n in CONSTRAINTS}
    assert any(p.fidelity.method == "unknown" and "min_cosine" in p.broken for p in r.points)


def test_fidelity_is_interpolated_in_log_T_and_parameter():
    table = FidelityTable(fidelity_doc(), causal=True)
    look = lambda v, p, T=1024, heads=4: table.lookup(v, p, Shape(T=T, d=256 * heads // 4, heads=heads))  # noqa: E731
    assert look("sliding_window", {"window": 128}).cosine == 0.6  # the worst input kind
    assert look("sliding_window", {"window": 128}).method == "measured"
    mid = look("sliding_window", {"window": 256})  # halfway in log window between 0.6 and 0.9
    assert mid.method == "interpolated" and mid.cosine == pytest.approx(0.75)
    assert look("sliding_window", {"window": 128}, T=512).cosine == pytest.approx((0.9 + 0.6) / 2)
    held = look("sliding_window", {"window": 128}, T=8192)
    assert held.held_T == 1024 and held.cosine == 0.6
    assert look("sliding_window", {"window": 2048}, T=4096).method == "unknown"
    assert look("sliding_window", {"window": 4096}, T=4096).method == "exact"
    assert look("mqa", {}, T=1024, heads=2).cosine == 0.8  # group size 2: gqa's kv_heads=2 of 4 heads
    assert look("performer", {"features": 8}).method == "unknown"
    assert look("mla", {}).reason and look("flash", {}).cosine == 1.0
    non_causal = FidelityTable(fidelity_doc(), causal=False)  # linformer was measured non-causal, as it runs
    assert non_causal.lookup("linformer", {"k": 128}, Shape(T=1024, d=256, heads=4, causal=False)).cosine == \
        pytest.approx(0.5)


def test_grid_follows_the_shape():
    s = Shape(T=32768, d=2048, heads=16)
    assert [p["kv_heads"] for p in variant_grid("gqa", s)] == [2, 4, 8]
    assert [p["window"] for p in variant_grid("sliding_window", s)] == [128 * 2**i for i in range(9)]
    assert max(p["k"] for p in variant_grid("linformer", s)) == 32768
    assert {p["kv_lora_rank"] for p in variant_grid("mla", s)} == {128, 256, 512, 1024}
    assert all(p["k"] < 32768 for p in variant_grid("dsa", s))
    assert variant_grid("sliding_window", Shape(T=100, d=64, heads=4)) == [{"window": 100}]
    assert len(sweep_grid(s)) > 50


def test_sizes_and_times_parse_binary_and_decimal():
    assert parse_amount("64MiB", SIZE_UNITS, "--max-kv", "") == 64 * 2**20
    assert parse_amount("8GiB", SIZE_UNITS, "--max-kv", "") == 8 * 2**30
    assert parse_amount("1.5GB", SIZE_UNITS, "--max-kv", "") == 1.5e9
    assert parse_amount("2ms", TIME_UNITS, "--max-time", "") == pytest.approx(2e-3)
    assert parse_amount("500us", TIME_UNITS, "--max-time", "") == pytest.approx(5e-4)
    assert parse_amount("0.9s", TIME_UNITS, "--max-time", "") == pytest.approx(0.9)


def test_the_issue_check_names_the_variants_that_fit():
    r = run(*ISSUE)
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "mqa" in out and "window=128" in out  # on the front
    assert "gqa: 2 of 3 points fit (kv_heads 2, 4)" in out
    assert "mla: 6 of 8 points fit (kv_lora_rank 128, 256, 512" in out
    assert "flash: excluded by --max-kv" in out
    assert "fidelity: unconstrained" in out


def test_points_that_tie_share_one_row_of_the_front():
    """msla's decode at long context is all host time: its latents change neither time nor memory, and
    its five points tie. The front keeps every one of them (JSON lists each), and shows them as one row."""
    from attncost.reports.pick_figure import tied_params_text

    shape = Shape(T=131072, d=2048, heads=16, batch=8, phase="decode")
    result = pick(shape, HW, Constraints(max_kv=2 * 2**30), variants=["sliding_window", "msla"])
    rows = result.front_rows()
    assert [[result.points[i].variant for i in r] for r in rows] == [["sliding_window"], ["msla"] * 5]
    msla = [result.points[i] for i in rows[1]]
    assert len({objectives(p, None) for p in msla}) == 1 and sorted(rows[1]) == sorted(result.front[1:])
    assert tied_params_text(msla) == "latents=32, 64, 128, 256 or 512"
    r = run("pick", "--d", "2048", "--heads", "16", "--T", "128k", "--phase", "decode", "--batch", "8",
            "--max-kv", "2GiB", "--variants", "sliding_window,msla")
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "latents=32, 64, 128, 256 or 512" in out and "latents=32 " not in out


def test_tied_parameters_read_as_one_phrase():
    from types import SimpleNamespace as P

    from attncost.reports.pick_figure import tied_params_text

    assert tied_params_text([P(params={"window": 128})]) == "window=128"
    one = [P(params={"kv_lora_rank": 128, "q_lora_rank": q}) for q in (0, 768, 1536)]
    assert tied_params_text(one) == "kv_lora_rank=128, q_lora_rank=0, 768 or 1536"
    two = [P(params={"kv_lora_rank": 128, "q_lora_rank": 0}), P(params={"kv_lora_rank": 256, "q_lora_rank": 768})]
    assert tied_params_text(two) == "kv_lora_rank=128, q_lora_rank=0 or kv_lora_rank=256, q_lora_rank=768"


@pytest.mark.parametrize("args, flag", [
    (("--max-time", "1ns"), "--max-time"),
    (("--max-kv", "-5MiB"), "--max-kv"),
    (("--max-memory", "0GB"), "--max-memory"),
    (("--max-kv", "12 parsecs"), "--max-kv"),
    (("--min-cosine", "0.9"), "--min-cosine"),  # no --fidelity
    (("--T", "512,1024"), "--T"),
])
def test_impossible_constraints_exit_2_with_one_sentence(args, flag):
    base = ["pick", "--d", "256", "--heads", "4", "--T", "512", "--variants", "flash,gqa"]
    r = run(*base, *args)
    assert r.exit_code == 2, r.output
    text = r.output.strip()
    assert flag in text and "Traceback" not in text and text.count("\n") == 0 and text.endswith(".")


@pytest.mark.parametrize("cosine", ["1.5", "0", "-0.2"])
def test_min_cosine_outside_0_1_exits_2(cosine, fid_file):
    r = run("pick", "--d", "256", "--heads", "4", "--T", "512", "--fidelity", str(fid_file), "--min-cosine", cosine)
    assert r.exit_code == 2 and "--min-cosine" in r.output


def test_json_and_csv_hold_every_point(tmp_path, fid_file):
    out = tmp_path / "pick.csv"
    r = run("pick", "--d", "256", "--heads", "4", "--T", "1024", "--fidelity", str(fid_file), "--min-cosine", "0.65",
            "--variants", "flash,gqa,mqa,sliding_window,performer,linformer", "--json", "--csv", str(out))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert {"shape", "hardware", "constraints", "fidelity", "excluded", "front", "off_front", "points"} <= set(doc)
    assert doc["constraints"] == {"min_cosine": 0.65} and doc["fidelity"]["objective"] == "cosine"
    assert all(p["on_front"] and not p["broken"] and p["cosine"] >= 0.65 for p in doc["front"])
    fields = {"variant", "params", "time_s", "memory_bytes", "kv_bytes", "cosine", "fidelity_method"}
    assert fields <= set(doc["front"][0])
    linformer = next(o for o in doc["off_front"] if o["variant"] == "linformer")
    assert "not causal" in linformer["why"]  # a causal sweep cannot use it
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == doc["points_total"] == len(doc["points"])
    assert {"variant", "params", "time_s", "on_front", "broken"} <= set(rows[0])


def test_html_page_has_the_scatter_and_the_front(tmp_path):
    from attncost.reports.pick_figure import build_pick_html

    r = pick(SMALL, HW, Constraints(max_kv=2**19), variants=("flash", "gqa", "sliding_window"))
    page = build_pick_html(r, "h100", plotly_js="shared")
    assert "Pareto front" in page and "pick-scatter" in page and "flash: excluded by --max-kv" in page
    assert math.isfinite(r.points[r.front[0]].time_s)
