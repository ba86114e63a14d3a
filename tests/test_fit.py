"""costmodel.fit: microbenchmark rows, and a profile fitted to them, family by family."""

import json
import statistics

import pytest

from attncost.costmodel.fit import (fit_attention, fit_attention_speedup, fit_element_ops, fit_host_time, fit_matmul,
                                    fit_profile, measured_s, predict_row, row_dtype, row_errors)
from attncost.costmodel.hardware import (H100_MICROBENCH, H100_PUBLISHED, AttentionEfficiency, TopkPaths,
                                         get_hardware)

ROWS = json.loads(H100_MICROBENCH.read_text())["rows"]


@pytest.fixture(scope="module")
def synth():
    """The microbenchmark rows with the times the committed h100 profile predicts for them."""
    truth = get_hardware("h100")
    out = []
    for r in ROWS:
        p = predict_row(r, truth)
        if p is None or r["op"] == "cumsum":
            continue
        s = dict(r)
        if "ms" in s:
            s["ms"] = p * 1e3
        else:
            s["us_per_op"] = p * 1e6
        out.append(s)
    return out


def test_fit_recovers_a_known_profile(synth):
    """Rows made by a known profile are fitted back from the generic published base."""
    truth = get_hardware("h100")
    fitted = fit_profile(H100_PUBLISHED, synth)
    errs = [abs(e) for v in row_errors(synth, fitted).values() for e in v]
    assert statistics.median(errs) < 0.01 and max(errs) < 0.1
    assert fitted.attention_backend == truth.attention_backend


def test_fit_without_rows_keeps_the_base():
    fitted = fit_profile(H100_PUBLISHED, [{"op": "unknown", "ms": 1.0}])
    assert fitted.matmul == H100_PUBLISHED.matmul and fitted.attention == H100_PUBLISHED.attention
    assert "nothing" in fitted.calibration


def test_row_dtype_reads_torch_and_attncost_spellings():
    for spelling, dt in (("bfloat16", "bf16"), ("float16", "fp16"), ("half", "fp16"), ("float32", "fp32"),
                         ("float", "fp32"), ("fp32", "fp32"), ("bf16", "bf16")):
        assert row_dtype({"dtype": spelling}) == dt
    assert row_dtype({}) == "bf16"  # the reference file's default


def test_host_time_is_taken_as_measured():
    part = fit_host_time([{"op": "eager_tiny_op", "us_per_op": 7.0}, {"op": "mm", "ms": 1.0}])
    assert part.update == {"launch_overhead_s": pytest.approx(7e-6)} and part.what
    assert fit_host_time([{"op": "mm", "ms": 1.0}]) == ({}, [])


def test_element_ops_start_no_faster_than_a_copy(synth):
    part = fit_element_ops(H100_PUBLISHED, synth)
    lat = part.update["vector_latency"]
    assert set(lat) >= {"softmax", "reduction", "elementwise"}
    assert all(t >= part.update["kernel_latency_s"] for t in lat.values())
    assert fit_element_ops(H100_PUBLISHED, [r for r in synth if r["op"] == "mm"]) == ({}, [])


def test_matmul_needs_8_rows_and_bf16_fp16_share_a_fit(synth):
    bf16 = [r for r in synth if r["op"] == "mm" and r["dtype"] == "bfloat16"]
    part = fit_matmul(H100_PUBLISHED, bf16)
    mm = part.update["matmul"]
    assert mm["fp16"] == mm["bf16"] != H100_PUBLISHED.matmul["bf16"]
    assert mm["fp32"] == H100_PUBLISHED.matmul["fp32"] and part.what == [f"matmul bf16 ({len(bf16)} mm rows)"]
    assert fit_matmul(H100_PUBLISHED, bf16[:7]).update["matmul"] == H100_PUBLISHED.matmul


