"""The time model against the H100 microbenchmarks (costmodel/data/h100-microbench-2026-11-22.json,
do_bench device times), its decomposition and the eager launch queue. The fit: test_fit.py."""

import json
import math

import pytest

from attncost.costmodel import analysis
from attncost.costmodel.graph import Graph
from attncost.costmodel.fit import measured_s, predict_row, row_errors, summarize
from attncost.costmodel.hardware import H100_MICROBENCH, HardwareError, TopkPaths, get_hardware
from attncost.costmodel.timing import (KernelTime, RowLengths, TimeEstimate, cpu_query_block, item_slowdown,
                                       law_kind, predict, row_parts, topk_path_s)

ROWS = json.loads(H100_MICROBENCH.read_text())["rows"]
H100 = get_hardware("h100")


def _kernels(g: Graph) -> list:
    return analysis.analyse(g).kernels if hasattr(analysis, "analyse") else analysis.kernels(g)


def mm_kernels(M, K, N, itemsize=2, batch=1):
    g = Graph(itemsize)
    a = g.input("a", batch * M * K)
    w = g.input("w", batch * K * N)
    g.output(g.matmul("mm", a, w, batch=batch, m=M, k=K, n=N))
    return _kernels(g)


def sdpa_kernels(B, H, T, dh, causal, itemsize=2):
    g = Graph(itemsize)
    q, k, v = (g.input(n, B * H * T * dh) for n in "qkv")
    frac = 0.5 if causal else 1.0
    s = g.matmul("scores", q, k, batch=B * H, m=T, k=dh, n=T, kernel="attention", fraction=frac)
    p = g.elementwise("softmax", "softmax", (s,), elems=B * H * T * T * frac, kernel="attention")
    g.output(g.matmul("av", p, v, batch=B * H, m=T, k=T, n=dh, kernel="attention", fraction=frac))
    return _kernels(g)


def copy_kernels(elems, itemsize=2):
    g = Graph(itemsize)
    x = g.input("x", elems)
    g.output(g.elementwise("copy", "copy", (x,), elems=elems))
    return _kernels(g)


def row(op, **kw):
    return next(r for r in ROWS if r["op"] == op and all(r.get(k) == v for k, v in kw.items()))


def rel(pred, meas):
    return (pred - meas) / meas


# -- single kernels against measurements -----------------------------------------------------------

def test_big_matmul_is_compute_bound_and_close():
    r = row("mm", dtype="bfloat16", M=4096, K=4096, N=4096)
    est = predict(mm_kernels(4096, 4096, 4096), H100, "bf16", mode="graph")
    assert est.bound == "compute"
    err = rel(est.time_s, measured_s(r))
    assert abs(err) <= 0.15, (
        f"4096^3 bf16: predicted {est.time_s * 1e3:.4f} ms, measured {r['ms']:.4f} ms ({err:+.1%})")


def test_8192_cubed_matches_design_measurement():
    """DESIGN.md "Hardware": matmul 8192^3 bf16 measured at ~770 TFLOP/s on this H100 (not a row of
    the microbenchmark file, whose grid stops at 4096 x 4096 x 16384)."""
    est = predict(mm_kernels(8192, 8192, 8192), H100, "bf16", mode="graph")
    tflops = 2 * 8192**3 / est.time_s / 1e12
    assert est.bound == "compute"
    assert abs(tflops / 770 - 1) <= 0.15, f"8192^3 bf16 predicted at {tflops:.0f} TFLOP/s vs ~770 measured"


def test_one_row_matmul_is_not_compute_bound():
    r = row("mm", dtype="bfloat16", M=1, K=4096, N=4096)
    dev = predict(mm_kernels(1, 4096, 4096), H100, "bf16", mode="graph")
    assert dev.bound in ("memory", "overhead")
    assert abs(rel(dev.time_s, measured_s(r))) <= 0.25
    eager = predict(mm_kernels(1, 4096, 4096), H100, "bf16")
    assert eager.bound == "overhead"  # eager host time (19.6 us per matmul) is most of it
    tiny = predict(mm_kernels(1, 64, 64), H100, "bf16", mode="graph")
    assert tiny.bound == "overhead"


def test_big_copy_is_memory_bound_and_close():
    r = row("copy", elems=2**28)
    est = predict(copy_kernels(2**28), H100, "bf16", mode="graph")
    assert est.bound == "memory"
    err = rel(est.time_s, measured_s(r))
    assert abs(err) <= 0.15, (
        f"copy 2^28 bf16: predicted {est.time_s * 1e3:.4f} ms, measured {r['ms']:.4f} ms ({err:+.1%})")


