"""profiler.sweep on the CPU with small stand-in modules: OOM and errors are recorded and the sweep
goes on, an interrupted sweep leaves a valid file that --resume completes, the file is never
corrupt. Plus the `attncost profile` command end to end, and its bad flags."""

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from attncost.costmodel.results import Counts, Run  # noqa: E402
from attncost.costmodel.shape import Shape  # noqa: E402
from attncost.profiler import sweep as S  # noqa: E402
from attncost.profiler.runner import RunError  # noqa: E402
from attncost.profiler.sweep import make_grid, run_sweep  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(budget_s=0.02, min_reps=3, warmup=1)


class TinyAttention(torch.nn.Module):
    """A stand-in for profiler.modules: projections and one SDPA call."""

    def __init__(self, d, heads):
        super().__init__()
        self.qkv = torch.nn.Linear(d, 3 * d, bias=False)
        self.o = torch.nn.Linear(d, d, bias=False)
        self.heads = heads

    def forward(self, x):
        B, T, d = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(B, T, d))


class Builder:
    """build_module stand-in that counts its calls and can fail for chosen variants."""

    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail or {}

    def __call__(self, variant, shape, params, device, dtype, backend="auto"):
        self.calls.append((variant, shape.T))
        if variant in self.fail:
            raise self.fail[variant]
        module = TinyAttention(shape.d, shape.heads).to(device=device, dtype=dtype)
        return module, (torch.randn(shape.batch, shape.T, shape.d, device=device, dtype=dtype),)


def shapes(Ts=(32, 64), phase="prefill"):
    return [Shape(T=t, d=32, heads=2, dtype="fp32", phase=phase) for t in Ts]


def sweep(path, grid, build, **kw):
    kw.setdefault("count", False)
    kw.setdefault("measure_kwargs", FAST)
    return run_sweep(path, grid, "cpu", "fp32", build_module=build, **kw)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_points_are_measured_and_predicted(tmp_path):
    from attncost.costmodel.hardware import get_hardware

    build = Builder()
    run = sweep(tmp_path / "r.json", make_grid(["flash", "gqa"], shapes()), build, hardware=get_hardware("cpu"))
    assert [p.status for p in run.points] == ["ok"] * 4
    for p in run.points:
        assert p.timing.median_s > 0 and p.timing.repetitions >= 1
        assert p.peak_memory_bytes > 0
        assert p.backend == "flash"  # the stand-in calls SDPA; torch's CPU choice is flash
        assert p.predicted_time_s > 0 and p.predicted_flops > 0 and p.predicted_activation_bytes > 0
    assert run.points[1].params["kv_heads"] == 1  # resolved: heads/4 rounded up to 1
    loaded = Run.load(tmp_path / "r.json")
    assert loaded == run
    assert loaded.environment.device == "cpu"
    assert loaded.model_dump()["environment"]["sdpa_backend"] == "flash"


def test_injected_oom_is_recorded_and_the_sweep_goes_on(tmp_path):
    def hook(variant, params, shape):
        if variant == "mha" and shape.T == 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")

    build = Builder()
    run = sweep(tmp_path / "r.json", make_grid(["mha", "flash"], shapes()), build, fault_hook=hook)
    status = {(p.variant, p.shape.T): p for p in run.points}
    assert status["mha", 32].status == "oom"
    assert "out of memory" in status["mha", 32].message and "\n" not in status["mha", 32].message
    assert status["mha", 32].predicted_flops > 0  # the prediction is kept beside the OOM
    assert all(p.status == "ok" for k, p in status.items() if k != ("mha", 32))
    assert ("mha", 32) not in build.calls and len(build.calls) == 3


def test_module_level_hook_and_runtime_error_oom(tmp_path, monkeypatch):
    def hook(variant, params, shape):
        if shape.T == 64:
            raise RuntimeError("MPS backend out of memory (MPS allocated: 30 GB)")

    monkeypatch.setattr(S, "FAULT_HOOK", hook)
    run = sweep(tmp_path / "r.json", make_grid(["flash"], shapes()), Builder())
    assert [p.status for p in run.points] == ["ok", "oom"]


def test_an_error_in_one_variant_is_recorded_and_the_others_run(tmp_path):
    build = Builder(fail={"gqa": ValueError("weights do not fit\nthe second line")})
    run = sweep(tmp_path / "r.json", make_grid(["flash", "gqa", "mqa"], shapes()), build)
    by = {(p.variant, p.shape.T): p for p in run.points}
    for T in (32, 64):
        assert by["gqa", T].status == "error"
        assert by["gqa", T].message == "ValueError: weights do not fit the second line"
        assert by["flash", T].status == "ok" and by["mqa", T].status == "ok"