def test_attention_per_backend_and_the_default(synth):
    sdpa = [r for r in synth if r["op"] == "sdpa"]
    part = fit_attention(H100_PUBLISHED, sdpa, mem_eff=0.9, min_latency_s=1e-6)
    att = part.update["attention"]
    assert {e.mem_eff for e in att.values()} == {0.9} and len(part.what) == 3
    assert part.update["attention_backend"] == get_hardware("h100").attention_backend
    few = [r for r in sdpa if r["backend"] == "flash"][:3]
    assert fit_attention(H100_PUBLISHED, few, mem_eff=0.9, min_latency_s=1e-6).what == []


def test_measured_seconds():
    assert measured_s({"ms": 2.0}) == pytest.approx(2e-3)
    assert measured_s({"us_per_op": 3.0}) == pytest.approx(3e-6)
    assert measured_s({"GBps": 1.0}) is None


# -- a law per element-op kind, fitted on its own rows ---------------------------------------------

# the generating laws: (latency s, bandwidth share, s per row, s per kept element x log2(k + 1))
LAWS = {"copy": (3e-6, 0.6, 0.0, 0.0), "elementwise": (4e-6, 0.8, 0.0, 0.0), "mask": (5e-6, 0.1, 0.0, 0.0),
        "fill": (2.5e-6, 0.9, 0.0, 0.0), "index": (6e-6, 0.3, 0.0, 0.0), "scatter": (8e-6, 0.1, 0.0, 0.0),
        "scan": (4e-6, 0.05, 0.0, 0.0), "reduction": (3e-6, 0.7, 2e-8, 0.0), "softmax": (5e-6, 0.2, 2e-8, 0.0),
        "topk": (9e-6, 0.05, 1e-8, 4e-10)}
PLAIN = (2e-6, 0.9)  # x.clone(): the profile's default law


def law_profile():
    return H100_PUBLISHED.model_copy(update={
        "kernel_latency_s": PLAIN[0], "mem_efficiency": PLAIN[1],
        "vector_latency": {k: v[0] for k, v in LAWS.items()}, "vector_eff": {k: v[1] for k, v in LAWS.items()},
        "vector_row_s": {k: v[2] for k, v in LAWS.items() if v[2]}, "topk_select_s": LAWS["topk"][3]})


def element_rows(truth) -> list:
    """Rows of every measured element op, as calibrate writes them, timed by ``truth``."""
    out = []
    for n in (4096, 65536, 2**20, 2**24):
        for op in ("copy", "copy_t", "cat", "add", "mul", "masked_fill", "zeros", "index_select", "gather",
                   "index_add", "scatter_add", "cumsum", "sum"):
            out.append({"op": op, "dtype": "float32", "elems": n, "bytes": 2.5 * 4 * n})
        out += [{"op": "amax", "dtype": "float32", "elems": n, "row": row, "bytes": 4 * n} for row in (16, 64)]
        out += [{"op": "softmax", "dtype": "float32", "elems": n, "row": row, "bytes": 8 * n} for row in (16, 1024)]
    out += [{"op": "topk", "dtype": "float32", "elems": n, "row": cand, "k": k, "bytes": 4 * n + 12 * k * n / cand}
            for n in (2**14, 2**18) for cand, k in ((64, 4), (1024, 64), (4096, 1024), (2**14, 1))]
    for r in out:
        r["ms"] = predict_row(r, truth) * 1e3
    return out


def test_each_kind_law_is_recovered_from_its_own_rows():
    truth = law_profile()
    rows = element_rows(truth)
    part = fit_element_ops(H100_PUBLISHED, rows)
    got = H100_PUBLISHED.model_copy(update=part.update)
    assert got.kernel_latency_s == pytest.approx(PLAIN[0], rel=0.02)
    assert got.mem_efficiency == pytest.approx(PLAIN[1], rel=0.02)
    for kind, (lat, eff, row_s, _) in LAWS.items():
        assert got.op_latency(kind) == pytest.approx(lat, rel=0.05), kind
        assert got.op_eff(kind) == pytest.approx(eff, rel=0.05), kind
        assert got.op_row_s(kind) == pytest.approx(row_s, rel=0.05, abs=1e-12), kind
    assert got.topk_select_s == pytest.approx(LAWS["topk"][3], rel=0.05)
    errs = [abs(e) for g, v in row_errors(rows, got).items() for e in v]
    assert max(errs) < 0.02


