"""Operands a layer's own traffic evicts between its calls (a CPU's caches): the kernels' held bytes,
the time term, its fit and its calibration rows."""

import statistics

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


def _reads(kind: str) -> Graph:
    """One kernel reading a held table of 1e6 fp32 (a weight) as ``kind`` does: a matrix-vector product,
    a product of 4 rows, a gather of rows by index, a copy; and a cache copy that moves 40 MB."""
    g = Graph(itemsize=4)
    w = g.weight("w", 1000 * 1000)
    if kind in ("gemv", "gemm"):
        x = g.input("x", (1 if kind == "gemv" else 4) * 1000)
        g.matmul("read", x, w, m=1 if kind == "gemv" else 4, k=1000, n=1000)
    elif kind == "gather":
        g.elementwise("read", "gather", [w, g.input("i", 1000)], elems=1000 * 1000)
    else:
        g.elementwise("read", "copy", [w], elems=1000 * 1000)
    g.elementwise("copied", "copy", [g.cache("c", 5e6)], elems=5e6)
    return g


def test_a_kernel_pays_the_cold_rate_of_how_it_reads_its_operands():
    """Wholly evicted, each kernel fetches what it holds anew at ``cold_latency_s`` + its bytes at the
    rate of its access: a matmul of several rows and a gather at theirs, a stream (a matrix-vector
    product, a copy) at ``cold_s_per_byte``; without a rate of their own, all stream."""
    access = {"matmul": 90e-12, "index": 150e-12}
    hw = CPU.model_copy(update={**LAW, "cold_access_s_per_byte": access})
    streamed = CPU.model_copy(update=LAW)
    for kind, rate in (("gemv", 20e-12), ("gemm", 90e-12), ("gather", 150e-12), ("copy", 20e-12)):
        ks = analyse(_reads(kind)).kernels
        read = next(k for k in ks if k.name == "read")
        assert read.held >= 4e6
        extra = predict(ks, hw, "fp32").time_s - predict(ks, CPU, "fp32").time_s
        cache = next(k for k in ks if k.name == "copied").held
        assert extra == pytest.approx(2 * 30e-6 + read.held * rate + cache * 20e-12, rel=1e-9), kind
        plain = predict(ks, streamed, "fp32").time_s - predict(ks, CPU, "fp32").time_s
        assert plain == pytest.approx(2 * 30e-6 + (read.held + cache) * 20e-12, rel=1e-9), kind


def test_the_fast_path_prices_the_term_as_estimate_does():
    slow = CPU.matmul["fp32"].model_copy(update={"gemv_mem_eff": 0.3, "cache_bytes": 4e6, "dram_eff": 0.06})
    hw = CPU.model_copy(update={**LAW, "cold_access_s_per_byte": {"matmul": 90e-12, "index": 150e-12},
                                "matmul": {**CPU.matmul, "fp32": slow}})
    for variant in ("flash", "mla", "dsa", "mha"):
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
    # a product of 4 rows by the large matrix: +0.940 ms after the most, 40 us of it the latency
    # (75 ps per byte of 12 MB); a gather of its rows: +0.040 ms, less than the latency (0)
    accessed = [{"op": COLD_ROW, "bytes": 12e6, "after_bytes": mb * 2**20, "ms": ms, "access": access}
                for access, times in (("matmul", (2.0, 2.94)), ("index", (1.0, 1.03)))
                for mb, ms in zip((0, 48), times)]
    law = fit_cold(_rows(small, (0.400, 0.700)) + accessed)
    assert law["cold_access_s_per_byte"] == pytest.approx({"matmul": 75e-12, "index": 0.0})
    assert law["cold_s_per_byte"] == pytest.approx(20e-12) and law["cold_latency_s"] == pytest.approx(40e-6)
    fitted = fit_profile(CPU, _rows(small, (0.4, 0.7)) + accessed)
    assert fitted.cold_access_s_per_byte["matmul"] == pytest.approx(75e-12)


def test_calibrate_measures_the_cold_rows():
    pytest.importorskip("torch")
    from attncost.profiler import cold

    rows = cold.cold_rows(calls=3)
    assert {r["op"] for r in rows} == {COLD_ROW}
    assert sorted({r["after_bytes"] >> 20 for r in rows}) == list(cold.AFTER_MB)
    assert all(r["ms"] > 0 and r["bytes"] in (4 * 320 * 768, 4 * 768 * 4096) for r in rows)
    accessed = {(r["access"], r["after_bytes"] >> 20) for r in rows if "access" in r}
    assert accessed == {(a, mb) for a in ("matmul", "index") for mb in (0, cold.AFTER_MB[-1])}


def test_calibrate_says_what_each_access_pays_fetching_anew():
    from attncost.cli.calibrate import _cold

    hw = CPU.model_copy(update={**LAW, "cold_access_s_per_byte": {"matmul": 80e-12, "index": 100e-12}})
    assert _cold(hw).endswith("30 us + 20 ps per byte of them (80 ps in a matmul of several rows, 100 ps in a "
                              "gather by index)")
    assert _cold(CPU.model_copy(update=LAW)).endswith("20 ps per byte of them")


def test_the_cold_rows_are_timed_in_interleaved_rounds(monkeypatch):
    """Each row gets its calls in every round, the rows in turn, so that a drift of the machine's pace
    moves them alike; a row's time is the median of all its calls."""
    pytest.importorskip("torch")
    from attncost.profiler import cold

    visits = []

    def fake_times(op, before, calls, warmup=5):
        visits.append(before)
        return [1e-3 * len(visits)] * calls

    monkeypatch.setattr(cold, "traffic", lambda mb: mb)  # the stub stands for the traffic of mb MB
    monkeypatch.setattr(cold, "call_times", fake_times)
    rows = cold.cold_rows(calls=8, rounds=4)
    points = len(rows)
    assert len(visits) == 4 * points and visits[:points] * 4 == visits  # the same order, round after round
    first = rows[0]  # visited 1st, then points + 1, 2 * points + 1, 3 * points + 1: median of those
    assert first["ms"] == pytest.approx(statistics.median([1 + i * points for i in range(4)]))