def test_a_variant_that_does_not_apply_is_na_and_not_built(tmp_path):
    build = Builder()
    run = sweep(tmp_path / "r.json", make_grid(["linformer"], shapes((32,))), build)  # k=256 > T
    assert run.points[0].status == "n/a" and "T=32" in run.points[0].message
    assert build.calls == []
    run = sweep(tmp_path / "d.json", make_grid(["nystrom"], shapes((32,), phase="decode")), build)
    assert run.points[0].status == "n/a" and build.calls == []


def test_interrupted_sweep_leaves_a_valid_file_that_resume_completes(tmp_path):
    path = tmp_path / "r.json"
    grid = make_grid(["flash", "mqa"], shapes((32, 64, 96)))
    seen = []

    def stop_after_four(point, index, total, skipped):
        seen.append(point.key)
        assert Run.load(path).points[-1].key == point.key  # saved before the callback
        if len(seen) == 4:
            raise KeyboardInterrupt

    first = Builder()
    with pytest.raises(KeyboardInterrupt):
        sweep(path, grid, first, on_point=stop_after_four)
    partial = Run.load(path)
    assert len(partial.points) == 4 and len(first.calls) == 4
    assert no_temp_files(tmp_path)

    second = Builder()
    skipped = []
    run = sweep(path, grid, second, resume=True, on_point=lambda p, i, n, s: skipped.append(s))
    assert len(second.calls) == len(grid) - 4  # no point measured twice
    assert skipped == [True] * 4 + [False] * (len(grid) - 4)
    assert len(run.points) == len(grid) and len({p.key for p in run.points}) == len(grid)
    assert run.points[:4] == partial.points  # the first four untouched
    assert Run.load(path) == run

    third = Builder()
    sweep(path, grid, third, resume=True)
    assert third.calls == []


