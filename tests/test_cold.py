"""Operands a layer's own traffic evicts between its calls (a CPU's caches): the kernels' held bytes,
the time term, its fit and its calibration rows."""

import pytest

from attncost.costmodel.analysis import analyse
from attncost.costmodel.estimate import estimate, estimate_many
from attncost.costmodel.fit import COLD_ROW, fit_cold, fit_profile
from attncost.costmodel.graph import Graph
from attncost.costmodel.hardware import get_hardware
from attncost.costmodel.shape import Shape
from attncost.costmodel.timing import predict

CPU = get_hardware("cpu")
LAW = dict(cold_from_bytes=4e6, cold_full_bytes=20e6, cold_latency_s=30e-6, cold_s_per_byte=20e-12)


def _layer(cache_elems: float) -> Graph:
    """x (input, 1 x 256) @ w (256 x 256, a weight), then a copy of a cache of ``cache_elems`` fp32."""
    g = Graph(itemsize=4)
    x, w, c = g.input("x", 256), g.weight("w", 256 * 256), g.cache("c", cache_elems)
    y = g.matmul("proj", x, w, m=1, k=256, n=256)
    g.elementwise("scaled", "mul", [y], elems=256)
    g.elementwise("copied", "copy", [c], elems=cache_elems)
    g.output("scaled")
    return g


def test_kernels_count_the_bytes_they_read_of_what_the_layer_holds():
    ks = {k.name: k for k in analyse(_layer(1000)).kernels}
    assert ks["proj"].held == 4 * (256 + 256 * 256)  # the input and the weight
    assert ks["scaled"].held == 0  # an activation, written in the layer
    assert ks["copied"].held == 4 * 1000  # the cache


def test_the_evicted_share_grows_linearly_with_the_layers_traffic_and_costs_its_kernels():
    hw = CPU.model_copy(update=LAW)
    for elems, share in ((1e5, 0.0), (1.5e6, 0.52), (3e6, 1.0)):  # the copy moves 8 bytes per element
        ks = analyse(_layer(elems)).kernels
        moved = sum(k.bytes for k in ks)
        assert min(1.0, max(0.0, (moved - 4e6) / 16e6)) == pytest.approx(share, abs=0.03)
        extra = predict(ks, hw, "fp32").time_s - predict(ks, CPU, "fp32").time_s
        held = sum(k.held for k in ks)
        expected = min(1.0, max(0.0, (moved - 4e6) / 16e6)) * (2 * 30e-6 + held * 20e-12)  # two kernels hold
        assert extra == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_the_fast_path_prices_the_term_as_estimate_does():
    hw = CPU.model_copy(update=LAW)
    for variant in ("flash", "mla", "dsa"):
        shapes = [Shape(T=T, d=320, heads=5, batch=b, phase="decode", dtype="fp32") for T in (96, 384, 1536, 4000)
                  for b in (1, 4)]
        fast = estimate_many(variant, shapes, None, hw)
        assert [e.time_s for e in fast] == [estimate(variant, s, None, hw).time_s for s in shapes]
    s = Shape(T=1536, d=320, heads=5, batch=4, phase="decode", dtype="fp32")
    assert estimate("dsa", s, None, hw).time_s > estimate("dsa", s, None, CPU).time_s


def _rows(small: dict, large: tuple) -> list:
    """Cold rows (a test fixture): the small product's ms after N MiB, the large one's hot and after 48."""
    rows = [{"op": COLD_ROW, "bytes": 1e6, "after_bytes": mb * 2**20, "ms": ms} for mb, ms in small.items()]
    return rows + [{"op": COLD_ROW, "bytes": 13e6, "after_bytes": mb * 2**20, "ms": ms} for mb, ms in zip((0, 48), large)]


def test_fit_cold_places_the_ramp_and_splits_the_whole_extra_into_latency_and_bytes():
    # the small product: 0.030 ms hot, +0.060 ms whole from 16 MiB, growing from 4 MiB (a third at 8 MiB)
    small = {0: 0.030, 4: 0.030, 8: 0.050, 12: 0.070, 16: 0.090, 32: 0.090, 48: 0.090}
    # the large: +0.300 ms whole: 12 MB more bytes for 0.240 ms more, 20 ps per byte; latency 60 - 20 us
    law = fit_cold(_rows(small, (0.400, 0.700)))
    assert (law["cold_from_bytes"], law["cold_full_bytes"]) == (4 * 2**20, 16 * 2**20)
    assert law["cold_s_per_byte"] == pytest.approx(20e-12) and law["cold_latency_s"] == pytest.approx(40e-6)
    assert fit_cold(_rows({0: 0.030, 48: 0.031}, (0.4, 0.401))) == {}  # no eviction worth a law
    assert fit_cold([]) == {}
    fitted = fit_profile(CPU, _rows(small, (0.400, 0.700)))
    assert fitted.cold_s_per_byte == pytest.approx(20e-12) and "evicted" in fitted.calibration


def test_calibrate_measures_the_cold_rows():
    pytest.importorskip("torch")
    from attncost.profiler import cold

    rows = cold.cold_rows(calls=3)
    assert {r["op"] for r in rows} == {COLD_ROW}
    assert sorted({r["after_bytes"] >> 20 for r in rows}) == list(cold.AFTER_MB)
    assert all(r["ms"] > 0 and r["bytes"] in (4 * 320 * 768, 4 * 768 * 4096) for r in rows)