def test_an_op_gets_its_own_law_only_where_its_kind_misses_it():
    truth = law_profile()
    rows = [r for r in element_rows(truth) if r["op"] in ("add", "mul", "masked_fill")]
    assert "mask" in fit_element_ops(H100_PUBLISHED, rows).update["vector_eff"]  # 8x slower: its own law
    same = law_profile().model_copy(update={"vector_eff": {**truth.vector_eff, "mask": LAWS["elementwise"][1]},
                                            "vector_latency": {**truth.vector_latency, "mask": LAWS["elementwise"][0]}})
    rows = [r for r in element_rows(same) if r["op"] in ("add", "mul", "masked_fill")]
    eff = fit_element_ops(H100_PUBLISHED, rows).update["vector_eff"]
    assert "mask" not in eff and eff["elementwise"] == pytest.approx(LAWS["elementwise"][1], rel=0.05)


def test_rows_of_one_length_fit_no_row_term():
    truth = law_profile()
    rows = [r for r in element_rows(truth) if r["op"] == "softmax" and r["row"] == 1024]
    part = fit_element_ops(H100_PUBLISHED, rows)
    assert "vector_row_s" not in part.update and "topk_select_s" not in part.update


def topk_rows(truth, grid) -> list:
    """topk rows of (elements, candidates per row, k) as calibrate writes them, timed by ``truth``."""
    out = []
    for n, cand, k in grid:
        kept = n // cand * k * 12
        r = {"op": "topk", "dtype": "float32", "elems": n, "row": cand, "k": k, "bytes": 4 * n + kept,
             "out_bytes": kept}
        r["ms"] = predict_row(r, truth) * 1e3
        out.append(r)
    return out


def test_topk_paths_are_recovered_on_a_cpu():
    """The CPU plan's topk rows (both paths of ATen's kernel) give back the law that timed them; the
    profile then prices a topk by its path, and a GPU's fit (no host_sync) never sets it."""
    from attncost.profiler.calibrate import plan_for

    paths = TopkPaths(latency_s=17e-6, scan_s=1e-9, heap_s=4.3e-9, select_s=5.3e-9, sort_s=2.9e-9)
    cpu = get_hardware("cpu").model_copy(update={"host_sync": True})  # as calibrate makes a CPU's base
    rows = topk_rows(cpu.model_copy(update={"topk_paths": paths}), plan_for("cpu").topk)
    got = fit_element_ops(cpu, rows).update["topk_paths"]
    for f in ("scan_s", "heap_s", "select_s", "sort_s"):
        assert getattr(got, f) == pytest.approx(getattr(paths, f), rel=0.05), f
    fitted = cpu.model_copy(update={"topk_paths": got})
    assert max(abs(e) for e in row_errors(rows, fitted)["vector:topk"]) < 0.03
    assert "topk_paths" not in fit_element_ops(H100_PUBLISHED, rows).update
    one_path = [r for r in rows if r["k"] * 64 > r["row"]]  # selections only: the partial sort unknown
    assert "topk_paths" not in fit_element_ops(cpu, one_path).update


def test_attention_speedup_from_one_item_and_one_per_thread():
    rows = [{"op": "sdpa_items", "B": B, "threads": 2, "ms": ms} for B, ms in ((1, 0.076), (2, 0.099))]
    got = fit_attention_speedup(rows)
    assert got == {"threads": 2, "attention_speedup": pytest.approx(2 * 0.076 / 0.099)}
    assert fit_attention_speedup(rows[:1]) == {} and fit_attention_speedup([]) == {}
    slower = [dict(r, ms=0.1 * r["B"] ** 2) for r in rows]  # two items 4x one: never below one thread's pace
    assert fit_attention_speedup(slower)["attention_speedup"] == 1.0
    # an SDPA row of one item is priced as timing prices it: its work 1.53x the law's
    hw = get_hardware("cpu").model_copy(update=got)
    row = {"op": "sdpa", "backend": "flash", "dtype": "float32", "B": 1, "H": 1, "Tq": 8, "T": 1024, "dh": 64}
    lat = hw.attention_eff("flash").latency_s
    base = predict_row(row, get_hardware("cpu")) - lat
    assert predict_row(row, hw) - lat == pytest.approx(base * 2 * 0.076 / 0.099, rel=1e-9)
    assert predict_row(dict(row, B=2), hw) == pytest.approx(predict_row(dict(row, B=2), get_hardware("cpu")))


