"""How far each variant's cost-model graph is from what its module runs. Prints counts; asserts nothing.

For every variant x {prefill, decode, train} at one small shape (default parameters): the kernels
of the graph (``costmodel.opkinds.graph_summary``) beside the aten kernels a dispatch trace of the
module records (``profiler.trace.trace_variant``), and the host-only view ops of each, then the
kinds whose count differs or whose bytes differ by more than 2% (graph -> trace).

Run: python bench/op_gap.py [--T 256] [--d 64] [--heads 4] [--batch 1]
"""

import argparse
import time


def gap_rows(T: int, d: int, heads: int, batch: int) -> list:
    """(variant, phase, comparison or the reason it does not apply) for every variant and phase."""
    from attncost.costmodel.estimate import graph, resolve_params
    from attncost.costmodel.opkinds import compare, graph_summary
    from attncost.costmodel.shape import Shape
    from attncost.costmodel.units import PHASES
    from attncost.costmodel.variants import NAMES, VariantError
    from attncost.profiler.modules.flex import with_window_kernel
    from attncost.profiler.trace import trace_variant

    rows = []
    for variant in NAMES:
        for phase in PHASES:
            shape = Shape(T=T, d=d, heads=heads, batch=batch, dtype="fp32", phase=phase)
            try:
                p = resolve_params(variant, shape, with_window_kernel(variant, None, "cpu"))  # what runs here
                g = graph_summary(graph(variant, shape, p))
            except VariantError as err:
                rows.append((variant, phase, str(err)))
                continue
            rows.append((variant, phase, compare(g, trace_variant(variant, shape, p).summary())))
    return rows


def _differing(comparison) -> str:
    parts = []
    for r in comparison.disagreements:
        if r.kind == "view":
            continue
        text = f"{r.kind} {r.graph_count}->{r.trace_count}"
        if r.graph_count == r.trace_count:
            text += f" ({r.bytes_diff:+.1%} B)" if r.bytes_diff is not None else ""
        parts.append(text)
    return ", ".join(parts) or "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # tiny CPU kernels: more threads only contend
    t0 = time.perf_counter()
    rows = gap_rows(args.T, args.d, args.heads, args.batch)
    print(f"graph vs trace at T {args.T}, d {args.d}, {args.heads} heads, batch {args.batch}, fp32, CPU "
          f"(kernels, views: counts; differing kinds: graph -> trace)")
    print(f"{'variant':<15}{'phase':<9}{'kernels':>8}{'traced':>8}{'views':>7}{'traced':>8}  differing kinds")
    totals = [0, 0, 0, 0]
    for variant, phase, c in rows:
        if isinstance(c, str):
            print(f"{variant:<15}{phase:<9}{'n/a':>8}  {c}")
            continue
        g = sum(r.graph_count for r in c.rows if r.kind != "view")
        t = sum(r.trace_count for r in c.rows if r.kind != "view")
        view = c.rows[-1]
        for i, n in enumerate((g, t, view.graph_count, view.trace_count)):
            totals[i] += n
        print(f"{variant:<15}{phase:<9}{g:>8}{t:>8}{view.graph_count:>7}{view.trace_count:>8}  {_differing(c)}")
    print(f"{'all':<24}{totals[0]:>8}{totals[1]:>8}{totals[2]:>7}{totals[3]:>8}")
    agree = sum(1 for *_, c in rows if not isinstance(c, str) and c.agree)
    applies = sum(1 for *_, c in rows if not isinstance(c, str))
    print(f"{agree} of {applies} (variant, phase) points agree kind by kind; traced in "
          f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
