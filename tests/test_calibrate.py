"""profiler.calibrate and `attncost calibrate` on the CPU: rows in the reference file's format, a
fitted profile that --hardware loads, the raw rows beside it, bad flags."""

import json

import pytest

torch = pytest.importorskip("torch")

from attncost.costmodel.fit import ELEMENT_OPS, HOST_ROWS, TOPK_PATH_ROWS  # noqa: E402
from attncost.costmodel.hardware import Hardware, get_hardware  # noqa: E402
from attncost.costmodel.opkinds import HOST_CLASSES, KINDS  # noqa: E402
from attncost.costmodel.results import Timing  # noqa: E402
from attncost.profiler import calibrate as C  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")

# the keys of each row kind in /work/shared/data/h100-microbench-2026-11-22.json
REFERENCE_KEYS = {
    "mm": {"op", "dtype", "M", "K", "N", "ms", "tflops"},
    "bmm_qk": {"op", "dtype", "BH", "T", "dh", "ms", "tflops"},
    "bmm_pv": {"op", "dtype", "BH", "T", "dh", "ms", "tflops"},
    "softmax": {"op", "dtype", "elems", "ms", "GBps"},
    "copy": {"op", "dtype", "elems", "ms", "GBps"},
    "exp": {"op", "dtype", "elems", "ms", "GBps"},
    "add": {"op", "dtype", "elems", "ms", "GBps"},
    "sum": {"op", "dtype", "elems", "ms", "GBps"},
    "cumsum": {"op", "dtype", "elems", "ms", "GBps"},
    "eager_tiny_op": {"op", "us_per_op"},
    "eager_tiny_matmul": {"op", "us_per_op"},
    "sdpa": {"op", "backend", "B", "H", "T", "dh", "causal", "ms", "tflops"},
}
# rows beyond the reference file's: every other op kind, the bytes each moves, and every host class
NEW_KEYS = {**{op: {"op", "dtype", "elems", "ms", "GBps", "bytes", "out_bytes"} for op in (
    "copy_", "copy_t", "cat", "mul", "masked_fill", "amax", "zeros", "index_select", "gather", "index_add",
    "scatter_add")},
    "topk": {"op", "dtype", "elems", "row", "k", "ms", "GBps", "bytes", "out_bytes"},
    **{f"eager_tiny_{c}": {"op", "us_per_op"} for c in ("view", "sdpa", "index", "module", "autograd", "backward")},
    "eager_sequence": {"op", "us_per_op", "classes"}, "pace": {"op", "when", "ms"},
    **{op: {"op", "dtype", "BH", "T", "dh", "ms", "tflops"} for op in ("bmv_qk", "bmv_pv")},
    "sdpa_backward": {"op", "backend", "dtype", "B", "H", "T", "dh", "causal", "ms", "tflops"}}
# what the time model prices that calibrate measures: every kernel kind but the matmuls' and SDPA's
# (their own rows) and conv / other (no law of their own)
ELEMENT_KINDS = set(KINDS) - {"matmul", "sdpa", "conv", "other"}


def tiny_plan() -> C.Plan:
    grid = [(m, k, n) for m in (1, 16, 64) for k in (16, 64) for n in (16, 64)]  # 12 >= the fit's 8
    return C.Plan(mm={"fp32": grid}, bmm=[(2, 32, 16)], bmm_dtype="fp32", bmv=[(2, 32, 16)], elems=[1024, 16384],
                  vector_dtype="fp32", softmax=[4096], topk=[(4096, 64, 4), (4096, 256, 16)],
                  sdpa=[(1, 2, T, 16, c) for T in (32, 64) for c in (True, False)], sdpa_decode=[(2, 2, 128, 16)],
                  sdpa_backward=[(1, 2, 64, 16, True)],
                  sdpa_backends=("flash", "math", "default"), sdpa_dtype="fp32", tiny_ops=100, budget_s=0.01)


@pytest.fixture(scope="module")
def rows():
    return C.measure_rows("cpu", plan=tiny_plan())