def test_host_time_of_every_class():
    rows = [{"op": f"eager_tiny_{c}", "us_per_op": us} for c, us in
            (("op", 7.0), ("matmul", 9.0), ("view", 1.5), ("sdpa", 20.0), ("index", 8.0))]
    part = fit_host_time(rows)
    assert part.update == pytest.approx({"launch_overhead_s": 7e-6, "matmul_overhead_s": 9e-6,
                                         "view_overhead_s": 1.5e-6, "sdpa_overhead_s": 20e-6,
                                         "index_overhead_s": 8e-6})
    hw = H100_PUBLISHED.model_copy(update=part.update)
    assert [predict_row(r, hw) for r in rows] == pytest.approx([r["us_per_op"] * 1e-6 for r in rows])
    assert "view" in part.what[0] and "sdpa" in part.what[0]
    # unmeasured classes fall back: SDPA to the matmul's host time, index to an element-wise op's
    assert H100_PUBLISHED.host_sdpa_s == H100_PUBLISHED.host_matmul_s
    assert H100_PUBLISHED.host_index_s == H100_PUBLISHED.launch_overhead_s


def test_memory_regimes_of_a_cpu_are_recovered_from_its_copies():
    """On a CPU (host_sync) the plain copies show where memory changes pace: beyond a cache a copy
    streams at a lower rate (copy_ into a tensor that exists shows it alone), and a large output is
    faulted in page by page (clone)."""
    cpu = get_hardware("cpu")
    truth = cpu.model_copy(update={"host_sync": True, "kernel_latency_s": 2e-6, "mem_efficiency": 0.9,
                                   "cache_bytes": 16 * 2**20, "dram_eff": 0.25, "fresh_bytes": 32 * 2**20,
                                   "fresh_s_per_byte": 1.5e-9})
    rows = []
    for p in range(12, 26):
        n = 2**p
        rows += [{"op": "copy", "dtype": "float32", "elems": n, "bytes": 8 * n, "out_bytes": 4 * n},
                 {"op": "copy_", "dtype": "float32", "elems": n, "bytes": 8 * n, "out_bytes": 0}]
    for r in rows:
        r["ms"] = predict_row(r, truth) * 1e3
    base = cpu.model_copy(update={"host_sync": True})
    got = base.model_copy(update=fit_element_ops(base, rows).update)
    # each between the largest size measured below it and the smallest above (16 and 32 MiB)
    assert 16 * 2**20 < got.cache_bytes < 32 * 2**20 and 16 * 2**20 < got.fresh_bytes <= 32 * 2**20
    assert got.dram_eff * got.mem_bandwidth == pytest.approx(0.25 * cpu.mem_bandwidth, rel=0.02)
    assert got.fresh_s_per_byte == pytest.approx(1.5e-9, rel=0.02)
    assert got.kernel_latency_s == pytest.approx(2e-6, rel=0.02) and got.mem_efficiency == pytest.approx(0.9, rel=0.02)
    assert max(abs(e) for v in row_errors(rows, got).values() for e in v) < 0.01
    # a GPU's rows (no host_sync) are fitted without regimes
    assert "cache_bytes" not in fit_element_ops(cpu, rows).update