def test_the_file_is_never_corrupt(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    grid = make_grid(["flash", "mqa"], shapes())

    def check(point, index, total, skipped):
        json.loads(path.read_text())
        assert no_temp_files(tmp_path)

    sweep(path, grid, Builder(), on_point=check)
    good = path.read_text()

    # Ctrl-C in the middle of a save: the rename never happens, the old file stays, no temp file
    def interrupted_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        sweep(path, make_grid(["gqa"], shapes()), Builder(), resume=True)
    monkeypatch.undo()
    assert path.read_text() == good
    assert no_temp_files(tmp_path)
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # a normal file's mode, not mkstemp's


def test_train_phase_runs_forward_and_backward(tmp_path):
    built, backward_calls = [], []

    def build(variant, shape, params, device, dtype, backend="auto"):
        m, inputs = Builder()(variant, shape, params, device, dtype, backend)
        m.qkv.weight.register_hook(lambda g: backward_calls.append(g.shape))
        built.append((m, inputs))
        return m, inputs

    run = sweep(tmp_path / "t.json", make_grid(["flash"], shapes((32,), phase="train")), build)
    p = run.points[0]
    assert p.status == "ok" and p.shape.phase == "train"
    module, (x,) = built[0]
    assert x.requires_grad and module.training
    assert len(backward_calls) >= 1 + p.timing.repetitions  # backward ran in every timed call
    fwd = sweep(tmp_path / "f.json", make_grid(["flash"], shapes((32,))), Builder()).points[0]
    assert p.peak_memory_bytes > fwd.peak_memory_bytes  # saved activations and gradients


def test_counts_are_stored_and_a_failing_counter_is_not_fatal(tmp_path):
    counts = Counts(analytic=1.0, analytic_matmul=1.0, flop_counter=2.0)
    run = sweep(tmp_path / "c.json", make_grid(["flash"], shapes((32,))), Builder(), count=True,
                count_fn=lambda module, inputs: counts)
    assert run.points[0].counts == counts

    def broken(module, inputs):
        raise RuntimeError("no handle for aten::foo")

    run = sweep(tmp_path / "d.json", make_grid(["flash"], shapes((32,))), Builder(), count=True, count_fn=broken)
    assert run.points[0].status == "ok" and run.points[0].counts is None
    assert run.points[0].message.startswith("counting failed: RuntimeError")

    def hungry(module, inputs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    run = sweep(tmp_path / "e.json", make_grid(["flash"], shapes((32,))), Builder(), count=True, count_fn=hungry)
    assert run.points[0].status == "ok" and run.points[0].timing is not None
    assert run.points[0].message.startswith("counting ran out of memory")


def test_resume_refuses_a_file_from_another_device(tmp_path):
    path = tmp_path / "r.json"
    run = sweep(path, make_grid(["flash"], shapes((32,))), Builder())
    other = run.model_copy(update={"environment": run.environment.model_copy(update={"device_name": "Other GPU"})})
    other.save(path)
    with pytest.raises(RunError, match="measured on Other GPU"):
        sweep(path, make_grid(["flash"], shapes((32,))), Builder(), resume=True)
    run.save(path)
    with pytest.raises(RunError, match="fp32"):
        run_sweep(path, make_grid(["flash"], shapes((32,))), "cpu", "bf16", resume=True, build_module=Builder(),
                  count=False, env=run.environment)



def test_the_run_embeds_the_hardware_profile_of_its_predictions(tmp_path):
    from attncost.costmodel.hardware import get_hardware

    cpu, h100 = get_hardware("cpu"), get_hardware("h100")
    path = tmp_path / "r.json"
    sweep(path, make_grid(["flash"], shapes((32,))), Builder(), hardware=cpu)
    assert Run.load(path).hardware == cpu
    # a resumed file keeps the profile it names in environment.hardware_profile
    sweep(path, make_grid(["flash"], shapes((32, 64))), Builder(), hardware=h100, resume=True)
    assert Run.load(path).hardware == cpu
    assert sweep(tmp_path / "none.json", make_grid(["flash"], shapes((32,))), Builder()).hardware is None


def test_the_committed_examples_embed_the_profile_they_name():
    from attncost.costmodel.hardware import get_hardware

    root = Path(__file__).resolve().parents[1]
    for name in ("cpu-prefill-fp32.json", "cpu-decode-fp32.json", "cpu-model-gpt2-fp32.json"):
        run = Run.load(root / "examples" / name)
        profile = run.environment.hardware_profile
        assert run.hardware == get_hardware(root / profile if profile.endswith(".json") else profile), name


def test_a_guarded_point_records_the_failure_and_lets_ctrl_c_through():
    from attncost.costmodel.results import Point
    from attncost.profiler.runner import guarded

    def fail(point):
        point.peak_memory_bytes = 1.0
        raise ValueError("bad\nvalue")

    p = guarded(Point(variant="flash", shape=shapes((32,))[0]), "cpu", fail)
    assert (p.status, p.message, p.peak_memory_bytes) == ("error", "ValueError: bad value", 1.0)

    def stop(point):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        guarded(Point(variant="flash", shape=shapes((32,))[0]), "cpu", stop)


# -- the command line ------------------------------------------------------------------------
def invoke(args):
    from typer.testing import CliRunner

    from attncost.cli.main import app

    return CliRunner().invoke(app, args)


def _modules_ready() -> bool:
    try:
        from attncost.profiler.modules import build_module  # noqa: F401
    except ImportError:
        return False
    return True


def test_cli_profile_writes_a_loadable_run(tmp_path):
    out = tmp_path / "run.json"
    r = invoke(["profile", "--device", "cpu", "--variants", "flash,performer", "--d", "64", "--heads", "2",
                "--T", "64,128", "--out", str(out), "--budget", "0.05"])
    assert r.exit_code == 0, r.output
    run = Run.load(out)
    assert len(run.points) == 4
    assert {(p.variant, p.shape.T) for p in run.points} == {(v, t) for v in ("flash", "performer") for t in (64, 128)}
    assert run.dtype == "fp32" and run.environment.device == "cpu"
    assert run.command.startswith("attncost profile") and "--variants flash,performer" in run.command
    assert str(out) in r.stdout and "Wrote" in r.stdout
    if _modules_ready():
        assert all(p.status == "ok" for p in run.points), [p.message for p in run.points]
        assert all(p.timing is not None and p.predicted_time_s for p in run.points)
    # the same command again: refuses to overwrite, resumes with --resume without measuring again
    again = invoke(["profile", "--device", "cpu", "--variants", "flash", "--d", "64", "--heads", "2",
                    "--T", "64", "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.stderr
    resumed = invoke(["profile", "--device", "cpu", "--variants", "flash", "--d", "64", "--heads", "2",
                      "--T", "64", "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert Run.load(out).points == run.points


@pytest.mark.parametrize("args, flag", [
    (["--phase", "generate"], "--phase"),
    (["--dtype", "int8"], "--dtype"),
    (["--T", "abc"], "--T"),
    (["--T", "0"], "--T"),
    (["--d", "64", "--heads", "3"], "--heads"),
    (["--variants", "flash,nope"], "--variants"),
    (["--param", "linformer.k=0"], "--param"),
    (["--param", "linformer.size=3"], "--param"),
    (["--backend", "fastest"], "--backend"),
    (["--device", "tpu"], "--device"),
    (["--batch", "0"], "--batch"),
    (["--budget", "0"], "--budget"),
    (["--hardware", "no-such-gpu"], "--hardware"),
])
def test_cli_profile_bad_flags_exit_2_with_one_sentence(tmp_path, args, flag):
    r = invoke(["profile", "--device", "cpu", "--out", str(tmp_path / "x.json")] + args
               if "--device" not in args else ["profile", "--out", str(tmp_path / "x.json")] + args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and flag in lines[0] and lines[0].endswith(".")
    assert "Traceback" not in r.output and not (tmp_path / "x.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_profile_on_a_machine_without_cuda(tmp_path):
    r = invoke(["profile", "--device", "cuda", "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "--device cuda" in r.stderr
    r = invoke(["profile", "--device", "cpu", "--backend", "cudnn", "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "--backend cudnn" in r.stderr


def test_oom_inside_the_forward_releases_the_module(tmp_path):
    """An OOM raised by the module itself (not the hook): recorded, and nothing of the failed point
    stays alive (the traceback's frames are dropped before the next point)."""
    import weakref

    refs = []

    class Exploding(TinyAttention):
        def forward(self, x):
            if x.shape[1] == 64:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
            return super().forward(x)

    def build(variant, shape, params, device, dtype, backend="auto"):
        m = Exploding(shape.d, shape.heads).to(device=device, dtype=dtype)
        x = torch.randn(shape.batch, shape.T, shape.d, device=device, dtype=dtype)
        refs.append((shape.T, weakref.ref(m), weakref.ref(x)))
        return m, (x,)

    run = sweep(tmp_path / "r.json", make_grid(["flash"], shapes((64, 32))), build)
    assert [p.status for p in run.points] == ["oom", "ok"]
    assert run.points[0].timing is None and "8.00 GiB" in run.points[0].message
    T, module_ref, input_ref = refs[0]
    assert T == 64 and module_ref() is None and input_ref() is None


def _logged_build(calls: list, name):
    """A module builder whose modules append ``name(variant, shape)`` to ``calls`` at each forward."""

    class Logged(TinyAttention):
        def __init__(self, d, heads, tag):
            super().__init__(d, heads)
            self.tag = tag

        def forward(self, x):
            calls.append(self.tag)
            return super().forward(x)

    def build(variant, shape, params, device, dtype, backend="auto"):
        return Logged(shape.d, shape.heads, name(variant, shape)), (torch.randn(1, shape.T, shape.d),)

    return build


def test_the_points_of_a_shape_are_timed_in_interleaved_rounds(tmp_path):
    order = []
    build = _logged_build(order, lambda variant, shape: (variant, shape.T))
    run = sweep(tmp_path / "r.json", make_grid(["flash", "mqa"], shapes((32, 64))), build, rounds=3)
    assert [p.status for p in run.points] == ["ok"] * 4
    switches = [a for a, b in zip(order, order[1:]) if a != b]
    shape_32 = [s for s in switches if s[1] == 32]
    assert len(shape_32) >= 5  # flash, mqa, flash, mqa, flash, mqa ...: rounds alternate within a shape
    assert max(i for i, s in enumerate(order) if s[1] == 32) < min(i for i, s in enumerate(order) if s[1] == 64)
    assert all(p.timing.repetitions >= 3 for p in run.points)  # one round or more each, combined


def test_points_that_would_not_fit_together_are_timed_one_by_one(tmp_path, monkeypatch):
    """Rounds hold every point of a shape built at once: where their predicted memory together passes
    a quarter of the machine's, they are built and timed one after another instead."""
    import attncost.profiler.sweep as S

    calls = []
    build = _logged_build(calls, lambda variant, shape: variant)
    grid = make_grid(["flash", "mqa", "gqa"], shapes((32,)))
    assert S._held_together([0, 1, 2], S.grid_points(grid), grid) == [0, 1, 2]
    monkeypatch.setattr(S, "_physical_memory", lambda: 1.0)
    assert S._held_together([0, 1, 2], S.grid_points(grid), grid) == [0]
    run = sweep(tmp_path / "r.json", grid, build, rounds=3)
    assert [p.status for p in run.points] == ["ok"] * 3
    assert [a for a, b in zip(calls, calls[1:]) if a != b] == ["flash", "mqa"]  # each timed whole, in turn


def test_rounds_combine_to_the_fastest_round():
    from attncost.costmodel.results import Timing
    from attncost.profiler.harness import combine_rounds

    def t(med):
        return Timing(median_s=med, p10_s=med * 0.9, p90_s=med * 1.1, repetitions=10, min_s=med * 0.8)

    one = t(1.0)
    assert combine_rounds([one]) is one
    c = combine_rounds([t(1.2), t(1.0), t(1.1)])
    assert (c.median_s, c.p10_s, c.repetitions, c.min_s) == pytest.approx((1.0, 0.9, 30, 0.8))
    assert c.ci_rel == pytest.approx(0.1 / 1.1) and not c.stable
    assert combine_rounds([t(1.0), t(1.02)]).stable and not combine_rounds([t(1.0), t(1.02)], rel_ci=0.005).stable