def test_causal_sdpa_is_compute_bound():
    est = predict(sdpa_kernels(1, 16, 16384, 128, True), H100, "bf16", mode="graph")
    assert est.bound == "compute"
    r = row("sdpa", backend="default", T=16384, dh=128, causal=True)
    assert abs(rel(est.time_s, measured_s(r))) <= 0.15


# -- whole groups of rows --------------------------------------------------------------------------

def _median(group: str, limit: float) -> float:
    errs = row_errors(ROWS, H100)[group]
    s = summarize(errs)
    assert s["median"] <= limit, (
        f"{group}: median |pred-meas|/meas = {s['median']:.1%} (p90 {s['p90']:.1%}, n={s['n']})")
    return s["median"]


def test_median_error_over_all_mm_rows():
    errs = [e for g, v in row_errors(ROWS, H100).items() if g.startswith("mm:") for e in v]
    assert len(errs) == sum(r["op"] == "mm" for r in ROWS) == 280
    s = summarize(errs)
    assert s["median"] <= 0.25, f"all mm rows: median |pred-meas|/meas = {s['median']:.1%} (p90 {s['p90']:.1%})"


@pytest.mark.parametrize("group", ["mm:bf16", "mm:fp32", "bmm"])
def test_median_error_matmul_groups(group):
    _median(group, 0.25)


@pytest.mark.parametrize("backend", ["default", "cudnn", "flash", "efficient"])
def test_median_error_sdpa_per_backend(backend):
    _median(f"sdpa:{backend}", 0.25)


def test_median_error_element_ops():
    g = row_errors(ROWS, H100)
    errs = [e for op in ("copy", "exp", "add", "softmax", "sum") for e in g[f"vector:{op}"]]
    s = summarize(errs)
    assert s["median"] <= 0.25, f"element ops: median |pred-meas|/meas = {s['median']:.1%} (p90 {s['p90']:.1%})"


def test_eager_rows():
    assert predict_row(row("eager_tiny_op"), H100) == pytest.approx(measured_s(row("eager_tiny_op")))
    assert predict_row(row("eager_tiny_matmul"), H100) == pytest.approx(measured_s(row("eager_tiny_matmul")))


def test_default_sdpa_backend_ranking():
    """cuDNN > flash > efficient on this H100, as measured, at every shape of the file."""
    for r in ROWS:
        if r["op"] == "sdpa" and r["backend"] == "cudnn":
            key = {k: r[k] for k in ("B", "H", "T", "dh", "causal")}
            t = {b: predict_row({**r, "backend": b}, H100) for b in ("cudnn", "flash", "efficient")}
            assert t["cudnn"] < t["flash"] < t["efficient"], key


# -- predict() on graph kernels is the row model ---------------------------------------------------

def test_graph_kernels_match_row_predictions():
    for r in ROWS:
        if r["op"] == "mm":
            isz = 2 if r["dtype"] == "bfloat16" else 4
            dt = "bf16" if isz == 2 else "fp32"
            ks = mm_kernels(r["M"], r["K"], r["N"], isz)
        elif r["op"] == "sdpa" and r["backend"] == "default":
            ks, dt = sdpa_kernels(r["B"], r["H"], r["T"], r["dh"], r["causal"]), "bf16"
        elif r["op"] == "copy":
            ks, dt = copy_kernels(r["elems"]), "bf16"
        else:
            continue
        assert predict(ks, H100, dt, mode="graph").time_s == pytest.approx(predict_row(r, H100), rel=1e-12), r


# -- the layer: decomposition and the eager queue ---------------------------------------------------

def test_decomposition_sums_to_time_and_bound_is_largest():
    ks = mm_kernels(1, 64, 64) * 3 + mm_kernels(8192, 8192, 8192) + copy_kernels(2**28) + copy_kernels(4096)
    for mode in ("eager", "graph"):
        e = predict(ks, H100, "bf16", mode=mode)
        assert isinstance(e, TimeEstimate)
        assert e.compute_s + e.memory_s + e.overhead_s == pytest.approx(e.time_s, rel=1e-12)
        assert e.bound == max(("compute", e.compute_s), ("memory", e.memory_s), ("overhead", e.overhead_s),
                              key=lambda kv: kv[1])[0]
        assert sum(k.time_s for k in e.per_kernel) == pytest.approx(e.time_s, rel=1e-12)
        assert len(e.per_kernel) == len(ks)
        name, t, bound = e.per_kernel[3][:3]
        assert isinstance(e.per_kernel[3], KernelTime) and name == "mm" and bound == "compute" and t > 1e-3
        assert e.per_kernel[-1].bound == "overhead" and e.per_kernel[4].bound == "memory"
        assert e.as_dict()["per_kernel"][0]["name"] == "mm"


