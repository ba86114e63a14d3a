"""`attncost crosscheck --ops`: each variant's cost-model graph beside a trace of what its module
runs, counted by op kind (``costmodel.opkinds``): kernels and the bytes they move, and host-only
view ops. Exit 1 where any kind disagrees. torch is imported inside the command only."""

from pathlib import Path
from dataclasses import dataclass, field
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..costmodel.opkinds import BYTES_TOLERANCE, HOST_ONLY, OpComparison, OpSummary, compare, graph_summary
from ..costmodel.shape import Shape
from ..costmodel.units import PHASES
from ..reports.fmt import count, nbytes, pct
from .errors import fail
from .layout import fit_console, print_json
from .options import (BACKEND_CHOICES, DEVICE_CHOICES, check_choice, check_params, make_shape,
                      parse_ints, parse_params, parse_T, parse_variants, write_csv)

console = Console(highlight=False)

CONVENTIONS = (
    "kernels: aten ops that launch work, by kind (costmodel/opkinds.py); view: host-only ops "
    "(views, transposes, expands), which the graphs carry as Graph.views; call: nn.Module calls "
    "(the layer, each nn.Linear), no aten op, the graphs' Graph.calls",
    "bytes: tensors read + written, a kernel at a time (the graph's fused kernels; the trace's "
    "aten ops, each distinct tensor counted once; a gather reads the elements it picks)",
    f"agree: the same count, and bytes within {BYTES_TOLERANCE:.0%} of the graph's; exit status 1 "
    "when any kind of any variant disagrees",
)


@dataclass
class OpsResult:
    """One variant at one shape: its graph and trace counted by kind, and their comparison."""

    variant: str
    shape: Shape
    params: dict = field(default_factory=dict)
    status: str = "ok"  # ok | n/a | error
    reason: Optional[str] = None
    graph: Optional[OpSummary] = None
    trace: Optional[OpSummary] = None
    comparison: Optional[OpComparison] = None

    @property
    def agree(self) -> bool:
        """n/a agrees (there is nothing to compare); an error does not."""
        return self.status == "n/a" or (self.comparison is not None and self.comparison.agree)

    def model_dump(self) -> dict:
        return {"variant": self.variant, "shape": self.shape.model_dump(), "params": self.params,
                "status": self.status, "reason": self.reason, "agree": self.agree,
                "rows": [r.model_dump() for r in self.comparison.rows] if self.comparison else [],
                "graph": self.graph.model_dump() if self.graph else None,
                "trace": self.trace.model_dump() if self.trace else None}


def ops_result(variant: str, shape: Shape, params: Optional[dict] = None, *, device: str = "cpu",
               backend: str = "auto") -> OpsResult:
    """``variant``'s graph and its module's trace at ``shape``, compared kind by kind."""
    from ..costmodel.estimate import graph, resolve_params
    from ..costmodel.variants import VariantError
    from ..profiler.trace import trace_variant

    from ..profiler.modules.flex import with_window_kernel

    params = with_window_kernel(variant, params, device)  # price the windowed kernel that runs here
    try:
        p = resolve_params(variant, shape, params)
        g = graph(variant, shape, p)
    except VariantError as err:
        return OpsResult(variant, shape, dict(params or {}), "n/a", str(err))
    result = OpsResult(variant, shape, p.model_dump(), graph=graph_summary(g))
    try:
        result.trace = trace_variant(variant, shape, p, device, backend=backend).summary()
    except RuntimeError as err:  # torch's errors (out of memory included): one variant must not stop the table
        result.status, result.reason = "error", " ".join(str(err).split())[:200]
        return result
    result.comparison = compare(result.graph, result.trace)
    return result