def test_the_cpu_plan_finds_fresh_memory_where_glibc_maps_each_block_anew():
    """glibc's malloc maps a block anew for each op (faulting it in) only above 32 MiB: below, its
    dynamic threshold reuses a freed block. The full CPU plan's copies bracket that closely enough that
    a 30 MiB output (topk's gather at T 1,536) is not priced as fresh."""
    pytest.importorskip("torch")
    from attncost.profiler.calibrate import plan_for

    cpu = get_hardware("cpu")
    truth = cpu.model_copy(update={"host_sync": True, "kernel_latency_s": 2e-6, "mem_efficiency": 0.9,
                                   "cache_bytes": 12 * 2**20, "dram_eff": 0.25, "fresh_bytes": 32 * 2**20,
                                   "fresh_s_per_byte": 3.4e-10})
    plan = plan_for("cpu")
    rows = [{"op": op, "dtype": "float32", "elems": n, "bytes": 8 * n, "out_bytes": 4 * n if op == "copy" else 0}
            for n in sorted(set(plan.elems) | set(plan.fresh)) for op in ("copy", "copy_")]
    for r in rows:
        r["ms"] = predict_row(r, truth) * 1e3
    got = fit_element_ops(cpu.model_copy(update={"host_sync": True}), rows).update
    assert 30 * 2**20 < got["fresh_bytes"] <= 32 * 2**20


def test_decode_attention_rows_fit_the_query_term(synth):
    """SDPA rows of one query per head (decode) tell ``q_half`` where they are compute-bound (a CPU);
    square rows alone leave it 0."""
    cpu = get_hardware("cpu")
    flash = cpu.attention["flash"].model_copy(update={"q_half": 12.0})
    truth = cpu.model_copy(update={"attention": {"flash": flash}})
    square = [r for r in synth if r["op"] == "sdpa" and r["backend"] == "flash"]
    decode = [{"op": "sdpa", "backend": "flash", "dtype": "float32", "B": 8, "H": 16, "T": T, "Tq": 1, "dh": dh,
               "causal": False} for T in (4096, 32768) for dh in (64, 128)]
    rows = [{**r, "ms": predict_row(r, truth) * 1e3} for r in square + decode]
    fitted = fit_attention(cpu, rows, mem_eff=flash.mem_eff, min_latency_s=1e-6).update["attention"]["flash"]
    assert fitted.q_half == pytest.approx(12.0, rel=0.05)
    assert max(abs(e) for e in row_errors(rows, cpu.model_copy(update={"attention": {"flash": fitted}}))[
        "sdpa:flash"]) < 0.02
    assert fit_attention(cpu, rows[:len(square)], mem_eff=0.9,
                         min_latency_s=1e-6).update["attention"]["flash"].q_half == 0.0


def test_sequence_overhead_is_what_an_op_takes_more_among_others():
    rows = [{"op": f"eager_tiny_{c}", "us_per_op": us} for c, us in (("op", 4.0), ("matmul", 2.0), ("view", 1.0),
                                                                     ("sdpa", 8.0), ("index", 3.0))]
    seq = {"op": "eager_sequence", "us_per_op": 6.0,
           "classes": {"matmul": 1, "op": 1, "view": 4, "sdpa": 1, "index": 1}}
    part = fit_host_time(rows + [seq])
    alone = (2.0 + 4.0 + 4 * 1.0 + 8.0 + 3.0) / 8  # 2.625 us per op, each in its own loop
    assert part.update["sequence_overhead_s"] == pytest.approx((6.0 - alone) * 1e-6)
    hw = H100_PUBLISHED.model_copy(update=part.update)
    assert predict_row(seq, hw) == pytest.approx(6e-6)
    assert fit_host_time(rows + [dict(seq, us_per_op=1.0)]).update["sequence_overhead_s"] == 0.0  # never below 0
    assert "sequence_overhead_s" not in fit_host_time(rows[:2] + [seq]).update  # a class of the turn unmeasured