def test_eager_queue():
    tiny = copy_kernels(4096)
    n = 50
    e = predict(tiny * n, H100, "bf16")
    # host-bound: one launch overhead per op, plus the last kernel's device time
    dev_one = predict(tiny, H100, mode="graph").time_s
    assert e.time_s == pytest.approx(n * H100.launch_overhead_s + dev_one, rel=1e-9)
    assert e.bound == "overhead" and e.host_s == pytest.approx(n * H100.launch_overhead_s)
    # a long kernel first hides the host time of the tiny ones queued behind it
    big = mm_kernels(8192, 8192, 8192)
    dev_tiny = predict(tiny, H100, mode="graph").time_s
    e2 = predict(big + tiny * n, H100, "bf16")
    assert e2.time_s == pytest.approx(H100.host_matmul_s + predict(big, H100, mode="graph").time_s + n * dev_tiny,
                                      rel=1e-9)
    # ... but not when it comes last
    e3 = predict(tiny * n + big, H100, "bf16")
    assert e3.time_s > e2.time_s + 0.5 * n * (H100.launch_overhead_s - dev_tiny)
    d = predict(tiny * n, H100, "bf16", mode="graph")
    assert d.host_s == 0.0 and d.time_s == pytest.approx(n * dev_tiny)


def test_dtype_and_backend_choices():
    ks = mm_kernels(4096, 4096, 4096)
    bf16 = predict(ks, H100, "bf16", mode="graph").time_s
    fp32 = predict(mm_kernels(4096, 4096, 4096, itemsize=4), H100, "fp32", mode="graph").time_s
    assert fp32 > 10 * bf16  # fp32 matmuls on CUDA cores (PyTorch default), as measured: ~52 vs ~770 TFLOP/s
    tf32 = H100.model_copy(update={"fp32_matmul": "tf32"})
    assert predict(mm_kernels(4096, 4096, 4096, itemsize=4), tf32, "fp32", mode="graph").time_s < fp32 / 5
    att = sdpa_kernels(4, 16, 4096, 128, True)
    t = {b: predict(att, H100, "bf16", backend=b, mode="graph").time_s for b in ("cudnn", "flash", "efficient")}
    assert t["cudnn"] < t["flash"] < t["efficient"]
    assert predict(att, H100, "bf16", mode="graph").backend == "cudnn"
    with pytest.raises(HardwareError):
        predict(att, H100, "bf16", backend="triton")
    with pytest.raises(ValueError):
        predict(att, H100, "bf16", mode="lazy")
    with pytest.raises(HardwareError):
        predict(att, H100, "int8")


@pytest.mark.parametrize("name", ["h100", "h200", "a100", "l4", "rtx4090", "m2-max", "m3-max", "cpu"])
def test_every_profile_predicts_sensibly(name):
    hw = get_hardware(name)
    big = predict(mm_kernels(8192, 8192, 8192), hw, "bf16", mode="graph")
    assert big.bound == "compute"
    assert 2 * 8192**3 / big.time_s <= hw.peak_flops["bf16"]  # never beats the datasheet
    cp = predict(copy_kernels(2**28), hw, "bf16", mode="graph")
    assert cp.bound == "memory" and 4 * 2**28 / cp.time_s <= hw.mem_bandwidth
    att = predict(sdpa_kernels(1, 16, 8192, 128, True), hw, "bf16", mode="graph")
    assert att.time_s > 0 and math.isfinite(att.time_s)


def test_h200_is_faster_than_h100_when_memory_bound():
    ks = copy_kernels(2**28)
    t100 = predict(ks, get_hardware("h100"), mode="graph").time_s
    t200 = predict(ks, get_hardware("h200"), mode="graph").time_s
    assert t200 < t100 * 0.8


def test_item_slowdown_of_a_call_with_fewer_items_than_threads():
    """ATen's CPU flash attention runs its (batch, head, query block) items in parallel: one item on one
    thread of two that together run 1.5x faster takes 1.5x the law's time; two or more, the law's."""
    assert item_slowdown((2, 1.5), 1) == pytest.approx(1.5) and item_slowdown((2, 1.5), 2) == pytest.approx(1.0)
    assert item_slowdown((2, 1.5), 40) == pytest.approx(1.0)
    assert item_slowdown((8, 5.0), 1) == pytest.approx(5.0)
    assert item_slowdown((8, 5.0), 4) == pytest.approx(5.0 / (1 + 4.0 * 3 / 7))  # 4 of 8 threads at work
    assert [cpu_query_block(q) for q in (1, 191, 192, 767, 768)] == [32, 32, 64, 64, 256]


