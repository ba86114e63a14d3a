"""`calibrate` saves its raw rows as they are measured: a failed fit or a run cut off keeps them."""

import dataclasses
import json

import pytest

pytest.importorskip("torch")

from attncost.costmodel import fit  # noqa: E402
from attncost.profiler import calibrate as C  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_plan() -> C.Plan:
    grid = [(m, 16, n) for m in (1, 16) for n in (16, 32)]
    return C.Plan(mm={"fp32": grid}, bmm=[(2, 32, 16)], bmm_dtype="fp32", elems=[1024], vector_dtype="fp32",
                  ops=("copy",), softmax=[1024], sdpa=[(1, 2, 32, 16, True)], sdpa_backends=("math",),
                  sdpa_dtype="fp32", tiny_ops=20, budget_s=0.002, warmup=1)


def saved(out) -> dict:
    return json.loads(C.sidecar_path(out).read_text())


def test_a_failed_fit_keeps_every_row(tmp_path, monkeypatch):
    def broken_fit(*args, **kwargs):
        raise ValueError("the fit failed")

    monkeypatch.setattr(fit, "fit_profile", broken_fit)
    out = tmp_path / "hw.json"
    with pytest.raises(ValueError, match="the fit failed"):
        C.calibrate("cpu", out, plan=tiny_plan())
    doc = saved(out)
    assert doc["complete"] is True and doc["device"] and doc["method"]
    ops = [r["op"] for r in doc["rows"]]
    assert ops.count("mm") == 4 and {"bmm_qk", "bmm_pv", "softmax", "copy", "eager_tiny_op", "sdpa"} <= set(ops)
    assert not out.exists()  # no profile without a fit
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_run_cut_off_keeps_the_rows_measured_so_far(tmp_path):
    out = tmp_path / "hw.json"

    def stop_after_three(what, done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        C.calibrate("cpu", out, plan=tiny_plan(), progress=stop_after_three)
    doc = saved(out)
    assert doc["complete"] is False
    assert [r["op"] for r in doc["rows"]] == ["pace", "mm", "mm"]
    assert all(r["ms"] > 0 for r in doc["rows"])


def test_rows_are_handed_over_as_they_come_and_a_refit_writes_them_complete(tmp_path):
    counts = []
    rows = C.measure_rows("cpu", plan=tiny_plan(), on_row=lambda so_far: counts.append(len(so_far)))
    assert counts == sorted(set(counts)) and counts[0] == 1 and counts[-1] == len(rows)  # growing, step by step
    out = tmp_path / "hw.json"
    C.calibrate("cpu", out, rows=rows)
    doc = saved(out)
    assert doc["complete"] is True and doc["rows"] == rows and out.exists()


def test_each_row_keeps_its_fastest_pass(monkeypatch):
    """With ``passes``, every single-row step is timed again in each pass and keeps its least time, as a
    profiled point keeps its fastest round; the pace rows come first and last, once each."""
    times = {"mm a": [3.0, 1.0, 2.0], "mm b": [1.0, 5.0, 4.0]}
    calls: list = []

    def step(what):
        def run():
            calls.append(what)
            if what.startswith("pace:"):
                return {"op": "pace", "when": what.split()[-1], "ms": 1.0}
            return {"op": "mm", "which": what, "ms": times[what][sum(c == what for c in calls) - 1]}
        return run

    names = ["pace: first", "mm a", "mm b", "pace: last"]
    monkeypatch.setattr(C, "_steps", lambda plan, device: [(n, step(n)) for n in names])
    seen = []
    rows = C.measure_rows("cpu", plan=dataclasses.replace(tiny_plan(), passes=3),
                          progress=lambda what, done, total: seen.append((done, total)))
    assert calls == ["pace: first", "mm a", "mm b", "mm a", "mm b", "mm a", "mm b", "pace: last"]
    assert [(r["op"], r.get("which"), r["ms"]) for r in rows] == [
        ("pace", None, 1.0), ("mm", "mm a", 1.0), ("mm", "mm b", 1.0), ("pace", None, 1.0)]
    assert seen[-1] == (8, 8)
