"""TEST FIXTURES for the report tests: synthetic results files, NOT measurements.

Predictions are the cost model's own (``estimate()`` with the built-in a100 profile, which each
run names). "Measured" times are those
predictions times a fixed per-variant factor with a small deterministic jitter, p10/p90 at
-3%/+5%; peak memory is the model's fused peak plus 8%. They exist to exercise the report, and
every run says so in its device name.
"""

import hashlib

from attncost.costmodel.estimate import estimate
from attncost.costmodel.hardware import get_hardware
from attncost.costmodel.results import Counts, Environment, Point, Run, Timing
from attncost.costmodel.shape import Shape

HW = "a100"
FACTOR = {"mha": 1.35, "flash": 0.92, "gqa": 0.95, "mqa": 0.97, "linformer": 1.25, "performer": 1.6,
          "nystrom": 1.4, "msla": 1.2, "topk": 1.8, "mlp_attention": 1.3, "sliding_window": 1.05,
          "mla": 1.1, "dsa": 1.5}
VARIANTS = (("flash", {}), ("mha", {}), ("gqa", {}), ("linformer", {"k": 256}), ("performer", {}),
            ("nystrom", {}), ("msla", {}))


def _hardware():
    return get_hardware(HW)


def _jitter(key: str) -> float:
    return 1.0 + (int(hashlib.md5(key.encode()).hexdigest()[:6], 16) / 0xFFFFFF - 0.5) * 0.1


def point(variant, params, shape, hw, status="ok", message=None, counts=True) -> Point:
    e = estimate(variant, shape, params, hw)
    pred = e.time_s
    p = Point(variant=variant, params=e.params, shape=shape, status=status, message=message,
              predicted_time_s=pred, predicted_flops=e.flops,
              predicted_activation_bytes=e.activation_bytes_fused,
              backend="flash" if variant in ("flash", "gqa") else None)
    if status == "ok":
        m = pred * FACTOR.get(variant, 1.2) * _jitter(f"{variant}{shape.T}{shape.d}")
        p.timing = Timing(median_s=m, p10_s=m * 0.97, p90_s=m * 1.05, repetitions=20)
        p.peak_memory_bytes = e.activation_bytes_fused * 1.08
        if counts:
            p.counts = Counts(analytic=e.flops, analytic_matmul=e.flops_matmul, fvcore=e.flops_matmul,
                              flop_counter=e.flops_matmul if variant != "flash" else 2 * e.flops_matmul,
                              fvcore_skipped={"aten::softmax": 1} if variant == "mha" else {},
                              flop_counter_skipped=[])
    return p


def environment(name="NVIDIA A100-SXM4-80GB", **extra) -> Environment:
    return Environment(device="cuda", device_name=f"{name} (synthetic test fixture)", driver="550.54",
                       torch="2.11.0", cuda="12.8", python="3.11.9", platform="Linux-x86_64",
                       hardware_profile=HW, **extra)


def full_run(Ts=(512, 1024, 2048, 4096, 8192, 16384, 32768), d=2048, heads=16, name="") -> Run:
    """Seven variants over T, with an OOM (mha at the largest T) and an error point."""
    hw = _hardware()
    pts = []
    for v, params in VARIANTS:
        for T in Ts:
            shape = Shape(T=T, d=d, heads=heads)
            if v == "mha" and T == max(Ts) and len(Ts) > 2:
                pts.append(point(v, params, shape, hw, status="oom",
                                 message="CUDA out of memory. Tried to allocate 32.00 GiB"))
            elif v == "performer" and T == max(Ts) and len(Ts) > 2:
                pts.append(point(v, params, shape, hw, status="error",
                                 message="RuntimeError: shape '[1, 16, -1]' is invalid <b>&</b>"))
            else:
                pts.append(point(v, params, shape, hw))
    return Run(name=name, command="attncost profile --d 2048 --T 512:32768 --variants flash,mha,gqa,"
               "linformer,performer,nystrom,msla -o run.json", created="2026-01-01T00:00:00Z",
               environment=environment(sdpa_backend="flash"), points=pts)


def single_point_run() -> Run:
    hw = _hardware()
    return Run(name="single point", command="attncost profile --T 4096 --variants flash",
               environment=environment(), points=[point("flash", {}, Shape(T=4096, d=1024, heads=8), hw)])


def no_ok_run() -> Run:
    hw = _hardware()
    s = Shape(T=65536, d=4096, heads=32)
    return Run(name="nothing ran", command="attncost profile --T 65536",
               environment=environment(), points=[
                   point("mha", {}, s, hw, status="oom", message="CUDA out of memory"),
                   point("flash", {}, s, hw, status="error", message="no kernel image"),
                   Point(variant="linformer", params={"k": 256}, shape=s.with_(phase="decode"), status="n/a",
                         message="linformer has no decode path")])


XSS = "<script>alert(1)</script>"


def xss_run() -> Run:
    """Every user string hostile: the run name, the command, a message, a param, a variant."""
    hw = _hardware()
    s = Shape(T=1024, d=512, heads=4)
    pts = [point("flash", {}, s, hw), point("flash", {}, s.with_(T=2048), hw),
           point("mha", {}, s, hw, status="error", message="<img src=x onerror=alert(2)> & \"quoted\""),
           Point(variant="<svg onload=alert(3)>", params={"k": "<i>x</i>"}, shape=s, status="ok",
                 timing=Timing(median_s=1e-3, p10_s=0.9e-3, p90_s=1.1e-3, repetitions=3), predicted_time_s=2e-3)]
    return Run(name=XSS, command="attncost profile --name '<script>alert(1)</script>' </pre><b>x</b>",
               environment=environment(name="<b>GPU</b> & co"), points=pts)