def test_a_single_item_attention_call_leaves_threads_idle():
    cpu = get_hardware("cpu")
    par = cpu.model_copy(update={"threads": 2, "attention_speedup": 1.5})
    one = predict(sdpa_kernels(1, 1, 16, 64, False, 4), cpu, "fp32", mode="graph").per_kernel[0]  # 1 block of 16
    slow = predict(sdpa_kernels(1, 1, 16, 64, False, 4), par, "fp32", mode="graph").per_kernel[0]
    lat = cpu.attention_eff().latency_s
    assert slow.time_s - lat == pytest.approx(1.5 * (one.time_s - lat), rel=1e-9)  # its work, 1.5x
    # 4 heads: 4 items for 2 threads; 1 head of 64 query rows: 2 blocks of 32; of 200: 4 blocks of 64
    for B, H, T in ((1, 4, 16), (1, 1, 64), (1, 1, 200)):
        a = predict(sdpa_kernels(B, H, T, 64, False, 4), cpu, "fp32", mode="graph").time_s
        assert predict(sdpa_kernels(B, H, T, 64, False, 4), par, "fp32", mode="graph").time_s == pytest.approx(a)


def test_head_dim_is_not_extrapolated_beyond_the_fit():
    """The fit saw head dims 64 and 128: a larger one gets the dh=128 efficiency, no more."""
    t128 = predict(sdpa_kernels(1, 16, 16384, 128, False), H100, "bf16", mode="graph").time_s
    t256 = predict(sdpa_kernels(1, 8, 16384, 256, False), H100, "bf16", mode="graph").time_s  # same FLOPs
    assert t256 == pytest.approx(t128, rel=0.02)


# -- element-op laws by kind, row terms, host classes ------------------------------------------------

LAWS = H100.model_copy(update={
    "vector_latency": {**H100.vector_latency, "index": 7e-6, "scatter": 9e-6, "mask": 11e-6, "topk": 13e-6},
    "vector_eff": {**H100.vector_eff, "index": 0.5, "scatter": 0.25, "mask": 0.125, "topk": 0.1},
    "vector_row_s": {"softmax": 2e-9, "topk": 3e-9}, "topk_select_s": 1e-10,
    "view_overhead_s": 1e-6, "sdpa_overhead_s": 30e-6, "index_overhead_s": 15e-6})


def scores_graph(rows=4096, keys=512, k=None):
    """Scores (a matmul of n = keys), a mask, then a softmax, or a topk of ``k`` and a gather by it."""
    g = Graph(2)
    q, w = g.input("q", rows * 64), g.input("w", 64 * keys)
    s = g.matmul("scores", q, w, m=rows, k=64, n=keys)
    s = g.elementwise("mask", "mask", (s,), elems=rows * keys)
    if k is None:
        g.output(g.elementwise("softmax", "softmax", (s,), elems=rows * keys))
    else:
        idx = g.elementwise("topk", "topk", (s,), elems=rows * keys, out_elems=rows * k, index_out=True)
        v = g.input("v", keys * 64)
        g.output(g.elementwise("gather", "gather", (v, idx), elems=rows * k * 64))
    return g


def by_name(est) -> dict:
    return {k.name: k for k in est.per_kernel}


def test_a_topk_writes_its_values_at_its_own_law():
    """torch.topk writes its values beside its indices (the graph's ``.values`` gather, one kernel with
    it): the kernel is priced by the topk's law alone, as ``calibrate``'s topk rows are fitted, not at
    the slower bandwidth of a gather by index (``vector_eff["index"]``)."""
    from attncost.costmodel.variants.base import topk

    slow_gathers = LAWS.model_copy(update={"vector_latency": {**LAWS.vector_latency, "index": 20e-6},
                                           "vector_eff": {**LAWS.vector_eff, "index": 0.02}})
    g = Graph(2)
    s = g.input("s", 4096 * 512)
    values, idx = topk(g, "topk", s, elems=4096 * 512, out_elems=4096 * 16)
    g.output(values)
    g.output(idx)
    (kernel,) = by_name(predict(_kernels(g), slow_gathers, mode="graph")).values()
    nbytes = 4096 * 512 * 2 + 4096 * 16 * (8 + 2)  # the scores read, the indices and the values written
    want = 13e-6 + nbytes / (H100.mem_bandwidth * 0.1) + row_parts(3e-9, 1e-10, 4096 * 512, 4096 * 16, 0)
    assert kernel.time_s == pytest.approx(want, rel=1e-9)