def test_matrix_vector_rows_get_a_law_of_their_own_where_it_prices_them_better(synth):
    """Rows of m = 1 that stream their matrix (a BLAS gemv) beside rows of the matmul law: the law is
    fitted to the others and ``gemv_mem_eff`` to them; rows that all follow the one law keep one law."""
    cpu = get_hardware("cpu")
    law = cpu.matmul["fp32"].model_copy(update={"mn_half": 20.0})
    truth = cpu.model_copy(update={"matmul": {"fp32": law.model_copy(update={"gemv_mem_eff": 0.3})}})
    grid = [{"op": "mm", "dtype": "float32", "M": m, "K": k, "N": n} for m in (1, 4, 16, 64, 256)
            for k in (256, 1024, 4096) for n in (256, 1024, 4096)]
    rows = [{**r, "ms": predict_row(r, truth) * 1e3} for r in grid]
    fitted = fit_matmul(cpu, rows).update["matmul"]["fp32"]
    assert fitted.gemv_mem_eff == pytest.approx(0.3, rel=0.05)
    assert fitted.mn_half == pytest.approx(20.0, rel=0.1)
    one_law = cpu.model_copy(update={"matmul": {"fp32": law}})
    plain = [{**r, "ms": predict_row(r, one_law) * 1e3} for r in grid]
    assert fit_matmul(cpu, plain).update["matmul"]["fp32"].gemv_mem_eff is None


def test_a_matmul_beyond_the_caches_gets_a_slow_regime_where_the_rows_show_one(synth):
    """On a CPU profile (one with a cache law), rows of a few rows by matrices beyond some size that run
    at a small share of the bandwidth (a gemm reading its matrix block by block) give the matmul law a
    slow regime: its knee between the sizes measured, its share as the rows ran; rows without one, none."""
    cpu = get_hardware("cpu").model_copy(update={"cache_bytes": 32e6, "dram_eff": 0.3})
    law = cpu.matmul["fp32"].model_copy(update={"mn_half": 20.0})
    slow = law.model_copy(update={"cache_bytes": 6e6, "dram_eff": 0.05})
    grid = [{"op": "mm", "dtype": "float32", "M": m, "K": k, "N": n} for m in (4, 16, 64, 256)
            for k in (256, 512, 1024, 4096) for n in (256, 1024, 4096)]
    rows = [{**r, "ms": predict_row(r, cpu.model_copy(update={"matmul": {"fp32": slow}})) * 1e3} for r in grid]
    fitted = fit_matmul(cpu, rows).update["matmul"]["fp32"]
    sizes = sorted(4 * (r["M"] * r["K"] + r["K"] * r["N"] + r["M"] * r["N"]) for r in grid)
    below, above = max(x for x in sizes if x <= 6e6), min(x for x in sizes if x > 6e6)
    assert below < fitted.cache_bytes < above
    assert fitted.dram_eff == pytest.approx(0.05, rel=0.05)
    plain = [{**r, "ms": predict_row(r, cpu.model_copy(update={"matmul": {"fp32": law}})) * 1e3} for r in grid]
    assert fit_matmul(cpu, plain).update["matmul"]["fp32"].cache_bytes is None
    assert fit_matmul(get_hardware("cpu"), rows).update["matmul"]["fp32"].cache_bytes is None  # no cache law


def test_decode_batched_matrix_vector_rows_are_fitted_with_the_matrix_vector_law(synth):
    """Decode's ``bmv`` rows (one query row per batch and head against T keys) join the matmul fit as
    rows of m = 1: without any unbatched m = 1 row, they alone give ``gemv_mem_eff``, and a profile
    prices them with it."""
    cpu = get_hardware("cpu")
    law = cpu.matmul["fp32"].model_copy(update={"mn_half": 20.0, "gemv_mem_eff": 0.3})
    truth = cpu.model_copy(update={"matmul": {"fp32": law}})
    grid = [{"op": "mm", "dtype": "float32", "M": m, "K": k, "N": n} for m in (4, 16, 64, 256)
            for k in (256, 1024, 4096) for n in (256, 1024, 4096)]
    grid += [{"op": op, "dtype": "float32", "BH": bh, "T": t, "dh": 64} for op in ("bmv_qk", "bmv_pv")
             for bh, t in ((8, 256), (32, 1024), (16, 4096))]
    rows = [{**r, "ms": predict_row(r, truth) * 1e3} for r in grid]
    part = fit_matmul(cpu, rows)
    assert part.update["matmul"]["fp32"].gemv_mem_eff == pytest.approx(0.3, rel=0.05)
    assert "6 bmv" in part.what[0]
    pv = rows[-1]  # 16 x (1 x 4096) @ (4096 x 64): the latency, then its bytes streamed
    assert predict_row(pv, truth) == pytest.approx(law.latency_s + 4.0 * 16 * (4096 + 4096 * 64 + 64)
                                                   / (cpu.mem_bandwidth * 0.3))
    assert row_errors(rows, truth)["bmv"] == pytest.approx([0.0] * 6, abs=1e-9)


