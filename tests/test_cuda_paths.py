"""The CUDA (and MPS) paths of `attncost profile`, on the CPU with fakes: points predicted not to
fit are skipped, the math SDPA backend is recorded and priced as what ran, FLOP counting is off by
default on CUDA, a sticky CUDA error stops the run, MPS gets fp16 without bf16, a smaller grid and
no forced fused backend, and a model run builds its stack once per T."""

import pytest

torch = pytest.importorskip("torch")

from attncost.costmodel.estimate import estimate  # noqa: E402
from attncost.costmodel.hardware import get_hardware  # noqa: E402
from attncost.costmodel.results import Environment, Point, Run  # noqa: E402
from attncost.costmodel.shape import Shape  # noqa: E402
from attncost.profiler import device, model_stack, runner, sweep  # noqa: E402
from attncost.profiler.runner import DeviceFailed, guarded, predicted_oom  # noqa: E402
from attncost.profiler.sweep import make_grid, math_path_time, predicted_memory, run_sweep  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(budget_s=0.01, min_reps=2, warmup=0)
ILLEGAL = "CUDA error: an illegal memory access was encountered"


class TinyAttention(torch.nn.Module):
    """Projections and one SDPA call under a forced backend (as the profiler's modules do)."""

    def __init__(self, d, heads, backend):
        super().__init__()
        self.qkv = torch.nn.Linear(d, 3 * d, bias=False)
        self.heads, self.backend = heads, backend

    def forward(self, x):
        B, T, d = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        with device.sdpa_context(self.backend):
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return y.transpose(1, 2).reshape(B, T, d)


class Builder:
    """build_module stand-in: records what it builds, on which device and in which dtype."""

    def __init__(self, fail=None):
        self.calls, self.fail = [], fail or {}

    def __call__(self, variant, shape, params, dev, dtype, backend="auto"):
        self.calls.append((variant, shape.T, dev, dtype))
        if (variant, shape.T) in self.fail:
            raise self.fail[variant, shape.T]
        m = TinyAttention(shape.d, shape.heads, backend).to(device=dev, dtype=dtype)
        return m, (torch.randn(shape.batch, shape.T, shape.d, device=dev, dtype=dtype),)


def shapes(Ts=(32, 64), dtype="fp32"):
    return [Shape(T=t, d=32, heads=2, dtype=dtype) for t in Ts]


def sweep_cpu(path, grid, build, dtype="fp32", **kw):
    kw.setdefault("count", False)
    return run_sweep(path, grid, "cpu", dtype, build_module=build, measure_kwargs=FAST, **kw)


# -- 1. points predicted not to fit ------------------------------------------------------------
def test_a_point_predicted_not_to_fit_is_skipped_before_it_is_built(tmp_path, monkeypatch):
    small, big = (predicted_memory(estimate("flash", s)) for s in shapes())
    assert big > small > 0
    free = (small + big) / 2 / runner.MEMORY_HEADROOM  # room for T=32, not for T=64
    monkeypatch.setattr(runner, "free_memory", lambda dev: free)
    build = Builder()
    run = sweep_cpu(tmp_path / "r.json", make_grid(["flash"], shapes()), build)
    assert [p.status for p in run.points] == ["ok", "oom-predicted"]
    skipped = run.points[1]
    assert "not run" in skipped.message and "GiB" in skipped.message and "predicted" in skipped.message
    assert skipped.predicted_flops > 0 and skipped.timing is None
    assert [c[1] for c in build.calls] == [32]
    assert Run.load(tmp_path / "r.json").points[1].status == "oom-predicted"


def test_unknown_free_memory_skips_nothing_and_held_memory_counts_as_free(monkeypatch):
    point = Point(variant="flash", shape=shapes()[0])
    monkeypatch.setattr(runner, "free_memory", lambda dev: None)  # MPS without a counter
    assert not predicted_oom(point, 1e15, "mps", "it")
    monkeypatch.setattr(runner, "free_memory", lambda dev: 1e9)
    assert not predicted_oom(point, 1.5e9, "cuda", "it", held_bytes=1e9)
    assert predicted_oom(point, 1.5e9, "cuda", "it") and point.status == "oom-predicted"


def test_train_needs_the_weight_gradients_too():
    s = shapes()[0]
    est, train = estimate("flash", s), estimate("flash", s.with_(phase="train"))
    assert predicted_memory(train) >= predicted_memory(est) + est.weights_bytes