def test_row_lengths_come_from_the_graph():
    g = scores_graph(k=16)
    ops = {op.name: op for op in g.ops}
    rows = RowLengths(_kernels(g))
    assert rows.of_op(ops["topk"]) == 512  # the scores matmul's n, through the mask
    assert rows.of_tensor("topk") == 16  # a topk's output rows hold its k
    ops["topk"].row = 300.0  # set by the variant: kept
    assert RowLengths(_kernels(g)).of_op(ops["topk"]) == 300.0
    r = Graph(2)
    x = r.input("x", 1000)
    r.output(r.elementwise("rowmax", "max", (x,), elems=1000, out_elems=10))
    assert RowLengths(_kernels(r)).of_op(r.ops[0]) == 100  # a reduction: elements per output
    assert RowLengths(_kernels(r)).of_tensor("x") == 0.0  # an input: unknown


def test_softmax_and_topk_pay_their_row_terms():
    g = scores_graph()
    base = by_name(predict(_kernels(g), H100, mode="graph"))["softmax"].time_s
    t = by_name(predict(_kernels(g), LAWS, mode="graph"))["softmax"].time_s
    assert t - base == pytest.approx(4096 * 2e-9, rel=1e-9)  # 4096 rows of 512
    g = scores_graph(k=16)
    topk = by_name(predict(_kernels(g), LAWS, mode="graph"))["topk"]
    nbytes = 4096 * 512 * 2 + 4096 * 16 * 8
    want = 13e-6 + nbytes / (H100.mem_bandwidth * 0.1) + row_parts(3e-9, 1e-10, 4096 * 512, 4096 * 16, 512)
    assert topk.time_s == pytest.approx(want, rel=1e-9)
    assert row_parts(3e-9, 1e-10, 4096 * 512, 4096 * 16, 512) == pytest.approx(
        4096 * 3e-9 + 4096 * 16 * math.log2(17) * 1e-10)
    assert row_parts(3e-9, 0.0, 100.0, 100.0, 0.0) == 0.0  # row unknown: no row term


PATHS = TopkPaths(latency_s=15e-6, scan_s=1e-9, heap_s=4e-9, select_s=5e-9, sort_s=3e-9)


def test_topk_path_follows_pytorchs_cpu_kernel():
    """ATen's CPU topk: a partial sort where k * 64 <= n, else a selection and a sort of the k kept."""
    p = PATHS.params()
    # 7,680 rows of 1,536 keeping 16 (16 x 64 <= 1,536): the partial sort, a scan plus k log2(n/k) heap steps
    partial = 7680 * (1536 * 1e-9 + 16 * math.log2(1536 / 16) * math.log2(17) * 4e-9)
    assert topk_path_s(p, 7680 * 1536, 7680 * 16, 1536) == pytest.approx(partial, rel=1e-12)
    assert partial == pytest.approx(7680 * 3.26e-6, rel=0.01)  # 1.54 us of scan + 1.72 of heap a row
    # keeping 64 (64 x 64 > 1,536): the selection, 5 ns a candidate, then a sort of the 64
    selection = 7680 * (1536 * 5e-9 + 64 * math.log2(65) * 3e-9)
    assert topk_path_s(p, 7680 * 1536, 7680 * 64, 1536) == pytest.approx(selection, rel=1e-12)
    # the switch: 24 x 64 = 1,536 still sorts partially, 25 x 64 does not
    assert topk_path_s(p, 1536, 24, 1536) == pytest.approx(1536e-9 + 24 * math.log2(64) * math.log2(25) * 4e-9)
    assert topk_path_s(p, 1536, 25, 1536) == pytest.approx(1536 * 5e-9 + 25 * math.log2(26) * 3e-9)
    assert topk_path_s(p, 1536, 24, 0.0) == 0.0  # row unknown: no work priced


def test_a_profile_with_topk_paths_prices_topk_by_its_path():
    hw = LAWS.model_copy(update={"topk_paths": PATHS})
    g = scores_graph(k=16)
    topk = by_name(predict(_kernels(g), hw, mode="graph"))["topk"]
    nbytes = 4096 * 512 * 2 + 4096 * 16 * 8
    want = 15e-6 + nbytes / (H100.mem_bandwidth * H100.mem_efficiency) + topk_path_s(
        PATHS.params(), 4096 * 512, 4096 * 16, 512)  # its latency, its path, its bytes as a copy
    assert topk.time_s == pytest.approx(want, rel=1e-9)
    assert by_name(predict(_kernels(g), LAWS, mode="graph"))["topk"].time_s != pytest.approx(want)


