"""`calibrate` saves its raw rows as they are measured: a failed fit or a run cut off keeps them."""

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
    assert counts == list(range(1, len(rows) + 1))
    out = tmp_path / "hw.json"
    C.calibrate("cpu", out, rows=rows)
    doc = saved(out)
    assert doc["complete"] is True and doc["rows"] == rows and out.exists()
