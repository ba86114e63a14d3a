"""Where the time goes, by op kind: `profile --ops` records torch.profiler's times per op kind on each
point, and `crosscheck --time RUN.json --by-op` sets them beside the prediction's kernels by the same
kinds and names the kind each variant's error comes from."""

import json
import sys

import pytest
from typer.testing import CliRunner

from attncost.cli.main import app
from attncost.costmodel.accuracy import REST, by_op, kind_times
from attncost.costmodel.analysis import analyse
from attncost.costmodel.estimate import graph
from attncost.costmodel.hardware import get_hardware
from attncost.costmodel.opkinds import CALL, graph_kind
from attncost.costmodel.results import Environment, Point, Run, Timing
from attncost.costmodel.shape import Shape

runner = CliRunner()
pytestmark = pytest.mark.xdist_group("by_op")  # one worker profiles the module's run once
CPU = get_hardware("cpu")
VARIANTS = ("flash", "mha")


@pytest.fixture(scope="module")
def profiled(tmp_path_factory, one_thread):
    """A tiny CPU run profiled with --ops."""
    pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("ops") / "run.json"
    r = runner.invoke(app, ["profile", "--device", "cpu", "--variants", ",".join(VARIANTS), "--T", "32,64",
                            "--d", "32", "--heads", "2", "--budget", "0.02", "--no-count", "--hardware", "cpu",
                            "--ops", "--out", str(path)])
    assert r.exit_code == 0, r.output
    assert "--by-op" in r.stdout
    return path


def test_profile_ops_records_times_by_kind_that_cover_the_graphs_kinds(profiled):
    run = Run.load(profiled)
    for p in run.points:
        assert p.status == "ok", p.message
        assert p.op_times and p.op_device_times is None  # the CPU: host times only
        # module calls run no aten op: their time is the measured rest
        kinds = {graph_kind(k) for k in analyse(graph(p.variant, p.shape, None)).kernels} - {CALL}
        assert kinds <= set(p.op_times), (p.variant, kinds - set(p.op_times))
        total = sum(p.op_times.values())
        assert total > 0 and all(v >= 0 for v in p.op_times.values())
        assert p.timing.median_s / 5 < total < 5 * p.timing.median_s  # the same call, seen two ways
        assert total <= p.op_call_s * 1.1  # the ops' self times lie inside the profiled call
        assert p.fault_bytes is not None and 0 <= p.fault_bytes < 2**20  # tiny: nothing mapped anew
        _, _, measured = kind_times(p, CPU)  # scaled to the layer's time: the rest is what no op took
        assert sum(measured.values()) == pytest.approx(p.timing.median_s)
        assert measured[REST] >= -0.1 * p.timing.median_s


def test_crosscheck_by_op_prints_a_row_per_kind_and_names_the_largest(profiled):
    r = runner.invoke(app, ["crosscheck", "--time", str(profiled), "--by-op"])
    assert r.exit_code in (0, 1), r.output  # 1: above the error target (the generic CPU profile)
    assert "time by op kind" in r.output and r.output.count("<- largest") == len(VARIANTS)
    run = Run.load(profiled)
    kinds = by_op(run)
    for name, s in kinds.items():
        for row in s["rows"]:
            assert row.kind in r.output
        assert f"mostly {s['largest']}" in r.output
    doc = json.loads(runner.invoke(app, ["crosscheck", "--time", str(profiled), "--by-op", "--json"]).output)
    assert set(doc["by_op"]) == set(VARIANTS)
    for s in doc["by_op"].values():
        kinds_seen = [row["kind"] for row in s["rows"]]
        assert s["largest"] in kinds_seen and REST in kinds_seen
        assert sum(row["share"] for row in s["rows"]) == pytest.approx(s["error"], abs=1e-9)


def test_by_op_refuses_a_run_without_op_times(tmp_path):
    s = Shape(T=64, d=64, heads=2)
    t = Timing(median_s=1e-3, p10_s=1e-3, p90_s=1e-3, repetitions=3)
    path = tmp_path / "r.json"
    Run(environment=Environment(device="cpu"), hardware=CPU,
        points=[Point(variant="flash", shape=s, timing=t, predicted_time_s=1e-3)]).save(path)
    r = runner.invoke(app, ["crosscheck", "--time", str(path), "--by-op"])
    assert r.exit_code == 2 and "--ops" in r.output and "Traceback" not in r.output


def test_by_op_locates_the_kind_that_is_off():
    """A synthetic point whose measured matmuls take twice their prediction: matmul is named."""
    s = Shape(T=256, d=256, heads=4, dtype="fp32")
    p = Point(variant="flash", shape=s, timing=Timing(median_s=1.0, p10_s=1.0, p90_s=1.0, repetitions=3))
    _, predicted, _ = kind_times(p.model_copy(update={"op_times": {"matmul": 1.0}}), CPU)
    measured = {k: v for k, v in predicted.items() if k != REST}
    measured["matmul"] *= 2
    median = sum(predicted.values()) + predicted["matmul"]
    p = p.model_copy(update={"op_times": measured, "timing": Timing(median_s=median, p10_s=median, p90_s=median,
                                                                       repetitions=3)})
    s = by_op(Run(environment=Environment(device="cpu"), hardware=CPU, points=[p]))["flash"]
    assert s["largest"] == "matmul" and s["points"] == 1 and s["source"] == "host"
    rows = {r.kind: r for r in s["rows"]}
    assert rows["matmul"].share == pytest.approx(-predicted["matmul"] / median)
    assert rows[REST].share == pytest.approx(0, abs=1e-9) and s["error"] == pytest.approx(
        sum(predicted.values()) / median - 1)