def test_each_op_is_priced_by_its_kind_law():
    g = scores_graph(k=16)
    est = by_name(predict(_kernels(g), LAWS, mode="graph"))
    mask_bytes = 2 * 4096 * 512 * 2
    assert est["mask"].time_s == pytest.approx(11e-6 + mask_bytes / (H100.mem_bandwidth * 0.125))  # fn's own law
    assert est["gather"].memory_s == pytest.approx(_kernels(g)[-1].bytes / (H100.mem_bandwidth * 0.5))  # index
    ops = {op.name: op for op in g.ops}
    assert law_kind(ops["gather"]) == "index" and law_kind(ops["topk"]) == "topk"
    analysis.add_backward(g)
    grads = [op for op in g.ops if op.name.startswith("grad_") and op.kind == "gather"]
    assert grads and all(law_kind(op) == "scatter" for op in grads)


def test_host_time_per_class():
    g = scores_graph(k=16)
    g.views("split_heads", 3)
    est = predict(_kernels(g), LAWS)
    # matmul, mask (element-wise), topk and gather (index), 3 views
    assert est.host_s == pytest.approx(LAWS.host_matmul_s + LAWS.launch_overhead_s + 2 * 15e-6 + 3 * 1e-6)
    att = predict(sdpa_kernels(1, 4, 256, 64, True), LAWS)
    assert att.host_s == pytest.approx(30e-6)


def test_a_synchronous_host_adds_no_overlap():
    """host_sync (a CPU): each op takes the longer of its host time and its kernel time."""
    ks = mm_kernels(8192, 8192, 8192) + copy_kernels(4096) * 20
    sync = H100.model_copy(update={"host_sync": True})
    dev = predict(ks, H100, mode="graph").per_kernel
    host = [H100.host_matmul_s] + [H100.launch_overhead_s] * 20
    est = predict(ks, sync)
    assert est.time_s == pytest.approx(sum(max(h, k.time_s) for h, k in zip(host, dev)), rel=1e-12)
    assert est.host_s == pytest.approx(sum(host))
    assert est.compute_s + est.memory_s + est.overhead_s == pytest.approx(est.time_s, rel=1e-12)
    assert predict(ks, H100).time_s < est.time_s  # the queue hides the small ops behind the big matmul


def test_the_sequence_overhead_is_paid_by_every_op_in_eager_mode():
    g = scores_graph(k=16)
    g.views("split_heads", 3)
    ks = _kernels(g)
    seq = 2e-6
    for base in (LAWS, LAWS.model_copy(update={"host_sync": True})):
        more = base.model_copy(update={"sequence_overhead_s": seq})
        plain, paid = predict(ks, base), predict(ks, more)
        assert paid.host_s == pytest.approx(plain.host_s + len(ks) * seq)
        if base.host_sync:  # nothing overlaps: each op pays it in full
            assert paid.time_s == pytest.approx(plain.time_s + len(ks) * seq)
        assert predict(ks, more, mode="graph").time_s == predict(ks, base, mode="graph").time_s


def test_a_matrix_vector_product_streams_its_matrix():
    """With ``gemv_mem_eff``, a matmul of one row (m = 1) takes its latency plus its bytes at that
    share of the bandwidth, batched or not (decode's scores and weighted values: one query row per
    batch and head); m = 2 keeps the matmul law."""
    from attncost.costmodel.timing import compiled, matmul_parts

    cpu = get_hardware("cpu")
    e = cpu.matmul["fp32"].model_copy(update={"gemv_mem_eff": 0.25})
    hw = cpu.model_copy(update={"matmul": {**cpu.matmul, "fp32": e}})
    k, n = 1024, 4096
    nbytes = (k + k * n + n) * 4.0
    lat, comp, mem = matmul_parts(compiled(hw, "fp32").mm, 1, 1, k, n, 2.0 * k * n, nbytes)
    assert (lat, comp, mem) == (e.latency_s, 0.0, nbytes / (cpu.mem_bandwidth * 0.25))
    assert matmul_parts(compiled(hw, "fp32").mm, 1, 2, k, n, 4.0 * k * n, nbytes)[1] > 0.0
    batched = 8 * nbytes
    assert matmul_parts(compiled(hw, "fp32").mm, 8, 1, k, n, 16.0 * k * n, batched) == (
        e.latency_s, 0.0, batched / (cpu.mem_bandwidth * 0.25))
    assert matmul_parts(compiled(cpu, "fp32").mm, 8, 1, k, n, 16.0 * k * n, batched)[1] > 0.0  # no gemv law
    g = Graph(itemsize=4)
    g.input("x", k)
    g.weight("w", k * n)
    g.matmul("y", "x", "w", m=1, k=k, n=n)
    assert predict(analysis.analyse(g).kernels, hw, "fp32", mode="graph").time_s == pytest.approx(lat + mem)


