"""Execution modes: eager (the host issues each op) and graph (a captured CUDA graph replayed, no host
cost). `predict --exec graph` prices with no host time; `profile --exec graph` is refused where it cannot
be measured and, on CUDA, times a captured graph's replay (the capture checked here with stand-ins);
points record their mode and are keyed by it; the report draws the other mode's prediction. Plus the
kernel that ran for a sliding window: flex_attention, or a dense masked SDPA priced as dense."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from attncost.cli.main import app
from attncost.costmodel import as_run
from attncost.costmodel.analysis import analyse
from attncost.costmodel.estimate import estimate, graph
from attncost.costmodel.hardware import get_hardware
from attncost.costmodel.results import Environment, Point, Run, Timing
from attncost.costmodel.shape import Shape
from attncost.costmodel.timing import MODES, predict

runner = CliRunner()
H100 = get_hardware("h100")
SMALL = ["--d", "256", "--T", "128", "--heads", "4", "--hardware", "h100"]  # host-bound on a GPU


def _predicted(*args) -> dict:
    r = runner.invoke(app, ["predict", *SMALL, "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


# -- predict ------------------------------------------------------------------------------------
def test_predict_graph_mode_leaves_the_host_out():
    eager = {e["variant"]: e["time_s"] for e in _predicted("--variants", "flash,mha")["results"]}
    doc = _predicted("--variants", "flash,mha", "--exec", "graph")
    assert doc["exec"] == "graph" and doc["hardware"]["launch_overhead_s"] == H100.launch_overhead_s
    graph_mode = {e["variant"]: e["time_s"] for e in doc["results"]}
    s = Shape(T=128, d=256, heads=4)
    for v in ("flash", "mha"):
        device_s = predict(analyse(graph(v, s)).kernels, H100, "bf16").device_s  # the kernels' device times
        assert graph_mode[v] < eager[v]
        assert graph_mode[v] == pytest.approx(device_s, rel=1e-12)
    kernels = json.loads(runner.invoke(app, ["predict", *SMALL, "--kernels", "flash", "--json", "--exec", "graph"]).output)
    assert kernels["totals"]["host_s"] == 0 and kernels["totals"]["time_s"] == pytest.approx(graph_mode["flash"])


def test_the_modes_are_one_vocabulary_and_graph_profile_zeroes_every_host_cost():
    assert MODES == ("eager", "graph") and as_run.other_mode("eager") == "graph"
    hw = as_run.graph_profile(H100)
    assert all(getattr(hw, f) == 0 for f in as_run.HOST_FIELDS) and hw.kernel_latency_s == H100.kernel_latency_s
    s = Shape(T=512, d=1024, heads=16, phase="decode")
    assert estimate("mla", s, None, hw).time_s == pytest.approx(
        as_run.time_as_run("mla", s, None, H100, mode="graph"), rel=1e-12)


@pytest.mark.parametrize("args, words", [
    (["--exec", "device"], "--exec must be 'eager' or 'graph'"),
    (["--model", "gpt2", "--exec", "graph"], "--exec graph"),
])
def test_predict_refuses_bad_exec(args, words):
    r = runner.invoke(app, ["predict", "--T", "128", *args])
    assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output


def test_predict_graph_mode_stays_torch_free():
    code = ("import sys; from typer.testing import CliRunner; from attncost.cli.main import app; "
            "r = CliRunner().invoke(app, ['predict', '--d', '256', '--T', '128', '--exec', 'graph']); "
            "assert r.exit_code == 0, r.output; print('torch' in sys.modules, 'plotly' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# -- profile: refused where it cannot be measured ------------------------------------------------
@pytest.mark.parametrize("device", ["cpu", "mps", "auto"])
def test_profile_graph_mode_is_refused_off_cuda(tmp_path, device):
    if device == "auto":
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("auto resolves to CUDA here")
    out = tmp_path / "r.json"
    r = runner.invoke(app, ["profile", "--device", device, "--exec", "graph", "--variants", "flash", "--T", "16",
                            "--d", "16", "--heads", "1", "--out", str(out)])
    assert r.exit_code == 2, r.output
    msg = r.stderr.strip()
    assert "graph mode cannot be measured on" in msg and "CUDA" in msg and len(msg.splitlines()) == 1
    assert not out.exists()


def test_profile_model_refuses_layer_only_flags():
    r = runner.invoke(app, ["profile", "--model", "gpt2", "--exec", "graph", "--ops", "--device", "cpu"])
    assert r.exit_code == 2 and "--exec graph and --ops apply to a layer sweep" in r.stderr


# -- points keyed by their mode -------------------------------------------------------------------
def test_points_record_their_mode_and_files_without_it_read_as_eager(tmp_path):
    s = Shape(T=64, d=64, heads=2)
    eager, graph_point = Point(variant="flash", shape=s), Point(variant="flash", shape=s, exec_mode="graph")
    assert eager.key != graph_point.key and eager.exec_mode == "eager"
    doc = Run(environment=Environment(device="cuda"), points=[eager, graph_point]).model_dump(mode="json")
    del doc["points"][0]["exec_mode"]  # a file written before exec modes
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    loaded = Run.load(path)
    assert [p.exec_mode for p in loaded.points] == ["eager", "graph"]
    assert loaded.points[0].key == eager.key


# -- the capture, with stand-ins for torch.cuda --------------------------------------------------
class FakeCuda:
    """torch.cuda's Stream, current_stream, stream, CUDAGraph and graph, logging what happens."""

    def __init__(self):
        self.log, self.where = [], "default"
        cuda = self

        class Stream:
            def __init__(self, name="side"):
                self.name = name

            def wait_stream(self, other):
                cuda.log.append(f"{self.name} waits {other.name}")

        class Ctx:
            def __init__(self, enter, leave):
                self.enter, self.leave = enter, leave

            def __enter__(self):
                self.enter()

            def __exit__(self, *exc):
                self.leave()

        class CUDAGraph:
            def replay(self):
                cuda.log.append("replay")

        self.Stream, self.CUDAGraph, self._default = Stream, CUDAGraph, Stream("default")
        self.stream = lambda s: Ctx(lambda: self._set(s.name), lambda: self._set("default"))
        self.graph = lambda g: Ctx(lambda: self._set("capture"), lambda: self._set("default"))

    def _set(self, where):
        self.where = where

    def current_stream(self):
        return self._default


