"""crosscheck and fidelity fit the width they are given (COLUMNS): no cell cut ("…"), no line
longer than the width, every number whole; --wide shows every column; --csv beside --json."""

import csv
import re

import pytest
from typer.testing import CliRunner

from attncost.cli.main import app

runner = CliRunner()

COMMANDS = [
    ["crosscheck", "--variants", "flash,mla,dsa,sliding_window", "--T", "64"],
    ["crosscheck", "--variants", "flash,mla", "--T", "64,96"],
]


@pytest.mark.parametrize("columns", [80, 100])
@pytest.mark.parametrize("args", COMMANDS)
def test_fits_the_width(args, columns):
    result = runner.invoke(app, args, env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert max(len(line) for line in result.output.splitlines()) <= columns
    # numbers whole: no line of a cell starts with the tail of a FLOP count
    assert not re.search(r"^\s+[\d.]* ?[kMGTP]?FLOP\b", result.output, re.M)


def test_wide_shows_every_count():
    narrow = runner.invoke(app, COMMANDS[0], env={"COLUMNS": "100"}).output
    wide = runner.invoke(app, COMMANDS[0] + ["--wide"], env={"COLUMNS": "100"}).output
    assert "where they differ" not in narrow and "where they differ" in wide and "…" not in wide


def test_crosscheck_csv(tmp_path):
    path = tmp_path / "flops.csv"
    result = runner.invoke(app, ["crosscheck", "--variants", "flash,mla", "--T", "64", "--csv", str(path)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(path.open()))
    assert [r["variant"] for r in rows] == ["flash", "mla"] and rows[0]["shape.T"] == "64"


# -- fidelity and profile tables, from points made here (no torch, no measuring) -------------

def _fidelity_point(variant, label, T, inputs, cos, **kw):
    point = {"variant": variant, "label": label, "T": T, "inputs": inputs, "causal": True, "status": "ok",
             "kind": "approximate", "reason": "", "notes": [], "cosine_output": cos, "rel_error_output": 1.234e-7,
             "cosine_attention": 0.98765, "rel_error_attention": 0.123456, "baseline_cosine_output": 0.4567,
             "baseline_rel_error_output": 0.8901}
    return point | kw


FIDELITY_POINTS = [
    _fidelity_point("linformer", "linformer k=16 structured", 4096, "structured", 0.912345),
    _fidelity_point("topk", "topk k=16 hidden=64", 4096, "structured", 0.0278,
                    distill={"steps": 200, "final_loss": 1.63, "initial_loss": 1.89, "selector_top1": 0.0898,
                             "selector_top1_chance": 0.0741}),
    _fidelity_point("performer", "performer features=256", 1024, "random", 0.747),
]


def _lines(capture_output: str, columns: int) -> list:
    lines = capture_output.splitlines()
    assert "…" not in capture_output
    assert max(len(line) for line in lines) <= columns, [line for line in lines if len(line) > columns]
    return lines


@pytest.mark.parametrize("columns", [80, 100])
def test_fidelity_fits_the_width(columns, monkeypatch):
    from attncost.cli import fidelity as F

    monkeypatch.setenv("COLUMNS", str(columns))
    with F.console.capture() as cap:
        F.print_fidelity(FIDELITY_POINTS)
    out = cap.get()
    _lines(out, columns)
    for text in ("T 4,096 · structured inputs", "0.912", "1.23e-07", "0.988", "0.123", "uniform mean", "structured"):
        assert text in out, text
    assert "structu\n" not in out and "distill steps" not in out  # --wide only


def _timing(median_s: float, stable: bool):
    from attncost.costmodel.results import Timing

    return Timing(median_s=median_s, p10_s=median_s, p90_s=median_s, repetitions=5, stable=stable)


def _profile_points():
    from attncost.costmodel.results import Point
    from attncost.costmodel.shape import Shape

    points = []
    for d in (1024, 2048):
        for v, meas, pred, stable in (("flash", 0.0009271, 0.000290, False), ("mla", 0.0123456, 0.0111, True)):
            points.append(Point(variant=v, shape=Shape(T=32768, d=d, heads=16), backend="flash",
                                predicted_time_s=pred, peak_memory_bytes=123456789,
                                timing=_timing(meas, stable)))
    return points


@pytest.mark.parametrize("columns", [80, 100])
def test_profile_layer_table_fits_the_width(columns, monkeypatch, tmp_path):
    from types import SimpleNamespace

    from attncost.cli import profile as P

    monkeypatch.setenv("COLUMNS", str(columns))
    run = P.LayerRun(SimpleNamespace(wide=False, exec_mode="eager", ops=False, phase="prefill"))
    with P.console.capture() as cap:
        run.print(_profile_points(), tmp_path / "run.json")
    out = cap.get()
    _lines(out.replace(str(tmp_path), "P"), columns)  # the path alone may run over: it is never broken
    # an unstable median keeps two digits and its mark; a prediction beside a −69% error two digits
    assert "~0.93" in out and "0.9271" not in out and "0.29" in out and "−69%" in out and "2,048" in out


@pytest.mark.parametrize("columns", [80, 100])
def test_profile_model_table_fits_the_width(columns, monkeypatch, tmp_path):
    from types import SimpleNamespace

    from attncost.cli import profile as P
    from attncost.costmodel.results import Environment, Point, Run
    from attncost.costmodel.shape import Shape

    monkeypatch.setenv("COLUMNS", str(columns))
    points = [Point(variant=v, shape=Shape(T=2048, d=4096, heads=32), model="llama-3-8b", ttft_s=0.2071234,
                    predicted_ttft_s=0.0422, decode_s_per_token=0.01789, predicted_decode_s_per_token=0.0142,
                    decode_tokens_per_s=55.9, timing=_timing(0.2071234, True),
                    decode_timing=_timing(0.01789, False))
              for v in ("mla", "sliding_window", "mlp_attention")]
    run = Run(environment=Environment(device="cpu", hardware_profile="cpu"), points=points)
    with P.console.capture() as cap:
        P.ModelRun(SimpleNamespace(wide=False)).summary(run, tmp_path / "m.json")
    out = cap.get()
    _lines(out.replace(str(tmp_path), "P"), columns)
    assert "mlp_attention" in out and "207" in out and "~18" in out and "−80%" in out and "llama-3-8b" in out