def test_a_matmul_beyond_its_laws_cache_reads_its_matrix_at_the_slow_share():
    """A matmul law with ``cache_bytes`` and ``dram_eff``: a product of several rows moving more bytes
    takes at least ``bytes / (bw * dram_eff)`` of memory time; below, as before; a matrix-vector product,
    which streams its matrix, keeps its own law."""
    from attncost.costmodel.timing import compiled, matmul_parts

    cpu = get_hardware("cpu")
    e = cpu.matmul["fp32"].model_copy(update={"gemv_mem_eff": 0.25, "cache_bytes": 8e6, "dram_eff": 0.05})
    hw = cpu.model_copy(update={"matmul": {"fp32": e}})
    plain = cpu.model_copy(update={"matmul": {"fp32": e.model_copy(update={"cache_bytes": None})}})
    k, n = 768, 4096
    big = 4.0 * (4 * k + k * n + 4 * n)  # 12.6 MB
    lat, comp, mem = matmul_parts(compiled(hw, "fp32").mm, 1, 4, k, n, 8.0 * k * n, big)
    assert mem == big / (cpu.mem_bandwidth * 0.05) and mem > comp
    assert matmul_parts(compiled(plain, "fp32").mm, 1, 4, k, n, 8.0 * k * n, big)[2] == big / (cpu.mem_bandwidth * 0.7)
    small = 4.0 * (4 * 256 + 256 * n + 4 * n)  # 4.2 MB
    assert matmul_parts(compiled(hw, "fp32").mm, 1, 4, 256, n, 8.0 * 256 * n, small) == \
        matmul_parts(compiled(plain, "fp32").mm, 1, 4, 256, n, 8.0 * 256 * n, small)
    gemv = 4.0 * (k + k * n + n)
    assert matmul_parts(compiled(hw, "fp32").mm, 1, 1, k, n, 2.0 * k * n, gemv)[2] == gemv / (cpu.mem_bandwidth * 0.25)
    g = Graph(itemsize=4)
    g.input("x", 4 * k)
    g.weight("w", k * n)
    g.matmul("y", "x", "w", m=4, k=k, n=n)
    ks = analysis.analyse(g).kernels
    assert predict(ks, hw, "fp32", mode="graph").time_s == pytest.approx(lat + mem)


def test_grouped_query_heads_run_apart_where_the_kernel_does_not_pack_them():
    """A GQA decode kernel's query term counts a query head's rows where the backend runs each query
    head apart (``packs_groups`` false: PyTorch's CPU kernels): the same time as MHA's kernel of the
    same FLOPs, bytes aside; packed, the group's rows count together and it runs faster."""
    from attncost.costmodel.estimate import graph
    from attncost.costmodel.shape import Shape

    cpu = get_hardware("cpu")
    flash = cpu.attention["flash"].model_copy(update={"q_half": 10.0, "mem_eff": 1.0})
    apart = cpu.model_copy(update={"attention": {"flash": flash}, "mem_bandwidth": 1e15})
    packed = apart.model_copy(update={"attention": {"flash": flash.model_copy(update={"packs_groups": True})}})

    def attention_s(hw, name):
        s = Shape(T=2048, d=512, heads=8, batch=2, phase="decode", dtype="fp32")
        ks = [k for k in analysis.analyse(graph(name, s)).kernels if k.kind == "attention"]
        return predict(ks, hw, "fp32", mode="graph").time_s

    assert attention_s(apart, "mqa") == pytest.approx(attention_s(apart, "flash"), rel=1e-9)
    assert attention_s(packed, "mqa") < 0.5 * attention_s(packed, "flash")
    assert get_hardware("cpu").attention["flash"].packs_groups is False
    assert get_hardware("h100").attention_eff().packs_groups is True