def test_reports_count_predicted_ooms_as_out_of_memory():
    from attncost.reports.data import findings, from_runs

    s = Shape(T=4096, d=256, heads=4)
    pts = [Point(variant="flash", shape=s, status="oom-predicted", message="not run: flash needs 9 GiB"),
           Point(variant="mha", shape=s, status="oom", message="CUDA out of memory")]
    text = " ".join(findings(from_runs([Run(environment=Environment(device="cuda"), points=pts)])))
    assert "flash was not run (predicted not to fit in memory) at T = 4,096" in text
    assert "mha ran out of memory at T = 4,096" in text


# -- 2. the math backend -----------------------------------------------------------------------
def test_torchs_math_backend_upcasts_half_precision_here():
    """The installed torch computes math SDPA in fp32 for bf16/fp16 inputs unless told otherwise."""
    assert device.math_upcasts("bf16") and device.math_upcasts("fp16")
    assert not device.math_upcasts("fp32")
    allowed = torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()
    torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(True)
    try:
        assert not device.math_upcasts("bf16")
    finally:
        torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(allowed)


def test_the_math_path_costs_more_than_the_fused_kernel_and_more_in_fp32():
    hw = get_hardware("h100")
    for variant in ("flash", "gqa", "mqa", "sliding_window", "mla"):
        for phase in ("prefill", "decode"):
            s = Shape(T=8192, d=1024, heads=16, phase=phase)
            fused = estimate(variant, s, None, hw).time_s
            bf16, fp32 = (math_path_time(variant, s, None, hw, dt) for dt in ("bf16", "fp32"))
            assert fused < bf16 < fp32, (variant, phase)
    s = Shape(T=8192, d=1024, heads=16)
    assert math_path_time("flash", s, None, hw, "bf16") == pytest.approx(estimate("mha", s, None, hw).time_s,
                                                                          rel=0.05)
    assert math_path_time("flash", s.with_(phase="train"), None, hw, "bf16") is None
    assert math_path_time("dsa", s, None, hw, "bf16") is None  # a fused kernel with a gather in it


@pytest.mark.parametrize("backend", ["math", "auto"])
def test_a_point_that_ran_math_records_it_and_is_priced_as_math(tmp_path, monkeypatch, backend):
    if backend == "auto":  # torch's own choice landing on math, as it does for shapes the fused kernels reject
        monkeypatch.setattr(sweep, "sdpa_backends_used", lambda fn: (fn(), "math")[1])
    hw = get_hardware("h100")
    run = sweep_cpu(tmp_path / "r.json", make_grid(["gqa"], shapes((64,), "bf16")), Builder(), "bf16",
                    backend=backend, hardware=hw)
    p = run.points[0]
    assert p.status == "ok" and p.backend == "math" and p.compute_dtype == "fp32"
    assert p.predicted_time_s == math_path_time("gqa", p.shape, {}, hw, "fp32")
    assert p.predicted_time_s > estimate("gqa", p.shape, None, hw).time_s
    fp32 = sweep_cpu(tmp_path / "f.json", make_grid(["gqa"], shapes((64,))), Builder(), backend="math").points[0]
    assert fp32.backend == "math" and fp32.compute_dtype is None


# -- 3. FLOP counting --------------------------------------------------------------------------
def invoke(args):
    from typer.testing import CliRunner

    from attncost.cli.main import app

    return CliRunner().invoke(app, args)


@pytest.fixture
def fake_device(monkeypatch):
    """Pretend this machine has ``kind`` ("cuda" or "mps"); run_sweep / run_models only record
    what they were asked to run."""
    seen = {}

    def use(kind, bf16=True):
        names = {"cuda": "NVIDIA H100 80GB HBM3", "mps": "Apple M1 Max"}
        monkeypatch.setattr(device, "resolve_device", lambda requested="auto": kind)
        monkeypatch.setattr(device, "device_name", lambda dev: names[dev])
        monkeypatch.setattr(device, "environment", lambda dev, dt, hardware_profile=None: Environment(
            device=dev, device_name=names[dev], hardware_profile=hardware_profile))
        monkeypatch.setattr(device, "dtype_supported", lambda dev, dt: bf16 or dt != "bf16")

        def fake_run(path, grid, dev, dt, count=True, **common):
            seen.update(grid=grid, dev=dev, dt=dt, count=count)
            return Run(environment=common["env"], dtype=dt)

        monkeypatch.setattr(sweep, "run_sweep", fake_run)
        return seen

    return use