def test_rows_have_the_reference_format(rows):
    ops = {r["op"] for r in rows}
    assert ops == set(REFERENCE_KEYS) | set(NEW_KEYS)
    assert [r["when"] for r in rows if r["op"] == "pace"] == ["first", "last"]  # the first row and the last
    assert rows[0]["op"] == rows[-1]["op"] == "pace"
    for r in rows:
        assert (REFERENCE_KEYS.get(r["op"]) or NEW_KEYS[r["op"]]) <= set(r), r
        if "GBps" in r and "bytes" in r:
            assert r["GBps"] == pytest.approx(r["bytes"] / (r["ms"] * 1e-3) / 1e9, rel=1e-9)
        if "ms" in r:
            assert r["ms"] > 0
        if r["op"] in ("mm", "bmm_qk", "bmm_pv"):
            assert r["dtype"] == "float32"
            flops = 2 * (r["M"] * r["K"] * r["N"] if r["op"] == "mm" else r["BH"] * r["T"] * r["T"] * r["dh"])
            assert r["tflops"] == pytest.approx(flops / (r["ms"] * 1e-3) / 1e12, rel=1e-6)
    sdpa = [r for r in rows if r["op"] == "sdpa"]
    assert {r["backend"] for r in sdpa} == {"flash", "math", "default"}
    causal = next(r for r in sdpa if r["causal"] and r["backend"] == "flash")
    # FlashAttention's convention: causal = half the dense FLOPs
    assert causal["tflops"] == pytest.approx(2 * causal["B"] * causal["H"] * causal["T"] ** 2 * causal["dh"]
                                             / (causal["ms"] * 1e-3) / 1e12, rel=1e-6)
    assert all(r["ran"] == "flash" for r in sdpa if r["backend"] == "default")
    back = [r for r in rows if r["op"] == "sdpa_backward"]
    assert [r["backend"] for r in back] == ["flash"]  # fused backends only: math's backward is autograd's
    assert back[0]["tflops"] == pytest.approx(2.5 * 2 * 2 * 64**2 * 16 / (back[0]["ms"] * 1e-3) / 1e12, rel=1e-6)
    decode = [r for r in sdpa if r.get("Tq")]
    assert {r["backend"] for r in decode} == {"flash", "math", "default"} and {r["Tq"] for r in decode} == {1}
    json.dumps(rows)  # plain JSON


def test_calibrate_writes_a_profile_and_its_rows(tmp_path, rows):
    out = tmp_path / "cpu.json"
    result = C.calibrate("cpu", out, rows=rows)
    hw = get_hardware(str(out))
    assert isinstance(hw, Hardware) and hw == result["hardware"]
    assert hw.name.startswith("calibrated-") and "cpu" in hw.description
    assert "attncost calibrate" in hw.calibration and "matmul fp32" in hw.calibration
    assert "flash" in hw.attention
    assert hw.tensor_peak("fp32") >= max(r["tflops"] for r in rows if r["op"] == "mm") * 1e12
    side = json.loads((tmp_path / "cpu.microbench.json").read_text())
    assert side["rows"] == rows and side["device"] and side["torch"] == torch.__version__
    assert result["rows_path"] == tmp_path / "cpu.microbench.json"
    assert (out.stat().st_mode & 0o077) != 0 or (out.stat().st_mode & 0o600) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_every_plan_measures_every_kind_and_host_class():
    for device in ("cpu", "cuda", "mps"):
        for quick in (False, True):
            p = C.plan_for(device, quick)
            kinds = {ELEMENT_OPS[op][0] for op in p.ops}
            assert kinds | {"softmax", "topk"} == ELEMENT_KINDS and p.softmax and p.topk, (device, quick)
            assert {HOST_ROWS["eager_tiny_" + h] for h in p.host} == set(HOST_ROWS.values())
            assert len({row for _, row in p.softmax}) >= 2 and len({k for *_, k in p.topk}) >= 2
    assert len(HOST_ROWS) == len(HOST_CLASSES) + 1  # the autograd engine: a row per node, one per backward call


@pytest.fixture
def instant_timer(monkeypatch):
    """calibrate's timers replaced by ones that return at once (the fit's accuracy is test_fit's; the
    real --quick run, seconds long, is timed outside the tests)."""
    calls = []

    def instant(fn, device, **kw):
        calls.append(fn)
        t = 1e-5 * (1 + len(calls) % 7 / 10)
        return Timing(median_s=t, p10_s=t, p90_s=t, repetitions=1, min_s=t)

    monkeypatch.setattr(C, "measure", instant)
    monkeypatch.setattr(C, "_host_rows", lambda device, classes, n, budget_s: [
        {"op": C.TINY + c, "us_per_op": 5.0} for c in classes] + [
        {"op": C.SEQUENCE_ROW, "us_per_op": 6.0, "classes": {"op": 1, "view": 3}}])


def test_quick_calibration_fits_every_kind_and_host_class(tmp_path, instant_timer):
    """The --quick plan end to end: a law for every kind, a host time for every class."""
    hw = C.calibrate("cpu", tmp_path / "q.json", quick=True)["hardware"]
    assert ELEMENT_KINDS <= {*hw.vector_eff, *hw.vector_latency}
    assert all(getattr(hw, f) is not None for f in HOST_ROWS.values())
    assert hw.sequence_overhead_s == pytest.approx(1e-6)  # 6 us per op in turn, 5 us each alone
    assert hw.host_sync and {"softmax", "reduction", "topk"} <= set(hw.vector_row_s) and hw.topk_select_s > 0
    assert hw.topk_paths is not None  # PyTorch's CPU topk by its two paths
    ops = {r["op"] for r in json.loads((tmp_path / "q.microbench.json").read_text())["rows"]}
    assert ops >= set(HOST_ROWS) | {op for op, (kind, _) in ELEMENT_OPS.items() if kind in ELEMENT_KINDS} - {
        "relu", "mean", "max"}