def test_a_module_call_is_what_a_linear_called_as_a_module_takes_beyond_its_matmul():
    rows = [{"op": "eager_tiny_matmul", "us_per_op": 9.0}, {"op": "eager_tiny_module", "us_per_op": 17.5}]
    part = fit_host_time(rows)
    assert part.update["module_overhead_s"] == pytest.approx(8.5e-6)
    assert part.update["matmul_overhead_s"] == pytest.approx(9e-6)
    hw = H100_PUBLISHED.model_copy(update=part.update)
    assert predict_row(rows[1], hw) == pytest.approx(17.5e-6)
    assert "module_overhead_s" not in fit_host_time(rows[1:]).update  # without the matmul row: not told apart
    faster = [rows[0], {"op": "eager_tiny_module", "us_per_op": 8.0}]
    assert fit_host_time(faster).update["module_overhead_s"] == 0.0


def test_calibrate_names_the_pace_of_matrix_vector_products_where_fitted():
    from attncost.cli import calibrate as view

    cpu = get_hardware("cpu")
    assert view._gemv(cpu) == ""
    fast = cpu.model_copy(update={"matmul": {"fp32": cpu.matmul["fp32"].model_copy(update={"gemv_mem_eff": 0.5})}})
    assert view._gemv(fast) == "; matrix-vector products (m = 1) stream their matrix at 25.6 GB/s in fp32"


def test_the_autograd_engine_is_what_two_chains_take_beyond_their_ops():
    """A chain of 16 ops from a leaf and its backward, and a chain of 1: the engine's time per node
    from their difference, the backward call's own from the rest (``fit._chain_s``)."""
    from attncost.costmodel.fit import CHAIN

    op, view, node, call = 4e-6, 1e-6, 2.5e-6, 40e-6
    rows = [{"op": "eager_tiny_op", "us_per_op": op * 1e6}, {"op": "eager_tiny_view", "us_per_op": view * 1e6},
            {"op": "eager_tiny_autograd", "us_per_op": (call + (CHAIN + 1) * node + 2 * CHAIN * op + view) * 1e6},
            {"op": "eager_tiny_backward", "us_per_op": (call + 2 * node + 2 * op + view) * 1e6}]
    part = fit_host_time(rows)
    assert part.update["autograd_node_s"] == pytest.approx(node)
    assert part.update["backward_call_s"] == pytest.approx(call)
    hw = H100_PUBLISHED.model_copy(update=part.update)
    assert [predict_row(r, hw) for r in rows] == pytest.approx([r["us_per_op"] * 1e-6 for r in rows])
    assert "autograd_node_s" not in fit_host_time(rows[:1] + rows[2:3]).update  # one chain: not told apart


def test_calibrate_names_where_matmuls_slow_beyond_the_caches():
    from attncost.cli import calibrate as view

    cpu = get_hardware("cpu")
    assert view._slow_matmuls(cpu) == ""
    e = cpu.matmul["fp32"].model_copy(update={"cache_bytes": 4 * 2**20, "dram_eff": 0.1})
    slow = cpu.model_copy(update={"matmul": {"fp32": e}})
    assert view._slow_matmuls(slow) == (
        "; matmuls of several rows move their bytes at most at 5.12 GB/s beyond 4 MiB in fp32")