def test_cuda_graph_warms_up_on_a_side_stream_captures_once_and_replays():
    from attncost.profiler.harness import cuda_graph

    cuda, calls = FakeCuda(), []
    replay = cuda_graph(lambda: calls.append(cuda.where) or "out", warmup=2, cuda=cuda)
    assert calls == ["side", "side", "capture"]  # warm-up outside the capture, then one captured call
    assert cuda.log == ["side waits default", "default waits side"]
    assert replay() == "out" and replay() == "out"
    assert cuda.log[-2:] == ["replay", "replay"] and len(calls) == 3  # replays do not call fn again


def test_a_graph_mode_sweep_times_the_replay_and_predicts_graph_mode(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from attncost.profiler import sweep

    with pytest.raises(ValueError, match="graph mode cannot be measured on the CPU"):
        sweep.run_sweep(tmp_path / "x.json", [], "cpu", "fp32", exec_mode="graph")
    captured = []

    def fake_graph(fn):  # the eager call stands in for its replay
        captured.append(fn)
        return fn

    monkeypatch.setattr(sweep, "graph_unmeasurable", lambda device: None)
    monkeypatch.setattr(sweep, "cuda_graph", fake_graph)
    grid = sweep.make_grid(["flash"], [Shape(T=32, d=32, heads=2, dtype="fp32")])
    common = dict(count=False, hardware=H100, measure_kwargs=dict(budget_s=0.01, min_reps=2, warmup=0))
    path = tmp_path / "r.json"
    sweep.run_sweep(path, grid, "cpu", "fp32", **common)
    run = sweep.run_sweep(path, grid, "cpu", "fp32", exec_mode="graph", resume=True, **common)
    assert len(captured) == 1 and [p.exec_mode for p in run.points] == ["eager", "graph"]
    eager, graph_point = run.points
    assert graph_point.status == "ok" and graph_point.timing.median_s > 0
    assert graph_point.predicted_time_s < eager.predicted_time_s  # no host time
    assert graph_point.predicted_time_s == eager.predicted_time_other_s
    assert graph_point.predicted_time_other_s == eager.predicted_time_s


# -- the report draws the other mode's prediction --------------------------------------------------
def test_the_report_separates_modes_and_dots_the_other_modes_prediction():
    pytest.importorskip("plotly")
    from attncost.reports.data import from_runs
    from attncost.reports.figures import time_figure

    pts = []
    for mode, pred, other in (("eager", 2e-4, 1e-4), ("graph", 1e-4, 2e-4)):
        for T in (64, 128):
            pts.append(Point(variant="flash", shape=Shape(T=T, d=64, heads=2), exec_mode=mode, predicted_time_s=pred,
                             predicted_time_other_s=other, timing=Timing(median_s=pred, p10_s=pred, p90_s=pred,
                                                                         repetitions=3)))
    data = from_runs([Run(environment=Environment(device="cuda"), points=pts)])
    assert sorted(s.label for s in data.series) == ["flash", "flash · graph mode"]
    fig = time_figure(data)
    traces = fig.to_plotly_json()["data"]
    dotted = [t for t in traces if t.get("line", {}).get("dash") == "dot" and t.get("x") and t["x"][0] is not None]
    assert len(dotted) == 2 and any("predicted in graph mode" in t["hovertext"][0] for t in dotted)
    assert any(t.get("name") == "predicted in the other exec mode (eager / graph)" for t in traces)


# -- the kernel that ran: a sliding window --------------------------------------------------------
def test_a_dense_masked_sliding_window_is_priced_dense():
    s = Shape(T=4096, d=1024, heads=16)
    band = estimate("sliding_window", s, None, H100).time_s
    assert as_run.time_as_run("sliding_window", s, None, H100, backend=as_run.FLEX) == band
    dense = as_run.time_as_run("sliding_window", s, None, H100, backend="cudnn")
    assert dense == pytest.approx(as_run.time_as_run("flash", s.with_(causal=False), None, H100, backend="cudnn"),
                                  rel=1e-9)
    assert dense > 1.5 * band
    decode = s.with_(phase="decode")  # the rolling cache is attended unmasked: nothing to reprice
    assert as_run.time_as_run("sliding_window", decode, None, H100, backend="cudnn") == estimate(
        "sliding_window", decode, None, H100.model_copy(update={"attention_backend": "cudnn"})).time_s


@pytest.mark.usefixtures("one_thread")
def test_the_cpu_sweep_records_the_dense_kernel_and_prices_what_ran(tmp_path):
    pytest.importorskip("torch")
    from attncost.profiler.sweep import make_grid, run_sweep

    s = Shape(T=64, d=32, heads=2, dtype="fp32")
    hw = get_hardware("cpu")
    run = run_sweep(tmp_path / "r.json", make_grid(["sliding_window"], [s], {"sliding_window": {"window": 16}}),
                    "cpu", "fp32", count=False, hardware=hw, measure_kwargs=dict(budget_s=0.01, min_reps=2, warmup=0))
    p = run.points[0]
    assert p.status == "ok", p.message
    assert p.backend in ("flash", "math")  # an SDPA kernel with the band as a dense mask: not flex
    assert p.predicted_time_s == as_run.time_as_run("sliding_window", s, {"window": 16}, hw, backend=p.backend,
                                                    compute_dtype=p.compute_dtype)
    if p.backend == "flash":
        assert p.predicted_time_s > estimate("sliding_window", s, {"window": 16}, hw).time_s


@pytest.mark.usefixtures("one_thread")
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_attention_runs_the_band_and_a_sweep_records_it(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch.nn.attention.flex_attention")
    from torch.nn.attention.flex_attention import flex_attention

    from attncost.profiler import sweep
    from attncost.profiler.modules import flex

    assert not flex.available("cpu") and flex.window_attention(8, 3, "cpu") is None
    # eager flex_attention stands in for the compiled kernel (and CUDA's allocator counters for the CPU's
    # peak-memory mode, which the eager stand-in does not support)
    monkeypatch.setattr(flex, "available", lambda device: True)
    monkeypatch.setattr(flex, "compiled_flex", lambda: flex_attention)
    monkeypatch.setattr(sweep, "peak_memory", lambda fn, device: 0)
    call = flex.window_attention(8, 3, "cpu")
    q, k, v = (torch.randn(1, 2, 8, 4) for _ in range(3))
    i = torch.arange(8)
    band = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - 3)
    with flex.recording() as seen:
        out = call(q, k, v)
    assert seen == [as_run.FLEX]
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=band))

    class Windowed(torch.nn.Module):
        """Projections around a flex_attention window, held as ``flex`` as the module's hook does."""

        def __init__(self, shape, window):
            super().__init__()
            self.qkv = torch.nn.Linear(shape.d, 3 * shape.d, bias=False)
            self.heads, self.flex = shape.heads, flex.window_attention(shape.T, window, "cpu")

        def forward(self, x):
            B, T, d = x.shape
            q, k, v = self.qkv(x).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            return self.flex(q, k, v).transpose(1, 2).reshape(B, T, d)

    def build(variant, shape, params, device, dtype, backend="auto"):
        return Windowed(shape, params["window"]), (torch.randn(shape.batch, shape.T, shape.d),)

    s = Shape(T=32, d=16, heads=2, dtype="fp32")
    run = sweep.run_sweep(tmp_path / "r.json", sweep.make_grid(["sliding_window"], [s], {"sliding_window": {"window": 8}}),
                          "cpu", "fp32", count=False, hardware=H100, build_module=build,
                          measure_kwargs=dict(budget_s=0.01, min_reps=1, warmup=0, max_reps=1))
    p = run.points[0]
    assert p.status == "ok" and p.backend == as_run.FLEX, p.message
    assert p.predicted_time_s == estimate("sliding_window", s, {"window": 8}, H100).time_s  # the band, as the model has it
