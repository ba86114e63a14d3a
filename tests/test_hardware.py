"""Hardware profiles: built-ins, JSON files, errors in one sentence, atomic save, the fitted H100."""

import json
import os

import pytest

from attncost.costmodel import hardware as H
from attncost.costmodel.hardware import (H100_MICROBENCH, H100_PUBLISHED, Hardware, HardwareError, get_hardware,
                                         hardware_names, list_hardware)

NAMES = ("h100", "h200", "a100", "l4", "rtx4090", "m2-max", "m3-max", "cpu")


def test_builtins_load_in_order():
    assert hardware_names() == NAMES
    profiles = list_hardware()
    assert [h.name for h in profiles] == list(NAMES)
    for h in profiles:
        assert isinstance(h, Hardware)
        assert set(h.peak_flops) == {"bf16", "fp16", "fp32"}
        assert h.source and h.description and h.calibration
        assert h.mem_bandwidth > 0 and h.mem_bytes > 0 and h.vector_flops > 0
        assert h.attention_backend in h.attention


@pytest.mark.parametrize("name", ["H100", "h100", " A100 ", "M2-Max", "CPU"])
def test_names_are_case_insensitive(name):
    assert get_hardware(name).name == name.strip().lower()


def test_published_peaks():
    h = get_hardware("h100")
    assert h.peak_flops == {"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 494.7e12}
    assert h.vector_flops == 66.9e12 and h.mem_bandwidth == 3.35e12 and h.mem_bytes == 80 * 2**30
    assert "datasheet" in h.source
    assert get_hardware("h200").mem_bandwidth == 4.8e12 and get_hardware("h200").mem_bytes == 141 * 2**30
    assert get_hardware("a100").peak_flops["bf16"] == 312e12 and get_hardware("a100").mem_bandwidth == 2.039e12
    assert get_hardware("l4").peak_flops["bf16"] == 121e12 and get_hardware("l4").mem_bandwidth == 300e9
    assert get_hardware("rtx4090").peak_flops["bf16"] == 165.2e12


def test_fitted_h100_keeps_published_peaks_as_ceilings():
    h = get_hardware("h100")
    for key in ("peak_flops", "vector_flops", "mem_bandwidth", "mem_bytes", "source"):
        assert getattr(h, key) == getattr(H100_PUBLISHED, key)
    shares = [h.mem_efficiency, *h.vector_eff.values()]
    shares += [e.max_eff for e in h.matmul.values()] + [e.mem_eff for e in h.matmul.values()]
    shares += [e.max_eff for e in h.attention.values()] + [e.mem_eff for e in h.attention.values()]
    assert all(0 < s <= 1 for s in shares)
    assert "h100-microbench-2026-11-22.json" in h.calibration
    assert h.attention_backend == "cudnn"  # torch 2.11's default choice there, and the fastest
    assert h.fp32_matmul == "ieee"  # the fp32 rows ran at ~52 TFLOP/s: CUDA cores, not TF32


def test_h200_reuses_the_h100_fit():
    h100, h200 = get_hardware("h100"), get_hardware("h200")
    assert h200.matmul == h100.matmul and h200.attention == h100.attention
    assert "H200" in h200.source and "H100" in h200.calibration


def test_committed_h100_profile_is_reproducible():
    """data/h100-microbench.json is what fit_profile makes of the raw rows (bench/calibrate_from_microbench.py)."""
    from attncost.costmodel.fit import fit_profile

    rows = json.loads(H100_MICROBENCH.read_text())["rows"]
    fresh = fit_profile(H100_PUBLISHED, rows, exclude_ops=("cumsum",))
    committed = get_hardware("h100")
    for key in ("launch_overhead_s", "matmul_overhead_s", "kernel_latency_s", "mem_efficiency"):
        assert getattr(fresh, key) == pytest.approx(getattr(committed, key), rel=1e-6), key
    assert fresh.vector_eff == pytest.approx(committed.vector_eff, rel=1e-6)
    for dt, e in committed.matmul.items():
        _assert_same_law(fresh.matmul[dt].model_dump(), e.model_dump(), dt)
    for be, e in committed.attention.items():
        _assert_same_law(fresh.attention[be].model_dump(), e.model_dump(), be)
    assert fresh.attention_backend == committed.attention_backend


def _assert_same_law(got: dict, want: dict, what: str) -> None:
    """The same fields; numbers within 1e-6 relative, the rest (None: unset, flags) equal. (pytest's
    approx of a mapping refuses a None value with a relative tolerance from pytest 9.2.)"""
    assert got.keys() == want.keys(), what
    for key, value in want.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert got[key] == pytest.approx(value, rel=1e-6), (what, key)
        else:
            assert got[key] == value, (what, key)


def test_unknown_name_is_one_sentence():
    with pytest.raises(HardwareError) as e:
        get_hardware("foo")
    assert str(e.value) == ("unknown hardware 'foo': choose one of h100, h200, a100, l4, rtx4090, m2-max, "
                            "m3-max, cpu or give a JSON file")
    assert isinstance(e.value, ValueError)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.json"
    with pytest.raises(HardwareError, match=r"^hardware file .*nope\.json does not exist$"):
        get_hardware(str(p))


@pytest.mark.parametrize("text, reason", [
    ('{"name": "x",', r"invalid JSON at line 1 column \d+"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"name": "x", "peak_flops": {"bf16": 1e12, "fp16": 1e12, "fp32": 1e12}, "mem_bandwidth": 1e12, '
     '"mem_bytes": 1e9}', "field vector_flops is missing"),
    ('{"name": "x", "peak_flops": {"bf16": 1e12, "fp16": 1e12, "fp32": 1e12}, "vector_flops": 1e12, '
     '"mem_bandwidth": -1, "mem_bytes": 1e9}', "mem_bandwidth: input should be greater than 0"),
    ('{"name": "x", "peak_flops": {"bf16": 1e12}, "vector_flops": 1e12, "mem_bandwidth": 1e12, '
     '"mem_bytes": 1e9}', "peak_flops has no fp16, fp32"),
    ('{"name": "x", "peak_flops": {"bf16": 1e12, "fp16": 1e12, "fp32": 1e12}, "vector_flops": 1e12, '
     '"mem_bandwidth": 1e12, "mem_bytes": 1e9, "bogus": 1}', "unknown field bogus"),
])
def test_bad_files_are_one_sentence(tmp_path, text, reason):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(HardwareError) as e:
        get_hardware(str(p))
    msg = str(e.value)
    assert msg.startswith(f"hardware file {p} is not a valid profile: ")
    assert "\n" not in msg
    import re

    assert re.search(reason, msg), msg


def test_minimal_file_gets_default_efficiencies(tmp_path):
    p = tmp_path / "mine.json"
    p.write_text(json.dumps({"name": "mine", "peak_flops": {"bf16": 100e12, "fp16": 100e12, "fp32": 50e12},
                             "vector_flops": 20e12, "mem_bandwidth": 1e12, "mem_bytes": 16 * 2**30}))
    h = get_hardware(str(p))
    assert h.name == "mine" and h.matmul_eff("bf16").max_eff > 0 and h.attention_eff().max_eff > 0
    from attncost.costmodel.timing import predict

    assert predict([], h).time_s == 0.0


def test_save_roundtrip_and_atomic(tmp_path, monkeypatch):
    h = get_hardware("h100")
    p = tmp_path / "sub" / "h.json"
    h.save(p)
    assert get_hardware(str(p)) == h
    assert sorted(os.listdir(p.parent)) == ["h.json"]  # no temp file left
    assert p.stat().st_mode & 0o044  # readable by others (mkstemp's 0600 is not kept)
    # a failed write leaves the old file whole and no temp file behind
    before = p.read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(H.os, "replace", boom)
    with pytest.raises(OSError):
        get_hardware("a100").save(p)
    assert p.read_text() == before
    assert sorted(os.listdir(p.parent)) == ["h.json"]


def test_model_copy_gets_its_own_timing_cache():
    from attncost.costmodel.fit import predict_row

    h = get_hardware("h100")
    row = {"op": "copy", "dtype": "bfloat16", "elems": 2**28}
    t1 = predict_row(row, h)
    slow = h.model_copy(update={"mem_bandwidth": h.mem_bandwidth / 2})
    assert predict_row(row, slow) > 1.8 * t1
    assert predict_row(row, h) == t1


def test_cached_builds_once_per_key_and_is_not_part_of_the_value():
    h = get_hardware("a100").model_copy()
    calls = []

    def build():
        calls.append(1)
        return object()

    first = h.cached("probe", build)
    assert h.cached("probe", build) is first and len(calls) == 1
    assert h.cached("probe2", build) is not first and len(calls) == 2
    assert h.cached("probe3", lambda *a: a, 1, 2) == (1, 2)  # build gets the extra arguments
    copy = h.model_copy()
    assert copy == h and copy.cached("probe", build) is not first  # a copy starts without derived values
    assert "probe" not in h.to_json()

    def broken():
        raise HardwareError("no")

    with pytest.raises(HardwareError):
        h.cached("bad", broken)
    assert h.cached("bad", build) is not None  # a failed build keeps nothing


def test_unknown_attention_backend():
    with pytest.raises(HardwareError, match="has no attention backend 'triton'"):
        get_hardware("h100").attention_eff("triton")


def test_eight_bit_peaks_and_their_datasheets():
    """Dense fp8 / int8 tensor peaks (the datasheets' "with sparsity" figures halved): Hopper and
    Ada run fp8 at twice their bf16 rate; the A100 has int8 and no fp8."""
    for name in ("h100", "h200"):
        h = get_hardware(name)
        assert h.peak_flops_8bit == {"fp8": 1978.9e12, "int8": 1978.9e12} and "FP8 3,958" in h.source
        assert h.tensor_peak("fp8") == pytest.approx(2 * h.peak_flops["bf16"], rel=1e-3)
    l4 = get_hardware("l4")
    assert l4.peak_flops_8bit == {"fp8": 242.5e12, "int8": 242.5e12} and "FP8 485" in l4.source
    assert get_hardware("rtx4090").peak_flops_8bit == {"fp8": 330.3e12, "int8": 660.6e12}
    a100 = get_hardware("a100")
    assert a100.peak_flops_8bit == {"int8": 624e12} and "INT8 624" in a100.source and "no FP8" in a100.source
    with pytest.raises(HardwareError, match="a100 has no fp8 tensor cores"):
        a100.tensor_peak("fp8")
    assert get_hardware("cpu").peak_flops_8bit == {}
    assert get_hardware("h100").matmul_eff("fp8") == get_hardware("h100").matmul_eff("bf16")


def test_a_profile_file_without_eight_bit_peaks_still_loads(tmp_path):
    p = tmp_path / "old.json"
    p.write_text(json.dumps({"name": "old", "peak_flops": {"bf16": 1e14, "fp16": 1e14, "fp32": 5e13},
                             "vector_flops": 1e13, "mem_bandwidth": 1e12, "mem_bytes": 1e10}))
    h = get_hardware(str(p))
    assert h.peak_flops_8bit == {}
    with pytest.raises(HardwareError, match="no fp8"):
        h.tensor_peak("fp8")