def test_counting_is_off_by_default_on_cuda_and_on_elsewhere(tmp_path, fake_device):
    seen = fake_device("cuda")
    r = invoke(["profile", "--out", str(tmp_path / "a.json"), "--variants", "flash"])
    assert r.exit_code == 0, r.output
    assert seen["dev"] == "cuda" and seen["count"] is False and seen["dt"] == "bf16"
    r = invoke(["profile", "--out", str(tmp_path / "b.json"), "--variants", "flash", "--count"])
    assert r.exit_code == 0 and seen["count"] is True
    seen = fake_device("mps")
    r = invoke(["profile", "--out", str(tmp_path / "c.json"), "--variants", "flash"])
    assert r.exit_code == 0 and seen["count"] is True
    r = invoke(["profile", "--out", str(tmp_path / "d.json"), "--variants", "flash", "--no-count"])
    assert r.exit_code == 0 and seen["count"] is False


def test_help_says_where_counting_is_on():
    from typer.testing import CliRunner

    from attncost.cli.main import app

    text = CliRunner().invoke(app, ["profile", "--help"], env={"COLUMNS": "250"}).output
    line = next(ln for ln in text.splitlines() if "--no-count" in ln)
    assert "--count" in line and "not on CUDA" in line


# -- 4. sticky CUDA errors ---------------------------------------------------------------------
def test_a_failing_synchronize_makes_the_point_an_error(monkeypatch):
    def broken():
        raise RuntimeError(ILLEGAL)

    monkeypatch.setattr(torch.cuda, "synchronize", broken)
    p = guarded(Point(variant="flash", shape=shapes()[0]), "cuda", lambda point: None)
    assert p.status == "error" and "illegal memory access" in p.message and "synchronize" in p.message


def test_a_sticky_error_stops_the_sweep_with_the_file_saved(tmp_path, monkeypatch):
    syncs = []

    def sync(dev):  # the second point leaves the device in a sticky error
        syncs.append(dev)
        if len(syncs) == 2:
            raise RuntimeError(ILLEGAL)

    monkeypatch.setattr(runner, "synchronize", sync)
    build = Builder()
    path = tmp_path / "r.json"
    with pytest.raises(DeviceFailed, match="illegal memory access") as err:
        sweep_cpu(path, make_grid(["flash"], shapes((32, 64, 96))), build)
    assert "--resume" in str(err.value) and "\n" not in str(err.value)
    held = Run.load(path).points
    assert [p.status for p in held] == ["ok", "error"] and len(build.calls) == 2


def test_a_device_side_assert_in_a_point_stops_the_sweep(tmp_path):
    build = Builder(fail={("flash", 32): RuntimeError("CUDA error: device-side assert triggered")})
    with pytest.raises(DeviceFailed, match="device-side assert"):
        sweep_cpu(tmp_path / "r.json", make_grid(["flash"], shapes()), build)
    assert len(Run.load(tmp_path / "r.json").points) == 1
    ordinary = Builder(fail={("flash", 32): RuntimeError("CUDA error: invalid argument")})
    run = sweep_cpu(tmp_path / "s.json", make_grid(["flash"], shapes()), ordinary)
    assert [p.status for p in run.points] == ["error", "ok"]  # not sticky: the sweep goes on


