"""`attncost crosscheck --ops` (graph vs trace by op kind) and `attncost predict --kernels`."""

import json
import math
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from attncost.cli.main import app
from attncost.costmodel.opkinds import KINDS
from attncost.costmodel.variants import NAMES

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny CPU kernels: threads only contend
TINY = ["--d", "32", "--heads", "2", "--T", "16", "--param", "linformer.k=8", "--param", "nystrom.landmarks=4"]


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_every_variant_has_a_row_per_kind_and_exit_1_exactly_when_a_kind_differs(phase):
    result = runner.invoke(app, ["crosscheck", "--ops", "--phase", phase, "--json", *TINY])
    data = json.loads(result.output)
    assert [r["variant"] for r in data["results"]] == list(NAMES)
    for r in data["results"]:
        if r["status"] == "n/a":
            assert phase == "decode" and "no decode path" in r["reason"]
            continue
        assert r["status"] == "ok", r
        kinds = set(r["graph"]["kernels"]) | set(r["trace"]["kernels"])
        assert [x["kind"] for x in r["rows"]][:-2] == [k for k in KINDS if k in kinds]
        assert r["rows"][-2]["kind"] == "view" and r["rows"][-2]["graph_count"] == r["graph"]["views"]
        assert r["rows"][-1]["kind"] == "call" and r["rows"][-1]["graph_count"] == r["graph"]["calls"] > 0
        assert r["agree"] == all(x["agree"] for x in r["rows"])
    disagree = any(not r["agree"] for r in data["results"])
    assert data["ok"] is not disagree
    assert result.exit_code == (1 if disagree else 0)


def test_table_shows_each_kind_and_fits_100_columns():
    result = runner.invoke(app, ["crosscheck", "--ops", "--variants", "mha,nystrom", *TINY])
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 100
    for kind in ("matmul", "softmax", "conv", "view (host)"):
        assert any(kind in line for line in lines)
    assert ("differs" in result.output) == (result.exit_code == 1)


def test_exit_0_when_graph_and_trace_agree(monkeypatch):
    """A trace made to match the graph kind by kind: no row differs, exit 0."""
    from attncost.costmodel.analysis import analyse
    from attncost.costmodel.estimate import graph
    from attncost.costmodel.opkinds import graph_kind
    from attncost.profiler import trace
    from attncost.profiler.trace import Trace, TraceOp

    def matching(variant, shape, params=None, device="cpu", dtype=None, **kw):
        ops = []
        for k in analyse(graph(variant, shape, params)).kernels:  # a view kernel stands for elems views
            n = int(k.ops[0].elems) if graph_kind(k) == "view" else 1
            ops += [TraceOp(k.name, k.name, graph_kind(k), "", 0.0, k.bytes)] * n
        return Trace(variant, shape, ops)

    monkeypatch.setattr(trace, "trace_variant", matching)
    result = runner.invoke(app, ["crosscheck", "--ops", "--variants", "mha,topk", *TINY])
    assert result.exit_code == 0, result.output
    assert "differs" not in result.output and "agree, kind by kind" in result.output


def test_train_and_refusals():
    result = runner.invoke(app, ["crosscheck", "--ops", "--phase", "train", "--variants", "flash", *TINY[:6]])
    assert "sdpa" in result.output and result.exit_code in (0, 1)
    assert runner.invoke(app, ["crosscheck", "--ops", "--by-op"]).exit_code == 2
    assert runner.invoke(app, ["crosscheck", "--ops", "--phase", "serve"]).exit_code == 2


# -- predict --kernels ---------------------------------------------------------------------

def test_kernel_rows_sum_to_the_device_time():
    from attncost.cli.kernels_view import kernel_rows
    from attncost.costmodel.estimate import estimate
    from attncost.costmodel.hardware import get_hardware
    from attncost.costmodel.shape import Shape

    hw = get_hardware("h100")
    for variant, phase in (("mha", "prefill"), ("dsa", "decode"), ("performer", "train")):
        shape = Shape(T=512, d=256, heads=4, phase=phase)
        rows, totals, _ = kernel_rows(variant, shape, None, hw)
        device = [r for r in rows if r["where"] == "device"]
        assert sum(r["time_s"] for r in device) == pytest.approx(totals["device_s"], rel=1e-12)
        assert totals["time_s"] == pytest.approx(estimate(variant, shape, None, hw).time_s, rel=1e-12)
        assert {r["bound"] for r in device} <= {"compute", "memory", "latency"}
        views = [r for r in rows if r["where"] == "host"]
        assert views and all(r["kind"] in ("view", "call", "autograd") and r["bound"] == "host" and r["bytes"] == 0
                             for r in views)
        assert all(r["time_s"] == 0 for r in views)  # the h100 profile has no measured view cost


def test_kernels_json_parses_without_nan_and_table_fits():
    args = ["predict", "--d", "256", "--T", "512", "--kernels", "topk"]
    data = json.loads(runner.invoke(app, args + ["--json"]).output, parse_constant=_no_nan)
    assert data["variant"] == "topk" and data["rows"]
    assert [r["kind"] for r in data["rows"]].count("topk") == 1
    for r in data["rows"]:
        assert set(r) == {"index", "op", "ops", "kind", "flops", "bytes", "time_s", "bound", "where"}
        assert all(math.isfinite(r[k]) for k in ("flops", "bytes", "time_s"))
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "topk" in table.output
    assert max(len(line) for line in table.output.splitlines()) <= 100


@pytest.mark.parametrize("args", [
    ["--d", "256", "--T", "512", "--kernels", "topk", "--variants", "mha"],  # --kernels names the variant
    ["--d", "256", "--T", "512,1024", "--kernels", "topk"],  # one shape
    ["--d", "256", "--T", "512", "--kernels", "topk,mha"],  # one variant
    ["--d", "256", "--T", "512", "--kernels", "nystrom", "--phase", "decode"],  # no decode path
    ["--T", "512", "--kernels", "topk", "--model", "gpt2"],
])
def test_kernels_refusals(args):
    result = runner.invoke(app, ["predict", *args])
    assert result.exit_code == 2 and "--kernels" in result.output


def _no_nan(name):
    raise ValueError(f"{name} in JSON")


def test_predict_kernels_and_the_kinds_table_leave_torch_out():
    code = ("from attncost.cli.main import app; from typer.testing import CliRunner; "
            "import attncost.costmodel.opkinds; "
            "r = CliRunner().invoke(app, ['predict', '--d', '64', '--T', '64', '--kernels', 'dsa', '--json']); "
            "assert r.exit_code == 0, r.output; import sys; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