def test_device_times_are_compared_with_graph_mode_kernels_and_the_rest_is_host_waiting():
    h100 = get_hardware("h100")
    s = Shape(T=128, d=256, heads=4)
    p = Point(variant="flash", shape=s, timing=Timing(median_s=1e-3, p10_s=1e-3, p90_s=1e-3, repetitions=3),
              op_times={"matmul": 1e-4}, op_device_times={"matmul": 1e-5, "sdpa": 1e-5})
    source, predicted, measured = kind_times(p, h100)
    from attncost.costmodel.as_run import time_as_run

    assert source == "device"
    eager, graph_s = (time_as_run("flash", s, None, h100, mode=m) for m in ("eager", "graph"))
    assert sum(v for k, v in predicted.items() if k != REST) == pytest.approx(graph_s)
    assert predicted[REST] == pytest.approx(eager - graph_s) and predicted[REST] > 0
    assert measured[REST] == pytest.approx(1e-3 - 2e-5)


def test_aten_ops_take_the_kinds_of_the_trace():
    pytest.importorskip("torch")
    from attncost.profiler.harness import aten_op_kind

    assert [aten_op_kind(n) for n in ("mm", "view", "transpose", "add", "_softmax", "cumsum", "gather")] == [
        "matmul", "view", "view", "elementwise", "softmax", "scan", "index"]
    assert aten_op_kind("no_such_op_here") == "other"


def test_host_times_are_scaled_by_how_much_longer_the_profiled_call_took(tmp_path):
    """torch.profiler lengthens the ops it times: a point whose ops add up to more than the layer took
    alone is compared in proportion to its profiled call (``op_call_s``); one without it, as measured."""
    s = Shape(T=128, d=256, heads=4, dtype="fp32")
    t = Timing(median_s=1e-3, p10_s=1e-3, p90_s=1e-3, repetitions=3)
    ops = {"matmul": 1.2e-3, "sdpa": 0.4e-3}  # 1.6 ms of ops in a 1 ms layer
    p = Point(variant="flash", shape=s, timing=t, op_times=ops, op_call_s=2e-3)
    _, _, measured = kind_times(p, CPU)
    assert measured["matmul"] == pytest.approx(0.6e-3) and measured["sdpa"] == pytest.approx(0.2e-3)
    assert measured[REST] == pytest.approx(0.2e-3)
    run = Run(environment=Environment(device="cpu"), hardware=CPU, points=[p])
    assert by_op(run)["flash"]["profiled_ratio"] == pytest.approx(2.0)
    run.save(tmp_path / "r.json")
    r = runner.invoke(app, ["crosscheck", "--time", str(tmp_path / "r.json"), "--by-op"])
    assert r.exit_code in (0, 1) and "Under torch.profiler a call took 2x its time alone" in r.output
    unscaled = kind_times(p.model_copy(update={"op_call_s": None}), CPU)[2]
    assert unscaled["matmul"] == pytest.approx(1.2e-3) and unscaled[REST] == pytest.approx(-0.6e-3)
    assert by_op(Run(environment=Environment(device="cpu"), hardware=CPU,
                     points=[p.model_copy(update={"op_call_s": None})]))["flash"]["profiled_ratio"] is None


def test_fault_bytes_counts_the_memory_a_call_touches_anew():
    """A call that allocates and fills 64 MiB (glibc maps it anew each time) faults it in whole; one
    that adds two small tensors, nothing."""
    torch = pytest.importorskip("torch")
    resource = pytest.importorskip("resource")
    from attncost.profiler.harness import fault_bytes

    if resource.getpagesize() != 4096 or not sys.platform.startswith("linux"):
        pytest.skip("page faults counted as 4 KiB pages on Linux")
    big = fault_bytes(lambda: torch.empty(2**24).fill_(1.0), calls=3)
    x = torch.ones(64)
    small = fault_bytes(lambda: x + x, calls=3)
    assert 60 * 2**20 <= big <= 70 * 2**20 and small < 2**20


def test_by_op_sets_the_memory_faulted_in_beside_the_outputs_the_model_faults_in(tmp_path):
    """mha's prefill at T 1,536 (d 320, 5 heads, fp32) writes four T x T score tensors of 45 MiB
    (scores, scale, mask, softmax), each above a 31 MiB threshold: 180 MiB priced; its projections'
    1.9 MiB outputs stay below it."""
    s = Shape(T=1536, d=320, heads=5, dtype="fp32")
    hw = CPU.model_copy(update={"fresh_bytes": 31 * 2**20, "fresh_s_per_byte": 3.4e-10})
    t = Timing(median_s=0.1, p10_s=0.1, p90_s=0.1, repetitions=3)
    p = Point(variant="mha", shape=s, timing=t, op_times={"matmul": 0.05}, fault_bytes=190 * 2**20)
    run = Run(environment=Environment(device="cpu"), hardware=hw, points=[p])
    faults = by_op(run)["mha"]["faults"]
    assert faults == {"measured": 190 * 2**20, "priced": 4 * 45 * 2**20}
    run.save(tmp_path / "r.json")
    r = runner.invoke(app, ["crosscheck", "--time", str(tmp_path / "r.json"), "--by-op"])
    assert "memory faulted in per call" in r.output and "190 MiB" in r.output and "180 MiB" in r.output
    without = Run(environment=Environment(device="cpu"), hardware=hw,
                  points=[p.model_copy(update={"fault_bytes": None})])
    assert by_op(without)["mha"]["faults"] is None