def test_attention_backward_is_fitted_on_its_own_rows(synth):
    """Backward rows made by a profile whose flash backward takes 1.4x its law (FLOPs 2.5x the forward's)
    give back 1.4; the forward law is fitted as before, and without backward rows the factor stays 1."""
    truth = get_hardware("h100")
    slow = truth.model_copy(update={"attention": {
        **truth.attention, "flash": truth.attention["flash"].model_copy(update={"backward": 1.4})}})
    back = [{"op": "sdpa_backward", "backend": "flash", "dtype": "bfloat16", "B": B, "H": 16, "T": T, "dh": dh,
             "causal": True} for B, T, dh in ((4, 4096, 128), (16, 1024, 64), (2, 8192, 128))]
    for r in back:
        r["ms"] = predict_row(r, slow) * 1e3
    sdpa = [r for r in synth if r["op"] == "sdpa"]
    part = fit_attention(H100_PUBLISHED, sdpa + back, mem_eff=0.9, min_latency_s=1e-6)
    att = part.update["attention"]
    assert att["flash"].backward == pytest.approx(1.4, rel=0.05)
    assert att["cudnn"].backward == 1.0 and any("backward (3 rows)" in w for w in part.what)
    alone = fit_attention(H100_PUBLISHED, sdpa, mem_eff=0.9, min_latency_s=1e-6).update["attention"]
    assert alone["flash"].backward == 1.0
    assert alone["flash"].max_eff == att["flash"].max_eff  # the backward rows do not move the forward law
    one = dict(back[0], ms=back[0]["ms"] * 1e3)  # a row 1,000x off is clipped, not believed
    assert fit_attention(H100_PUBLISHED, sdpa + [one], mem_eff=0.9, min_latency_s=1e-6).update[
        "attention"]["flash"].backward == 8.0
    assert set(row_errors(back, slow)) == {"sdpa_backward:flash"}


def test_a_fused_kernels_pace_beyond_the_caches_is_fitted_where_rows_pass_them():
    """A CPU's decode attention streams K and V block by block: beyond the profile's ``cache_bytes`` at its
    own share of the bandwidth (``dram_eff``). Rows made by a profile whose flash kernel streams at 0.2 there
    give it back; rows that all stay within the caches fit none."""
    cpu = get_hardware("cpu")
    law = AttentionEfficiency(max_eff=0.2, dh_half=20.0, keys_half=40.0, causal_tile=400.0, q_half=5.0,
                              mem_eff=0.8, latency_s=1e-5, packs_groups=False)
    base = cpu.model_copy(update={"cache_bytes": 16 * 2**20, "dram_eff": 0.4, "attention": {"flash": law},
                                  "attention_backend": "flash"})
    truth = base.model_copy(update={"attention": {"flash": law.model_copy(update={"dram_eff": 0.2})}})
    shapes = [(max(1, 2048 // T), 4, T, dh, True, None) for T in (64, 256, 1024, 2048) for dh in (32, 64)] + [
        (2, 4, T, dh, False, 1) for T in (64, 256, 1024) for dh in (32, 64)]
    beyond = [(1, 8, 16384, 64, False, 1), (1, 4, 8192, 128, False, 1), (2, 8, 16384, 64, False, 1)]
    def rows(specs):
        out = []
        for B, H, T, dh, causal, q in specs:
            r = {"op": "sdpa", "backend": "flash", "dtype": "float32", "B": B, "H": H, "T": T, "dh": dh,
                 "causal": causal, **({"Tq": q} if q else {})}
            out.append(dict(r, ms=predict_row(r, truth) * 1e3))
        return out
    fitted = fit_attention(base, rows(shapes + beyond), mem_eff=0.8, min_latency_s=1e-6).update["attention"]
    assert fitted["flash"].dram_eff == pytest.approx(0.2, rel=0.1)
    within = fit_attention(base, rows(shapes), mem_eff=0.8, min_latency_s=1e-6).update["attention"]
    assert within["flash"].dram_eff is None
    r = rows(beyond[:1])[0]
    assert predict_row(r, truth) > 1.5 * predict_row(r, base)  # the profile's own pace there (0.4) is twice as fast