def test_module_calls_cost_host_time_only():
    """A graph's module calls (the layer, each nn.Linear) cost ``module_overhead_s`` each on the host
    in eager mode, nothing on the device; unmeasured (None), nothing."""
    from attncost.costmodel.estimate import graph
    from attncost.costmodel.shape import Shape

    g = graph("flash", Shape(T=64, d=64, heads=2, phase="decode"))
    calls = [op for op in g.ops if op.kind == "call"]
    assert len(calls) == 5 and all(op.flops == 0.0 and g.tensors[op.out].nbytes == 0.0 for op in calls)
    ks = _kernels(g)
    timed = LAWS.model_copy(update={"module_overhead_s": 7e-6})
    assert predict(ks, timed).host_s == pytest.approx(predict(ks, LAWS).host_s + 5 * 7e-6)
    assert predict(ks, timed, mode="graph").time_s == predict(ks, LAWS, mode="graph").time_s
    assert LAWS.module_overhead_s is None


def test_the_autograd_engine_costs_the_host_per_node_and_per_backward_call():
    """A training graph carries one autograd op: its nodes times ``autograd_node_s``, plus
    ``backward_call_s``, on the host in eager mode; prefill has none."""
    from attncost.costmodel.estimate import graph
    from attncost.costmodel.shape import Shape

    g = graph("flash", Shape(T=64, d=64, heads=2, phase="train"))
    engine = [op for op in g.ops if op.kind == "autograd"]
    assert len(engine) == 1 and engine[0].elems > 20
    ks = _kernels(g)
    timed = LAWS.model_copy(update={"autograd_node_s": 3e-6, "backward_call_s": 50e-6})
    assert predict(ks, timed).host_s == pytest.approx(predict(ks, LAWS).host_s + engine[0].elems * 3e-6 + 50e-6)
    assert predict(ks, timed, mode="graph").time_s == predict(ks, LAWS, mode="graph").time_s
    assert not [op for op in graph("flash", Shape(T=64, d=64, heads=2)).ops if op.kind == "autograd"]


def test_a_fused_kernels_backward_takes_the_backends_backward_factor():
    """A training graph's ``bwd:attention`` kernel (the scores recomputed, four gradient matmuls: 2.5x the
    forward's FLOPs) takes the backend's ``backward`` times its law's work; the forward is unchanged."""
    from attncost.costmodel.estimate import graph
    from attncost.costmodel.shape import Shape

    ks = _kernels(graph("flash", Shape(T=2048, d=1024, heads=8, phase="train")))
    fwd, bwd = (next(k for k in ks if k.kind == "attention" and k.name == n) for n in ("attention", "bwd:attention"))
    assert bwd.flops_matmul == pytest.approx(2.5 * fwd.flops_matmul, rel=0.01)
    backend = H100.attention_backend
    slow = H100.model_copy(update={"attention": {
        **H100.attention, backend: H100.attention[backend].model_copy(update={"backward": 1.5})}})
    base, timed = by_name(predict(ks, H100, mode="graph")), by_name(predict(ks, slow, mode="graph"))
    assert timed["attention"].time_s == base["attention"].time_s
    lat = H100.attention[backend].latency_s
    assert timed["bwd:attention"].time_s - lat == pytest.approx(1.5 * (base["bwd:attention"].time_s - lat), rel=1e-9)
    assert H100.attention[backend].backward == 1.0  # the published profile: not fitted, as the forward


def test_a_fused_kernel_beyond_the_caches_streams_at_its_backends_pace():
    """On a profile with a cache law, a fused attention call moving more than ``cache_bytes`` takes at least
    its bytes at the backend's ``dram_eff`` of the bandwidth; a call within the caches, or a profile without
    the law (a GPU's), is priced as before."""
    from attncost.costmodel.timing import attention_call, compiled

    flash = H100.attention[H100.attention_backend]
    cached = H100.model_copy(update={"cache_bytes": 16 * 2**20, "dram_eff": 1.0})
    slow = cached.model_copy(update={"attention": {
        **H100.attention, H100.attention_backend: flash.model_copy(update={"dram_eff": 0.01})}})
    nbytes = 64 * 2**20  # one query per head against 16 x 16,384 keys of head dim 64, bf16: K and V
    args = (16, 64.0, 16384.0, 1.0, 4.0 * 16 * 16384 * 64, nbytes, 1.0)
    mem = [attention_call(compiled(hw, "bf16", None), *args)[2] for hw in (H100, cached, slow)]
    assert mem[0] == mem[1] and mem[2] == pytest.approx(nbytes / (0.01 * H100.mem_bandwidth))
    small = args[:5] + (nbytes / 8, 1.0)
    within = [attention_call(compiled(hw, "bf16", None), *small) for hw in (slow, cached)]
    assert within[0] == within[1]
