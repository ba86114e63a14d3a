"""costmodel.fit: microbenchmark rows, and a profile fitted to them, family by family."""

import json
import statistics

import pytest

from attncost.costmodel.fit import (fit_attention, fit_element_ops, fit_host_time, fit_matmul, fit_profile,
                                    measured_s, predict_row, row_dtype, row_errors)
from attncost.costmodel.hardware import H100_MICROBENCH, H100_PUBLISHED, get_hardware

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
