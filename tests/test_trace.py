"""profiler.trace: every aten op a module runs, classified by kind, with the bytes it moves; and the
kinds vocabulary it shares with the cost-model graph (costmodel.opkinds)."""

import pytest
import torch

from attncost.costmodel.opkinds import (AUTOGRAD, ATEN_KINDS, CALL, HOST_CLASS, HOST_CLASSES, KINDS, VIEW, KindTotal,
                                        OpSummary, compare, graph_kind)
from attncost.costmodel.shape import Shape
from attncost.profiler.trace import Trace, footprint, trace_call, trace_module, trace_variant

F32 = 4
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny CPU kernels: threads only contend


def _run(fn) -> list:
    with torch.no_grad():
        return trace_call(fn)


def test_tiny_module_classified_exactly():
    x, w = torch.randn(4, 8), torch.randn(8, 6)

    def layer():
        y = x @ w  # mm
        z = y.view(2, 2, 6).transpose(1, 2)  # two views
        p = torch.softmax(z, dim=-1)
        top = torch.topk(p, 1, dim=-1).values
        return torch.cat([top, top], dim=-1)

    ops = _run(layer)
    assert [(o.name, o.kind, o.host) for o in ops] == [
        ("mm", "matmul", "matmul"), ("view", VIEW, VIEW), ("transpose", VIEW, VIEW),
        ("_softmax", "softmax", "elementwise"), ("topk", "topk", "index"), ("cat", "copy", "elementwise")]
    assert all(o.bytes == 0 for o in ops if o.is_view)


def test_matmul_bytes_are_its_operands_and_result():
    m, k, n = 5, 7, 3
    a, b = torch.randn(m, k), torch.randn(k, n)
    (mm,) = _run(lambda: a @ b)
    assert mm.bytes == (m * k + k * n + m * n) * F32
    assert (mm.read_bytes, mm.write_bytes) == ((m * k + k * n) * F32, m * n * F32)


def test_a_matmul_of_three_dimensions_is_views_around_one_mm():
    x, w = torch.randn(2, 3, 4), torch.randn(4, 5)
    ops = _run(lambda: x @ w)
    assert [o.name for o in ops if not o.is_view] == ["mm"]
    assert "_unsafe_view" in [o.name for o in ops if o.is_view]  # a fresh tensor by its schema, no data moved


def test_in_place_ops_write_what_they_touch():
    cache, new = torch.zeros(4, 8), torch.randn(1, 8)
    ops = _run(lambda: cache.narrow(0, 2, 1).copy_(new))
    assert [(o.name, o.kind) for o in ops] == [("slice", VIEW), ("copy_", "copy")]
    assert (ops[1].read_bytes, ops[1].write_bytes) == (8 * F32, 8 * F32)  # copy_ does not read its target
    (add,) = _run(lambda: cache.add_(1.0))
    assert (add.read_bytes, add.write_bytes) == (32 * F32, 32 * F32)
    idx, values = torch.tensor([0, 3]), torch.randn(2, 8)
    (put,) = _run(lambda: cache.index_put_((idx,), values))
    assert put.kind == "scatter" and put.host == "index"
    assert (put.read_bytes, put.write_bytes) == (2 * 8 + 16 * F32, 16 * F32)  # int64 indices + values


def test_a_gather_reads_the_elements_it_picks_not_the_whole_table():
    table, idx = torch.randn(100, 8), torch.tensor([5, 7, 5])
    (sel,) = _run(lambda: table.index_select(0, idx))
    assert (sel.kind, sel.host) == ("index", "index")
    assert (sel.read_bytes, sel.write_bytes) == (3 * 8 * F32 + 3 * 8, 3 * 8 * F32)  # 3 rows + int64 indices
    cols = torch.tensor([[0, 1]] * 100)
    (gat,) = _run(lambda: torch.gather(table, 1, cols))
    assert gat.read_bytes == 200 * F32 + 200 * 8
    twice = torch.arange(100).repeat(2)
    (every,) = _run(lambda: table.index_select(0, twice))
    assert every.read_bytes == 800 * F32 + 200 * 8  # at most the whole table
    for fn in (lambda: table[idx], lambda: torch.nn.functional.embedding(idx, table)):  # index, embedding
        (op,) = _run(fn)
        assert (op.kind, op.read_bytes, op.write_bytes) == ("index", 3 * 8 * F32 + 3 * 8, 3 * 8 * F32)


