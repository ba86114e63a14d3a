"""The cost model's graph lists what the variant's module runs: kernel by kernel kind (the same count,
bytes within 2%) and the same number of host-only view ops, in prefill, decode and train (forward and
backward: ``analysis.add_backward`` against autograd), at two shapes.

Another variant joins by adding its name to ``VARIANTS`` (and, where its defaults do not fit the
shapes below, its parameters to ``PARAMS``); a variant without a decode path is tested in prefill
and train.
"""

import pytest

from attncost.costmodel.estimate import graph, resolve_params
from attncost.costmodel.opkinds import VIEW, compare, graph_summary
from attncost.costmodel.shape import Shape
from attncost.costmodel.units import PHASES
from attncost.costmodel.variants import REGISTRY
from attncost.profiler.trace import trace_variant

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = ["mha", "flash", "gqa", "mqa", "sliding_window", "topk", "mlp_attention", "msla",
            "mla", "dsa", "linformer", "nystrom", "performer"]
PARAMS: dict = {"sliding_window": {"window": 100, "kernel": "masked"},  # a band narrower than T: the mask is no plain causal one
                "dsa": {"k": 64},  # k < T: the causal kernel of the first k queries, then gathers and sparse kernels
                "linformer": {"k": 64}}  # at most T
SHAPES = {"B1T256d64H4": dict(batch=1, T=256, d=64, heads=4), "B2T128d128H8": dict(batch=2, T=128, d=128, heads=8)}
CASES = [(variant, phase, shape_id) for variant in VARIANTS for phase in PHASES
         if phase != "decode" or REGISTRY[variant].decode for shape_id in SHAPES]


def _disagreements(comparison) -> str:
    lines = []
    for r in comparison.disagreements:
        line = f"  {r.kind}: graph {r.graph_count}, trace {r.trace_count}"
        if r.kind != VIEW:
            diff = "" if r.bytes_diff is None else f", {r.bytes_diff:+.1%}"
            line += f" ({r.graph_bytes:.0f} B vs {r.trace_bytes:.0f} B{diff})"
        lines.append(line)
    return "\n".join(lines)


def test_every_variant_is_tested():
    assert sorted(VARIANTS) == sorted(REGISTRY)


@pytest.mark.parametrize("variant, phase, shape_id", CASES)
def test_graph_matches_the_trace(variant, phase, shape_id):
    shape = Shape(**SHAPES[shape_id], phase=phase, dtype="fp32")
    params = resolve_params(variant, shape, PARAMS.get(variant))
    comparison = compare(graph_summary(graph(variant, shape, params)), trace_variant(variant, shape, params).summary())
    assert comparison.agree, f"{variant} {phase} {shape_id}: graph and trace differ\n{_disagreements(comparison)}"


def _autograd_nodes(out) -> int:
    """The nodes of the autograd graph behind ``out`` (those its backward runs)."""
    seen, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(n for n, _ in node.next_functions)
    return len(seen)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_graph_counts_the_autograd_nodes_within_a_tenth(variant):
    """The backward's node count (``analysis.add_backward``: each forward op and view the gradient
    flows through, each leaf) against the module's autograd graph, at both shapes."""
    from attncost.profiler.modules import build_module

    for shape_id in SHAPES:
        shape = Shape(**SHAPES[shape_id], phase="train", dtype="fp32")
        params = resolve_params(variant, shape, PARAMS.get(variant))
        counted = sum(op.elems for op in graph(variant, shape, params).ops if op.kind == "autograd")
        module, inputs = build_module(variant, shape, params)
        traced = _autograd_nodes(module(*inputs))
        assert abs(counted - traced) <= 0.1 * traced, (variant, shape_id, counted, traced)
