"""The cost model's graph lists what the variant's module runs: kernel by kernel kind (the same count,
bytes within 2%) and the same number of host-only view ops, in prefill and decode, at two shapes;
and in train, forward and backward (``analysis.add_backward`` against autograd), for ``TRAIN_VARIANTS``.

Another variant joins by adding its name to ``VARIANTS`` (and, where its defaults do not fit the
shapes below, its parameters to ``PARAMS``); a variant without a decode path is tested in prefill.
A variant whose backward does not match yet is named in ``TRAIN_PENDING`` with what it lacks.
"""

import pytest

from attncost.costmodel.estimate import graph, resolve_params
from attncost.costmodel.opkinds import VIEW, compare, graph_summary
from attncost.costmodel.shape import Shape
from attncost.costmodel.variants import REGISTRY
from attncost.profiler.trace import trace_variant

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = ["mha", "flash", "gqa", "mqa", "sliding_window", "topk", "mlp_attention", "msla",
            "mla", "dsa", "linformer", "nystrom", "performer"]
PARAMS: dict = {"sliding_window": {"window": 100, "kernel": "masked"},  # a band narrower than T: the mask is no plain causal one
                "dsa": {"k": 64},  # k < T: the causal kernel of the first k queries, then gathers and sparse kernels
                "linformer": {"k": 64}}  # at most T
PHASES = ["prefill", "decode"]
SHAPES = {"B1T256d64H4": dict(batch=1, T=256, d=64, heads=4), "B2T128d128H8": dict(batch=2, T=128, d=128, heads=8)}
CASES = [(variant, phase, shape_id) for variant in VARIANTS for phase in PHASES
         if phase != "decode" or REGISTRY[variant].decode for shape_id in SHAPES]
TRAIN_VARIANTS = ["flash", "gqa", "mqa", "sliding_window", "linformer"]
TRAIN_PENDING = {  # what the forward graph does not yet say that autograd does
    "mha": "Op.grad_copy: q and v (and k of several sequences) copied back from head-major gradients",
    "mlp_attention": "Op.grad_copy: h and v copied back from head-major gradients",
    "topk": "a fill kind in opkinds.GRAPH_KINDS; the gather from V expanded over the queries (its gradient "
            "is B*L*H*T*dh zeros, scattered, then summed)",
    "msla": "a fill kind; the gather from latents expanded over the rows; Op.backward 'sum' of sum_latents; "
            "Op.grad_copy of the latents",
    "mla": "RoPE's rotation, three slices whose gradients are three slice_backward copies and adds; Op.grad_copy",
    "dsa": "a fill kind; RoPE's rotation; the indexer's and gathers' backward",
    "nystrom": "subtractions and sums labelled add and mean (Op.backward), the convolution's backward, copies",
    "performer": "subtractions and sums labelled add and mean (Op.backward), the stabiliser's max, division, copies",
}
TRAIN_CASES = [(variant, "train", shape_id) for variant in TRAIN_VARIANTS for shape_id in SHAPES]


def _disagreements(comparison) -> str:
    lines = []
    for r in comparison.disagreements:
        line = f"  {r.kind}: graph {r.graph_count}, trace {r.trace_count}"
        if r.kind != VIEW:
            diff = "" if r.bytes_diff is None else f", {r.bytes_diff:+.1%}"
            line += f" ({r.graph_bytes:.0f} B vs {r.trace_bytes:.0f} B{diff})"
        lines.append(line)
    return "\n".join(lines)


def test_every_variant_is_tested_in_train_or_named_pending():
    assert sorted(TRAIN_VARIANTS + list(TRAIN_PENDING)) == sorted(VARIANTS)
    assert not set(TRAIN_VARIANTS) & set(TRAIN_PENDING)


@pytest.mark.parametrize("variant, phase, shape_id", CASES + TRAIN_CASES)
def test_graph_matches_the_trace(variant, phase, shape_id):
    shape = Shape(**SHAPES[shape_id], phase=phase, dtype="fp32")
    params = resolve_params(variant, shape, PARAMS.get(variant))
    comparison = compare(graph_summary(graph(variant, shape, params)), trace_variant(variant, shape, params).summary())
    assert comparison.agree, f"{variant} {phase} {shape_id}: graph and trace differ\n{_disagreements(comparison)}"