def test_broadcast_inputs_count_once_and_unknown_ops_are_kept():
    base = torch.randn(1, 8)
    assert footprint(base.expand(16, 8)) == 8 * F32
    assert footprint(torch.randn(4, 6).t()) == 24 * F32
    ops = _run(lambda: torch.nonzero(base > 0))
    trace = Trace("tiny", None, ops)
    assert trace.summary().other == {"nonzero": 1}  # listed by name, not dropped
    assert [o.kind for o in ops] == ["elementwise", "other"]


def test_train_traces_forward_and_backward_without_the_random_gradient():
    shape = Shape(T=16, d=32, heads=2, dtype="fp32", phase="train")
    trace = trace_variant("flash", shape)
    names = [o.name for o in trace.ops]
    assert "randn_like" not in names
    sdpa = [o.name for o in trace.kernels if o.kind == "sdpa"]
    assert len(sdpa) == 2 and sdpa[1].endswith("_backward")
    assert trace.totals()["matmul"].count == 12  # 4 projections, 2 gradients each


def test_module_trace_does_not_grow_between_calls():
    x = torch.randn(3, 4, requires_grad=True)
    lin = torch.nn.Linear(4, 2, bias=False)
    first = trace_module(lin, (x,), train=True)
    second = trace_module(lin, (x,), train=True)
    assert [o.name for o in first] == [o.name for o in second]  # gradients were cleared after the warm-up
    assert [o.name for o in trace_module(lin, (x,), train=False)] == ["Linear", "t", "mm"]  # the call, then its ops


def test_view_table_matches_the_schemas():
    """Every op the table lists as a view is one by its schema (but _unsafe_view, a fresh tensor that
    moves no data); no op listed as a kernel is."""
    aten = torch.ops.aten
    for kind, names in ATEN_KINDS.items():
        for name in names:
            packet = getattr(aten, name, None)
            if packet is None:  # not in this torch build
                continue
            for overload in packet.overloads():
                op = getattr(packet, overload)
                if not any(str(r.type).startswith("Tensor") for r in op._schema.returns):
                    continue  # int / str overloads (slice.t, split.str)
                view = op.is_view or torch.Tag.inplace_view in op.tags
                assert view == (kind == VIEW) or name == "_unsafe_view", (kind, name, overload)


def test_kinds_vocabulary_is_closed():
    assert set(ATEN_KINDS) <= set(KINDS) | {VIEW}
    assert set(HOST_CLASS) == set(KINDS) | {VIEW, CALL, AUTOGRAD}
    assert set(HOST_CLASS.values()) == set(HOST_CLASSES)


def test_comparison_agrees_with_itself_and_flags_a_difference():
    trace = trace_variant("mha", Shape(T=16, d=32, heads=2, dtype="fp32"))
    s = trace.summary()
    same = compare(s, trace.summary())
    assert same.agree and not same.disagreements
    assert [r.kind for r in same.rows][-2:] == [VIEW, CALL]
    fewer = OpSummary(kernels={k: KindTotal(t.count, t.bytes) for k, t in s.kernels.items()}, views=s.views,
                      calls=s.calls)
    fewer.kernels["matmul"].bytes *= 1.03  # 3% more bytes than the trace: beyond 2%
    assert [r.kind for r in compare(fewer, s).disagreements] == ["matmul"]
    fewer.kernels["matmul"].bytes = s.kernels["matmul"].bytes * 1.01  # within 2%
    assert compare(fewer, s).agree
    fewer.views -= 1
    assert [r.kind for r in compare(fewer, s).disagreements] == [VIEW]


def test_graph_kinds():
    from attncost.costmodel.analysis import analyse
    from attncost.costmodel.estimate import graph

    kinds = [graph_kind(k) for k in analyse(graph("topk", Shape(T=64, d=64, heads=2, phase="train"))).kernels]
    assert {"matmul", "topk", "index", "scatter", "elementwise"} <= set(kinds)  # a gather's gradient scatters
    kinds = [graph_kind(k) for k in analyse(graph("flash", Shape(T=64, d=64, heads=2))).kernels]
    assert [k for k in kinds if k not in ("view", "call")] == ["matmul"] * 3 + ["sdpa", "matmul"]
    assert kinds.count("call") == 5  # the layer, and its four nn.Linear


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_projections_agree_with_the_graph(phase):
    """The matmuls of flash are what the graph says, bytes included (the rest is still to close)."""
    from attncost.costmodel.estimate import graph
    from attncost.costmodel.opkinds import graph_summary

    shape = Shape(T=16, d=32, heads=2, dtype="fp32", phase=phase)
    comparison = compare(graph_summary(graph("flash", shape)), trace_variant("flash", shape).summary())
    rows = {r.kind: r for r in comparison.rows}
    assert rows["matmul"].agree and rows["sdpa"].graph_count == rows["sdpa"].trace_count == 1
