"""The machine's pace: the reference workload timed at calibration and beside every measured point,
and `crosscheck --time` telling a drifted machine from a wrong model."""

import json

import pytest
from typer.testing import CliRunner

from attncost.cli.main import app
from attncost.costmodel.accuracy import PACE_TOLERANCE, pace_ratio, pace_summary, point_errors
from attncost.costmodel.fit import PACE_ROW, fit_profile
from attncost.costmodel.hardware import get_hardware
from attncost.costmodel.results import Environment, Point, Run, Timing
from attncost.costmodel.shape import Shape

CPU = get_hardware("cpu")


def _point(variant: str, T: int, measured: float, predicted: float, pace) -> Point:
    return Point(variant=variant, shape=Shape(T=T, d=256, heads=4), predicted_time_s=predicted, pace_s=pace,
                 timing=Timing(median_s=measured, p10_s=measured, p90_s=measured, repetitions=5))


def _run(points: list, pace_s=1e-3) -> Run:
    """A run whose embedded profile was calibrated at ``pace_s`` (a test fixture, not a measurement)."""
    return Run(environment=Environment(device="cpu"), points=points, hardware=CPU.model_copy(update={"pace_s": pace_s}))


def test_fit_takes_the_median_of_the_pace_rows_and_none_without_them():
    rows = [{"op": PACE_ROW, "when": "first", "ms": 1.0}, {"op": PACE_ROW, "when": "last", "ms": 1.2}]
    assert fit_profile(CPU, rows).pace_s == pytest.approx(1.1e-3)
    assert fit_profile(CPU, []).pace_s is None
    assert "pace" in fit_profile(CPU, rows).calibration


def test_pace_ratio_and_its_summary():
    # flash ran while the reference workload took 1.5x its calibration time, gqa at the calibration's pace
    run = _run([_point("flash", 512, 3e-3, 2e-3, 1.5e-3), _point("gqa", 512, 1e-3, 1.1e-3, 1e-3),
                _point("mqa", 512, 1e-3, 1e-3, None)])
    errors = point_errors(run)
    assert [pace_ratio(p, run.hardware) for p, *_ in errors] == [pytest.approx(1.5), pytest.approx(1.0), None]
    s = pace_summary(errors, run.hardware)
    assert s["points"] == 2 and s["off"] == 1 and s["tolerance"] == PACE_TOLERANCE
    assert (s["min"], s["median"], s["max"]) == (pytest.approx(1.0), pytest.approx(1.25), pytest.approx(1.5))
    assert pace_summary(errors, CPU) is None  # a profile that was never calibrated has no pace


def test_crosscheck_shows_each_points_pace_and_says_when_the_machine_drifted(tmp_path):
    path = tmp_path / "run.json"
    _run([_point("flash", 512, 3e-3, 2e-3, 1.5e-3), _point("gqa", 512, 1e-3, 1.1e-3, 1e-3)]).save(path)
    runner = CliRunner()
    r = runner.invoke(app, ["crosscheck", "--time", str(path)], env={"COLUMNS": "160"})
    assert "pace" in r.output and "1.50x" in r.output and "1.00x" in r.output
    assert "1 of 2 points beyond 10%" in r.output and "1.00x-1.50x" in r.output
    r = runner.invoke(app, ["crosscheck", "--time", str(path), "--json"])
    doc = json.loads(r.output)
    assert doc["pace"]["off"] == 1 and [p["pace_ratio"] for p in doc["points"]] == [pytest.approx(1.5), 1.0]
    quiet = tmp_path / "quiet.json"
    _run([_point("gqa", 512, 1e-3, 1.05e-3, 1.02e-3)]).save(quiet)
    r = runner.invoke(app, ["crosscheck", "--time", str(quiet)], env={"COLUMNS": "160"})
    assert "within 10% at every point" in r.output


def test_the_workload_is_fixed_and_timed():
    torch = pytest.importorskip("torch")
    from attncost.profiler.pace import pace_s, workload

    a, b = workload("cpu")(), workload("cpu")()
    assert a.shape == (128, 256) and torch.equal(a, b)  # the same data every time
    assert 0 < pace_s("cpu", budget_s=0.02) < 1.0


@pytest.mark.usefixtures("one_thread")
def test_sweeps_record_the_pace_beside_each_point(tmp_path):
    pytest.importorskip("torch")
    from test_sweep import Builder, shapes, sweep

    from attncost.profiler.sweep import make_grid

    for rounds in (1, 3):  # each point alone, and the points of a shape in interleaved rounds
        run = sweep(tmp_path / f"r{rounds}.json", make_grid(["flash", "mqa"], shapes((32,))), Builder(),
                    rounds=rounds, hardware=CPU)
        assert all(p.status == "ok" and 0 < p.pace_s < 1.0 for p in run.points)
        if rounds > 1:
            assert len({p.pace_s for p in run.points}) == 1  # the shape's rounds: one pace


def test_calibrate_says_when_the_pace_changed_during_the_calibration():
    from attncost.cli.calibrate import _pace

    rows = [{"op": PACE_ROW, "when": "first", "ms": 1.0}, {"op": PACE_ROW, "when": "last", "ms": 1.25}]
    assert "+25%" in _pace(rows) and "changed during the calibration" in _pace(rows)
    assert "changed" not in _pace([dict(rows[0]), dict(rows[1], ms=1.05)])
    assert _pace([]) == ""