def ops_check(variants: str, d: str, T: str, shape_fields: dict, param, backend: str, device: str,
              as_json: bool, csv_path: Optional[Path] = None, wide: bool = False) -> None:
    """The command: parse the flags, compare every variant at every shape, print, exit 1 on a
    disagreement. ``shape_fields``: heads, kv_heads, batch, phase, causal; ``csv_path``: also a
    CSV file, a line per kind of each variant."""
    check_choice(shape_fields["phase"], PHASES, "--phase")
    check_choice(backend, BACKEND_CHOICES, "--backend")
    names = parse_variants(variants)
    params = parse_params(param)
    shapes = [make_shape(T=t, d=w, dtype="fp32", **shape_fields) for w in parse_ints(d, "--d") for t in parse_T(T)]
    for s in shapes:
        for v in params:
            check_params(v, params[v], s)
    dev = _device(device)
    results = [ops_result(v, s, params.get(v), device=dev, backend=backend) for s in shapes for v in names]
    ok = all(r.agree for r in results)
    if csv_path is not None:
        write_csv(csv_path, [line for r in results for line in _csv_lines(r.model_dump())])
    if as_json:
        print_json({"conventions": list(CONVENTIONS), "tolerance": BYTES_TOLERANCE, "ok": ok,
                    "results": [r.model_dump() for r in results]})
    else:
        fit_console(console, wide)
        print_results(results)
    if not ok:
        raise typer.Exit(1)


def _csv_lines(doc: dict) -> list:
    """A result's --json fields, once per kind (its ``rows``), without the graph and trace totals."""
    head = {k: v for k, v in doc.items() if k not in ("rows", "graph", "trace")}
    return [{**head, **row} for row in doc["rows"]] or [head]


def _device(name: str) -> str:
    from ..profiler.device import DeviceError, resolve_device

    check_choice(name.lower(), DEVICE_CHOICES, "--device")
    try:
        return resolve_device(name.lower())
    except DeviceError as err:
        raise fail(str(err))


# -- presentation ------------------------------------------------------------------------------

def _shape_text(s: Shape) -> str:
    return (f"{s.phase} · batch {s.batch} · T {s.T:,} · d {s.d:,} · {s.heads} heads · {s.dtype}"
            + ("" if s.causal else " · non-causal"))


def print_results(results: list) -> None:
    """One table per shape: a row per kind of each variant, graph beside trace."""
    by_shape: dict = {}
    for r in results:
        by_shape.setdefault(r.shape, []).append(r)
    for shape, rows in by_shape.items():
        console.print(_table(shape, rows))
    for r in results:
        if r.status != "ok":
            console.print(f"[dim]- {r.variant}: {escape(r.reason or '')}[/]")
        elif r.trace.other:
            names = ", ".join(f"{k} x{n}" for k, n in r.trace.other.items())
            console.print(f"[dim]- {r.variant}: traced ops of no known kind: {escape(names)}[/]")
    differ = sorted({r.variant for r in results if not r.agree})
    if differ:
        console.print(f"[bold red]graph and trace differ:[/] {', '.join(differ)}")
    else:
        console.print("[green]graph and trace agree, kind by kind, for every variant that applies.[/]")


def _table(shape: Shape, results: list) -> Table:
    t = Table(box=box.SIMPLE_HEAD, title=f"Ops by kind: graph vs trace · {_shape_text(shape)}",
              caption="\n".join(CONVENTIONS), caption_justify="left", show_edge=False, pad_edge=False,
              padding=(0, 1))
    for col in ("variant", "kind", "graph", "trace", "graph bytes", "trace bytes", "Δ bytes", ""):
        t.add_column(col, justify="left" if col in ("variant", "kind", "") else "right", no_wrap=True)
    for r in results:
        if r.status != "ok":
            style = "yellow" if r.status == "n/a" else "bold red"
            t.add_row(r.variant, f"[{style}]{r.status}[/]", *[""] * 6)
            t.add_section()
            continue
        for i, row in enumerate(r.comparison.rows):
            view = row.kind in HOST_ONLY
            mark = "[green]ok[/]" if row.agree else "[bold red]differs[/]"
            t.add_row(r.variant if i == 0 else "", f"{row.kind} (host)" if view else row.kind, count(row.graph_count),
                      count(row.trace_count), "–" if view else nbytes(row.graph_bytes),
                      "–" if view else nbytes(row.trace_bytes), "–" if view else pct(row.bytes_diff), mark)
        t.add_section()
    return t
