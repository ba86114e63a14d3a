"""`attncost predict ... --kernels VARIANT`: inside one prediction, a row per kernel (and per
host-only op, where a graph carries them): its ops, kind (``costmodel.opkinds``), FLOPs, bytes,
predicted device time, what bounds it, and whether it runs on the device or the host. No torch."""


from rich.markup import escape

from ..costmodel.analysis import analyse
from ..costmodel.estimate import graph, resolve_params
from ..costmodel.opkinds import HOST_ONLY, graph_kind
from ..costmodel.shape import Shape
from ..costmodel.timing import compiled, host_only_s, predict
from ..costmodel.variants import NAMES, VariantError
from ..reports.fmt import flops, ms, nbytes, pct
from .errors import fail
from .layout import Column, datasheet_warning, print_json, print_table, screen
from .options import check_choice

# KernelTime.bound of a kernel timed alone on the device (no host): its fixed latency outweighs its work
_DEVICE_BOUND = {"overhead": "latency"}


def kernel_rows(variant: str, shape: Shape, params, hw) -> tuple:
    """(rows, totals, params) of ``variant`` at ``shape`` on ``hw``: a dict per kernel in launch
    order, the layer's times (``timing.predict``: eager, with the device time of every kernel summed as
    ``device_s``). Each kernel row's ``time_s`` is the kernel's own device time (latency + work), so the
    device rows sum to ``device_s``; a row of host-only ops has the host's time to run them (views:
    ``Hardware.view_overhead_s`` each, module calls: ``module_overhead_s`` each, the autograd engine:
    ``autograd_node_s`` per node and ``backward_call_s``; 0 where not measured);
    and the resolved parameters. VariantError where the variant does not apply."""
    p = resolve_params(variant, shape, params)
    kernels = analyse(graph(variant, shape, p)).kernels
    device = predict(kernels, hw, shape.dtype, mode="graph")
    eager = predict(kernels, hw, shape.dtype)
    rows = []
    profile = compiled(hw, shape.dtype)
    for i, (k, t) in enumerate(zip(kernels, device.per_kernel)):
        kind = graph_kind(k)
        if kind in HOST_ONLY:  # views, module calls, the autograd engine: host time, no device time
            time_s, bound, where = host_only_s(profile, k), "host", "host"
        else:
            time_s, bound, where = t.time_s, _DEVICE_BOUND.get(t.bound, t.bound), "device"
        rows.append({"index": i, "op": k.name, "ops": [o.name for o in k.ops], "kind": kind, "flops": k.flops,
                     "bytes": k.bytes, "time_s": time_s, "bound": bound, "where": where})
    totals = {"time_s": eager.time_s, "device_s": eager.device_s, "host_s": eager.host_s, "mode": eager.mode,
              "bound": eager.bound, "backend": eager.backend, "kernels": len(kernels)}
    return rows, totals, p


def kernels_report(text: str, shapes: list, params: dict, hw, as_json: bool, wide: bool = False) -> None:
    """The command's --kernels branch: one variant at one shape, as a table or JSON."""
    variant = text.strip()
    if "," in variant or variant.lower() == "all":
        raise fail(f"--kernels takes one variant, not {text!r}: name one of {', '.join(NAMES)}")
    check_choice(variant, NAMES, "--kernels")
    if len(shapes) != 1:
        raise fail("--kernels takes one --T and one --d")
    shape = shapes[0]
    try:
        rows, totals, p = kernel_rows(variant, shape, params.get(variant), hw)
    except VariantError as err:
        raise fail(f"--kernels {variant}: {err}")
    if as_json:
        print_json({"variant": variant, "params": p.model_dump(), "shape": shape.model_dump(),
                    "hardware": hw.name, "totals": totals, "rows": rows})
        return
    _print(variant, shape, hw, rows, totals, wide)


def _op_text(row: dict) -> str:
    ops = row["ops"]
    return row["op"] if ops == [row["op"]] else f"{row['op']}: {'+'.join(ops)}"


def _print(variant: str, shape: Shape, hw, rows: list, totals: dict, wide: bool) -> None:
    device_s = totals["device_s"]
    console = screen(wide)
    cols = [Column("#"), Column("op", "left", wrap=True), Column("kind", "left"), Column("FLOPs"), Column("bytes"),
            Column("ms"), Column("%"), Column("bound", "left"), Column("on", "left")]
    cells = [[str(r["index"]), escape(_op_text(r)), r["kind"], flops(r["flops"]), nbytes(r["bytes"]),
              ms(r["time_s"], unit=False), pct(r["time_s"] / device_s if device_s else None, signed=False),
              r["bound"], r["where"]] for r in rows]
    print_table(console, cols, cells, wide=wide, keys=2,
                title=f"{variant} · {shape.phase} · batch {shape.batch} · T {shape.T:,} · d {shape.d:,} · "
                      f"{shape.heads} heads · {shape.dtype} · {hw.name} (one layer)")
    console.print(f"device {ms(device_s)} (the rows' sum) · host {ms(totals['host_s'])} issuing "
                  f"{totals['kernels']} kernels · layer {ms(totals['time_s'])} eager, {totals['bound']}-bound")
    console.print("[dim]ms: each kernel's device time (fixed latency + its work, compute or memory, whichever "
                  "is longer" + ("; + fetching anew the weights, caches and inputs the layer's own traffic "
                                 "evicted" if hw.cold_from_bytes else "")
                  + "); eager, the host issues each kernel and a kernel may wait for it.[/]")
    warn = datasheet_warning(hw)
    if warn:
        console.print(warn)
