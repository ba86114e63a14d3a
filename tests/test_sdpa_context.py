"""A forced SDPA backend is set once around a timing: torch's context costs some 20 us of host time
per entry, which neither a calibration row nor a profiled layer may pay per call."""

import pytest

torch = pytest.importorskip("torch")

from attncost.profiler import calibrate as C  # noqa: E402
from attncost.profiler import device as D  # noqa: E402
from attncost.profiler.sweep import make_grid, run_sweep  # noqa: E402
from test_sweep import FAST, Builder, shapes  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def entries(monkeypatch):
    """How many times torch's own backend context is entered."""
    import torch.nn.attention as attention

    count = []
    real = attention.sdpa_kernel

    def counted(*args, **kw):
        count.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(attention, "sdpa_kernel", counted)
    return count


def test_a_context_inside_one_that_forces_the_same_backend_does_nothing(entries):
    with D.sdpa_context("math"):
        assert not torch.backends.cuda.flash_sdp_enabled()
        with D.sdpa_context("math"):
            pass
        with D.sdpa_context("flash"):  # another backend is forced, then the outer one back
            assert torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.math_sdp_enabled()
        assert torch.backends.cuda.math_sdp_enabled() and not torch.backends.cuda.flash_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled()
    assert len(entries) == 2
    with D.sdpa_context("math"):
        pass
    assert len(entries) == 3  # outside, it is entered again


def test_calibrate_forces_the_backend_once_per_row(entries):
    plan = C.Plan(mm={}, bmm=[], bmm_dtype="fp32", elems=[], vector_dtype="fp32", ops=(), host=(),
                  sdpa_decode=[(1, 2, 64, 16)], sdpa_backends=("math",), sdpa_dtype="fp32", budget_s=0.01)
    rows = [r for r in C.measure_rows("cpu", plan=plan) if r["op"] == "sdpa"]
    assert len(rows) == 1 and rows[0]["backend"] == "math"
    assert len(entries) == 1


def test_a_sweep_forces_the_backend_once(tmp_path, entries):
    run = run_sweep(tmp_path / "r.json", make_grid(["flash", "mha"], shapes((32, 64))), "cpu", "fp32", backend="math",
                    build_module=Builder(), count=False, measure_kwargs=FAST)
    assert all(p.status == "ok" and p.backend == "math" for p in run.points)
    assert len(entries) == 1
