"""The time model's error on a run, and crossovers predicted vs measured (`crosscheck --time`)."""

import json
import re

import pytest
from typer.testing import CliRunner

from attncost.cli.main import app
from attncost.costmodel.accuracy import (by_variant, crossings, crossover_table, point_errors, quantile, summary,
                                         within_shape, within_summary)
from attncost.costmodel.results import Environment, Point, Run, Timing
from attncost.costmodel.shape import Shape


def run_with(times: dict) -> Run:
    """times: {(variant, T): (measured_s, predicted_s)}; a test fixture, not a measurement."""
    pts = []
    for (v, T), (m, p) in times.items():
        pts.append(Point(variant=v, shape=Shape(T=T, d=256, heads=4), predicted_time_s=p,
                         timing=Timing(median_s=m, p10_s=m, p90_s=m, repetitions=5)))
    pts.append(Point(variant="mha", shape=Shape(T=4096, d=256, heads=4), status="oom", message="out of memory"))
    return Run(environment=Environment(device="cpu"), points=pts)


# flash ~ T^2, lin ~ T: they cross between T=512 and 1024 (measured) and at 512..1024 (predicted)
TIMES = {("flash", 256): (1.0, 1.1), ("flash", 512): (4.0, 4.2), ("flash", 1024): (16.0, 15.0),
         ("linformer", 256): (4.0, 3.6), ("linformer", 512): (6.0, 6.3), ("linformer", 1024): (8.0, 8.8)}


def test_point_errors_and_summary():
    errors = point_errors(run_with(TIMES))
    assert len(errors) == 6  # the OOM point has no measurement
    rel = sorted(round(e[-1], 4) for e in errors)
    assert rel == sorted(round(p / m - 1, 4) for m, p in TIMES.values())
    s = summary(errors)
    # |errors| sorted: .05 .05 .0625 .1 .1 .1 -> median (.0625 + .1) / 2
    assert s["points"] == 6 and s["median"] == pytest.approx(0.08125)
    assert by_variant(errors)["linformer"]["bias"] == pytest.approx(0.05)
    assert quantile([1.0, 2.0, 3.0], 0.5) == 2.0 and quantile([5.0], 0.9) == 5.0


def test_error_within_its_shape():
    """Errors of -20 %, -10 % and +8 % at one shape are -11 %, 0 and +20 % against its median; a shape of
    two points is not judged."""
    run = run_with({("flash", 512): (1.0, 0.8), ("gqa", 512): (1.0, 0.9), ("topk", 512): (1.0, 1.08),
                    ("flash", 1024): (1.0, 0.5), ("gqa", 1024): (1.0, 0.6)})
    errors = point_errors(run)
    got = {(p.variant, p.shape.T): w for (p, *_), w in zip(errors, within_shape(errors))}
    assert got[("flash", 512)] == pytest.approx(0.8 / 0.9 - 1) and got[("gqa", 512)] == pytest.approx(0.0)
    assert got[("topk", 512)] == pytest.approx(1.08 / 0.9 - 1)
    assert got[("flash", 1024)] is None and got[("gqa", 1024)] is None
    assert within_summary(within_shape(errors))["points"] == 3
    per = by_variant(errors, within_shape(errors))
    assert per["topk"]["within_bias"] == pytest.approx(0.2) and per["flash"]["within_bias"] == pytest.approx(-1 / 9)


def test_cli_shows_the_error_within_each_shape(tmp_path):
    path = tmp_path / "run.json"
    run_with({("flash", 512): (1.0, 0.8), ("gqa", 512): (1.0, 0.9), ("topk", 512): (1.0, 1.08)}).save(path)
    r = CliRunner().invoke(app, ["crosscheck", "--time", str(path)], env={"COLUMNS": "120"})
    assert "within its shape: median |error| 11%" in r.output and "bias in its shape" in r.output
    data = json.loads(CliRunner().invoke(app, ["crosscheck", "--time", str(path), "--json"]).output)
    assert data["within_shape"]["median"] == pytest.approx(1 / 9)
    assert sorted(round(p["error_within_shape"], 4) for p in data["points"]) == [-0.1111, 0.0, 0.2]


def test_crossings_interpolate_in_log_log():
    # a = T, b = T^2 / 1024: equal at T = 1024; a starts above and goes below
    a = [(T, float(T)) for T in (256, 512, 2048)]
    b = [(T, T * T / 1024) for T in (256, 512, 2048)]
    ((T, v, direction),) = crossings(a, b)
    assert T == pytest.approx(1024) and v == pytest.approx(1024) and direction == "below"


def test_crossover_table_measured_and_predicted():
    rows = {r["variant"]: r for r in crossover_table(run_with(TIMES), baselines=("flash",))}
    r = rows["linformer"]
    assert 512 < r["measured_T"] < 1024 and 512 < r["predicted_T"] < 1024
    assert r["ratio"] >= 1.0


def test_cli_time_check_exit_codes(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    run_with(TIMES).save(good)
    run_with({k: (m, 2 * m) for k, (m, _) in TIMES.items()}).save(bad)  # 100 % off
    runner = CliRunner()
    r = runner.invoke(app, ["crosscheck", "--time", str(good)])
    assert r.exit_code == 0, r.output
    assert "median |error| 8.1%" in r.output
    r = runner.invoke(app, ["crosscheck", "--time", str(bad), "--json"])
    assert r.exit_code == 1
    data = json.loads(r.output)
    assert data["summary"]["median"] == pytest.approx(1.0) and not data["ok"]
    r = runner.invoke(app, ["crosscheck", "--time", str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "--time" in r.output and "Traceback" not in r.output
    (tmp_path / "junk.json").write_text("[1, 2]")
    r = runner.invoke(app, ["crosscheck", "--time", str(tmp_path / "junk.json")])
    assert r.exit_code == 2 and "not an attncost results file" in r.output


def test_profile_prints_the_error_within_its_shape(tmp_path):
    """A real profile of three variants at one tiny shape (seconds): its summary line gives the median
    error within the shape beside the plain one."""
    out = tmp_path / "run.json"
    r = CliRunner().invoke(app, ["profile", "--device", "cpu", "--d", "64", "--heads", "2", "--T", "32",
                                 "--variants", "flash,gqa,mha", "--budget", "0.02", "--no-count", "--out", str(out)],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert re.search(r"median \|error\| \S+ over 3 points, \S+ within its shape", r.output), r.output