def test_the_cli_stops_with_one_sentence_and_exit_code_2(tmp_path, monkeypatch):
    def hook(variant, params, shape):
        raise RuntimeError(ILLEGAL)

    monkeypatch.setattr(sweep, "FAULT_HOOK", hook)
    out = tmp_path / "r.json"
    r = invoke(["profile", "--device", "cpu", "--variants", "flash,gqa", "--d", "32", "--heads", "2", "--T", "32",
                "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "illegal memory access" in lines[0] and lines[0].endswith(".")
    assert [p.variant for p in Run.load(out).points] == ["flash"]


# -- 5. MPS --------------------------------------------------------------------------------------
def test_mps_falls_back_to_fp16_without_bf16(tmp_path, fake_device):
    seen = fake_device("mps", bf16=False)
    r = invoke(["profile", "--out", str(tmp_path / "a.json"), "--variants", "flash"])
    assert r.exit_code == 0, r.output
    assert seen["dt"] == "fp16" and "running in fp16" in " ".join(r.stderr.split())
    r = invoke(["profile", "--out", str(tmp_path / "b.json"), "--dtype", "bf16"])
    assert r.exit_code == 2 and "--dtype bf16" in r.stderr and "macOS 14" in r.stderr
    seen = fake_device("mps", bf16=True)
    assert invoke(["profile", "--out", str(tmp_path / "c.json"), "--variants", "flash"]).exit_code == 0
    assert seen["dt"] == "bf16"


def test_mps_uses_a_smaller_default_grid(tmp_path, fake_device):
    seen = fake_device("mps")
    assert invoke(["profile", "--out", str(tmp_path / "a.json"), "--variants", "flash"]).exit_code == 0
    Ts = sorted({s.T for _, _, s in seen["grid"]})
    assert Ts[0] == 512 and Ts[-1] == 8192
    seen = fake_device("cuda")
    assert invoke(["profile", "--out", str(tmp_path / "b.json"), "--variants", "flash"]).exit_code == 0
    assert max(s.T for _, _, s in seen["grid"]) == 32768


@pytest.mark.parametrize("backend", ["flash", "cudnn", "efficient"])
def test_mps_refuses_a_forced_fused_backend(tmp_path, fake_device, backend):
    fake_device("mps")
    r = invoke(["profile", "--backend", backend, "--out", str(tmp_path / "a.json")])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and f"--backend {backend}" in lines[0] and "MPS" in lines[0]
    device.check_backend("math", "mps")
    device.check_backend("auto", "mps")


# -- 6. whole models: one stack per T ------------------------------------------------------------
TINY = {"name": "tiny", "layers": 2, "d": 64, "heads": 4, "kv_heads": 2, "vocab": 300, "mlp_hidden": 128,
        "context": 64, "positions": "rope", "tied_embeddings": False, "norm": "rmsnorm", "bias": False,
        "mlp": "swiglu", "attention": "gqa"}


def test_a_reused_stack_equals_a_fresh_one():
    from attncost.costmodel.model_spec import ModelConfig
    from attncost.profiler.model_stack import build_stack

    cfg = ModelConfig(**TINY)
    ids = torch.randint(0, cfg.vocab, (2, 16))
    stack = build_stack(cfg, "gqa", T=16, batch=2)
    for variant in ("mla", "mqa"):  # mla rotates its own queries, mqa needs the stack's RoPE hooks
        stack.set_attention(variant, cfg.variant_params(variant))
        fresh = build_stack(cfg, variant, T=16, batch=2)
        with torch.inference_mode():
            torch.testing.assert_close(stack(ids), fresh(ids))
        stack.to_decode(ids)
        with torch.inference_mode():
            torch.testing.assert_close(stack.decode(ids[:, -1:])[:, 0], fresh(ids)[:, -1], atol=1e-4, rtol=1e-4)


def test_run_models_builds_one_stack_per_T_on_the_runs_device(tmp_path, monkeypatch):
    from attncost.costmodel.model_spec import ModelConfig

    built = []
    real = model_stack.build_stack

    def counting(cfg, variant, T, batch, dev, dtype, **kw):
        built.append((variant, T, dev, dtype))
        return real(cfg, variant, T, batch, dev, dtype, **kw)

    monkeypatch.setattr(model_stack, "build_stack", counting)
    run = model_stack.run_models(tmp_path / "m.json", ModelConfig(**TINY), ["gqa", "mqa"], [16, 32], 1, "cpu",
                                 "fp32", new_tokens=1, measure_kwargs=FAST)
    assert [p.status for p in run.points] == ["ok"] * 4, [p.message for p in run.points]
    assert built == [("gqa", 16, "cpu", "fp32"), ("gqa", 32, "cpu", "fp32")]


def test_a_failed_model_point_drops_the_stack(tmp_path, monkeypatch):
    from attncost.costmodel.model_spec import ModelConfig

    built = []
    real = model_stack.build_stack
    monkeypatch.setattr(model_stack, "build_stack", lambda *a, **k: built.append(a[1]) or real(*a, **k))

    def hook(model, variant, T):
        if variant == "mqa":
            raise torch.OutOfMemoryError("CUDA out of memory")

    run = model_stack.run_models(tmp_path / "m.json", ModelConfig(**TINY), ["gqa", "mqa", "mha"], [16], 1, "cpu",
                                 "fp32", new_tokens=1, measure_kwargs=FAST, fault_hook=hook)
    assert [p.status for p in run.points] == ["ok", "oom", "ok"]
    assert built == ["gqa", "mha"]  # built again after the failure
