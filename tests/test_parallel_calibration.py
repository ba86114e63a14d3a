"""What `calibrate --nproc N` makes of its measurements (no ranks started): collective times made
non-decreasing in the size, a trimmed mean of bimodal times, the overlap and contention figures in the
profile's interconnect, and a window priced as the band-masked SDPA the distributed layer runs."""

import pytest

pytest.importorskip("torch")

from attncost.costmodel.hardware import get_hardware  # noqa: E402
from attncost.costmodel.parallel import Layout, predict_parallel  # noqa: E402
from attncost.costmodel.shape import Shape  # noqa: E402
from attncost.profiler.distributed import interconnect_from, non_decreasing, parallel_point, trimmed_mean  # noqa: E402


def test_collective_times_never_fall_with_the_size():
    points = [(1e3, 1.0), (4e3, 3.0), (16e3, 2.0), (64e3, 5.0), (256e3, 4.0), (1e6, 4.5)]
    assert non_decreasing(points) == [(1e3, 1.0), (4e3, 2.5), (16e3, 2.5), (64e3, 4.5), (256e3, 4.5), (1e6, 4.5)]
    assert non_decreasing([(1.0, 1.0), (2.0, 2.0)]) == [(1.0, 1.0), (2.0, 2.0)]


def test_trimmed_mean_drops_the_extremes():
    assert trimmed_mean([1.0] * 4 + [3.0] * 4 + [100.0, 0.0]) == pytest.approx(2.0)  # 10% cut each side
    assert trimmed_mean([2.0]) == 2.0


def test_interconnect_carries_the_measured_figures():
    law = [(1e3, 2e-3), (1e4, 1e-3), (1e5, 3e-3)]
    ic = interconnect_from({"p2p": law, "all_reduce": law, "all_to_all": law, "overlap": 0.25, "contention": 1.1},
                           2, "gloo")
    assert ic.overlap == 0.25 and ic.contention == 1.1
    assert ic.link("p2p").measured == [(1e3, 1.5e-3), (1e4, 1.5e-3), (1e5, 3e-3)]
    assert "after" in ic.source and "25%" in ic.source and "1.1x" in ic.source
    assert get_hardware("h100").interconnect.overlap == 1 and get_hardware("h100").interconnect.contention == 1


def test_a_window_is_priced_as_the_band_masked_kernel_it_runs():
    hw = get_hardware("cpu").model_copy(update={"interconnect": get_hardware("h100").interconnect})
    s = Shape(T=1024, d=256, heads=8, dtype="fp32")
    p = parallel_point("sliding_window", s, Layout(tp=2), hw, None, {"window": 128})
    assert p.params == {"window": 128, "kernel": "masked"}
    band = predict_parallel("sliding_window", s, Layout(tp=2), hw, {"window": 128})  # flex: the band alone
    assert p.predicted_time_s > band.time_s  # every T x T tile
    assert parallel_point("flash", s, Layout(tp=2), hw, "flash").params == {}