def test_sidecar_path():
    assert C.sidecar_path("a/hw.json").as_posix() == "a/hw.microbench.json"
    assert C.sidecar_path("hw").as_posix() == "hw.microbench.json"


def test_summary_headlines(rows):
    s = C.summary(rows)
    assert s["matmul float32 TFLOP/s (best)"] > 0
    assert s["eager_tiny_op us/op"] > 0 and "copy GB/s (largest, float32)" in s


def test_plans_fit_the_fit():
    """Every default plan gives the fit enough rows: 8 mm rows per dtype, 4 sdpa rows per backend."""
    for device in ("cpu", "cuda", "mps"):
        for quick in (False, True):
            p = C.plan_for(device, quick)
            for dt, grid in p.mm.items():
                assert not grid or len(grid) >= 8, (device, quick, dt)
            fused = [b for b in p.sdpa_backends if b not in ("math", "default")]
            assert not fused or (len(p.sdpa) >= 4 and p.sdpa_backward), (device, quick)
            if device == "cpu":  # TopkPaths: rows on both paths of the CPU kernel
                partial = sum(k * 64 <= row for _, row, k in p.topk)
                assert min(partial, len(p.topk) - partial) >= TOPK_PATH_ROWS, quick


# -- the command line ------------------------------------------------------------------------
def invoke(args):
    from typer.testing import CliRunner

    from attncost.cli.main import app

    return CliRunner().invoke(app, args)


def test_cli_calibrate_quick_on_cpu(tmp_path, instant_timer):
    out = tmp_path / "mine.json"
    r = invoke(["calibrate", "--device", "cpu", "--quick", "--out", str(out)])
    assert r.exit_code == 0, r.output
    hw = get_hardware(str(out))
    assert hw.name.startswith("calibrated-")
    assert (tmp_path / "mine.microbench.json").exists()
    assert str(out) in r.stdout and "--hardware" in r.stdout


@pytest.mark.parametrize("args, flag", [
    (["--device", "tpu"], "--device"),
    (["--out", "profile.txt"], "--out"),
])
def test_cli_calibrate_bad_flags(tmp_path, args, flag):
    r = invoke(["calibrate"] + args)
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and flag in lines[0] and lines[0].endswith(".")
    assert "Traceback" not in r.output


def test_cli_calibrate_out_is_a_folder(tmp_path):
    r = invoke(["calibrate", "--device", "cpu", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "folder" in r.stderr


def test_summary_names_the_fused_attention_speedup():
    from attncost.cli.calibrate import _speedup

    cpu = get_hardware("cpu").model_copy(update={"threads": 2, "attention_speedup": 1.53})
    assert "its 2 threads 1.53x as fast as one" in _speedup(cpu)
    assert _speedup(get_hardware("h100")) == ""


def test_summary_names_the_attention_heads_dims_and_backward():
    from attncost.cli.calibrate import _attention

    h100 = get_hardware("h100")
    flash = h100.attention[h100.attention_backend]
    fitted = h100.model_copy(update={"attention": {
        **h100.attention, h100.attention_backend: flash.model_copy(update={"dh_cap": 256.0, "backward": 1.23,
                                                                           "dram_eff": 0.5})}})
    assert h100.mem_bandwidth == 3.35e12
    assert _attention(fitted) == (" (fitted up to head dim 256; beyond the caches at 1,675 GB/s; its backward 1.23x "
                                  "the forward's law for 2.5x the FLOPs)")
    plain = flash.model_copy(update={"dh_cap": None})
    assert _attention(h100.model_copy(update={"attention": {h100.attention_backend: plain}})) == ""


def test_cpu_plans_time_attention_at_the_latent_head_dims():
    """MLA and DSA attend over their latent (rank + rope dims, 288 at the default rank of 256): a fused
    call's law is fitted up to head dim 256 (``dh_cap``: no further), not capped at 64."""
    for quick in (False, True):
        assert max(dh for *_, dh, _ in C.plan_for("cpu", quick).sdpa) >= 256


def test_cpu_plans_time_decode_attention_beyond_the_caches():
    """Two decode rows or more whose K and V pass a CPU's last-level cache as far as a calibration may place it
    (64 MiB in fp32), so that the fit can give the fused kernel its own pace there (``fit.DRAM_ROWS``)."""
    from attncost.costmodel.fit import DRAM_ROWS

    for quick in (False, True):
        big = [r for r in C.plan_for("cpu", quick).sdpa_decode if 2 * r[0] * r[1] * r[2] * r[3] * 4 >= 64 * 2**20]
        assert len(big) >= DRAM_ROWS, quick
