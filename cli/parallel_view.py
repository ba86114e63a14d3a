"""`attncost predict --tp N` / `--cp N --cp-kind ring|ulysses`: one layer split over N devices, per device;
`attncost profile --tp N` / `--cp N`: the same layer measured on N processes beside that prediction."""

import os

from rich.markup import escape

from ..costmodel.parallel import (CP_KINDS, Layout, ParallelError, check_counts, check_layout, check_shape,
                                  fits_until_T, measured_variants, pays_from_T, predict_parallel, scheme_of)
from ..costmodel.units import MIB
from ..reports.fmt import ms, nbytes, pct, sig
from .errors import fail
from .layout import SECTION, Column, datasheet_warning, print_json, print_table, screen
from .options import (RESULTS_FILE, check_choice, check_output, check_param_values, load_hardware, make_shape,
                      parse_params, parse_T, parse_variants)


def parse_layout(tp: int, cp: int, cp_kind: str, sequence_parallel: bool) -> Layout:
    """The --tp / --cp / --cp-kind / --sequence-parallel flags as a Layout (one sentence if they clash)."""
    check_choice(cp_kind, CP_KINDS, "--cp-kind")
    layout = Layout(tp=tp, cp=cp, cp_kind=cp_kind, sequence_parallel=sequence_parallel)
    try:
        check_counts(layout)
    except ParallelError as err:
        raise fail(str(err))
    if sequence_parallel and tp == 1:
        raise fail("--sequence-parallel applies only with --tp")
    return layout


def check_shapes(shapes: list, layout: Layout) -> None:
    """What no variant can split is a flag error (one sentence), not a row or a skip per variant."""
    for s in shapes:
        try:
            check_shape(s, layout)
        except ParallelError as err:
            raise fail(str(err)) from None


def run(names: list, shapes: list, params: dict, hw, layout: Layout, as_json: bool, wide: bool) -> None:
    """Print (or dump as JSON) each variant at each shape on ``layout``, beside one device."""
    if hw.interconnect is None:
        raise fail(f"--hardware {hw.name} has no interconnect figures: choose one that has (h100, h200, a100, l4, "
                   f"rtx4090) or calibrate one with `attncost calibrate --nproc N`")
    check_shapes(shapes, layout)
    rows, doc = [], []
    for s in shapes:
        if rows:
            rows.append(SECTION)
        for v in names:
            p = params.get(v)
            e = predict_parallel(v, s, layout, hw, p)
            one = predict_parallel(v, s, Layout(), hw, p)
            pays = pays_from_T(v, s, layout, hw, p) if e.status == "ok" else None
            full = fits_until_T(v, s, hw, p) if one.status == "ok" else None
            doc.append({**e.model_dump(), "single_time_s": one.time_s, "pays_from_T": pays,
                        "single_device_full_from_T": full})
            rows.append(_row(e, one, pays, full, len(shapes) > 1))
    if as_json:
        print_json({"hardware": hw.name, "interconnect": hw.interconnect.model_dump(),
                    "results": doc})
        return
    _print(rows, shapes, hw, layout, len(shapes) > 1, wide, doc)


def _row(e, one, pays, full, lead: bool) -> list:
    head = [f"{e.shape.T:,}"] if lead else []
    if e.status != "ok":
        return head + [e.variant] + ["–"] * 9
    never = "never"
    return head + [e.variant, ms(e.compute_s, unit=False), ms(e.comm_s, unit=False),
                   pct(e.hidden_s / e.comm_s, signed=False) if e.comm_s else "–", ms(e.time_s, unit=False),
                   ms(one.time_s, unit=False), sig(e.memory_bytes / MIB), sig(e.activation_bytes / MIB),
                   f"{pays:,}" if pays else never, f"{full:,}" if full else never]


def _print(rows, shapes, hw, layout: Layout, lead: bool, wide: bool, doc: list) -> None:
    console = screen(wide)
    s0 = shapes[0]
    scheme = (f"--tp {layout.tp}" + (" (sequence parallel)" if layout.sequence_parallel else "")
              if layout.tp > 1 else f"--cp {layout.cp} {layout.cp_kind}")
    console.print(f"[bold]one attention layer on {layout.gpus} devices[/] ({scheme}), figures per device · "
                  f"{s0.phase} · d {s0.d:,} · {s0.heads} heads · {s0.dtype} · {hw.name} · "
                  f"{escape(hw.interconnect.name)}")
    cols = ([Column("T")] if lead else []) + [
        Column("variant", "left"), Column("compute\nms"), Column("comm\nms"), Column("comm\nhidden"),
        Column("ms /\ndevice"), Column("ms on\n1 device"), Column("memory\nMiB"), Column("act MiB", wide=True),
        Column("N pays\nfrom T", "left"), Column("1 device\nfull at T", "left")]
    print_table(console, cols, rows, wide=wide, keys=2 if lead else 1)
    console.print(f"[dim]compute: the device's kernels priced by the single-device model on its share of the layer; "
                  f"comm: its collectives (alpha-beta, ring algorithms) at {hw.interconnect.bandwidth_Bps / 1e9:.3g} GB/s "
                  f"per direction and {hw.interconnect.latency_s * 1e6:.3g} us per message "
                  f"({escape(hw.interconnect.source)}); comm hidden: the share overlapped with compute (ring "
                  f"attention's block transfers). memory: weights + activations + KV cache per device. 'N pays "
                  f"from T': the smallest T where the time per device is below one device's; '1 device full at T': "
                  f"where one device no longer holds the layer ({nbytes(hw.mem_bytes)}).[/]")
    for d in doc:
        if d["status"] != "ok":
            console.print(f"[dim]- {escape(d['reason'] or '')}[/]")
    warn = datasheet_warning(hw)
    if warn:
        console.print(warn)


# -- `attncost profile --cp N` / `--tp N` ----------------------------------------------------------------
PARALLEL_DEFAULTS = dict(d=256, heads=8, T="256,512,1024")
PARALLEL_REPS = 20


def profile_parallel(o, command: str) -> None:
    """Measure the layer split over ``o.cp`` or ``o.tp`` ranks (spawned here, or this rank of a torchrun
    launch) beside its prediction; rank 0 writes the results file and prints the table."""
    layout = parse_layout(o.tp, o.cp, o.cp_kind, o.sequence_parallel)
    if o.phase not in ("prefill", "train") or o.resume or o.model is not None or o.exec_mode != "eager" or o.ops:
        raise fail("--cp and --tp measure the prefill or train (forward + backward) in eager mode: --phase decode, "
                   "--resume, --model, --exec and --ops do not apply to them")
    runs = measured_variants(scheme_of(layout))
    names = list(runs) if o.variants == "all" else parse_variants(o.variants)
    if set(names) - set(runs):
        raise fail(f"{', '.join(sorted(set(names) - set(runs)))}: {_scheme_flag(layout)} runs {', '.join(runs)}")
    params = parse_params(o.param)
    check_param_values(params)
    device = "cuda" if o.device in ("auto", "cuda") and _cuda() else "cpu"
    shapes = [make_shape(T=t, d=int(o.d or PARALLEL_DEFAULTS["d"]), heads=o.heads or PARALLEL_DEFAULTS["heads"],
                         batch=o.batch, dtype=o.dtype or ("bf16" if device == "cuda" else "fp32"), phase=o.phase)
              for t in parse_T(o.T or PARALLEL_DEFAULTS["T"])]
    check_shapes(shapes, layout)
    pairs, skipped = _runnable(names, shapes, params, layout)
    if not pairs:
        raise fail("nothing to measure: " + "; ".join(skipped))
    hw = load_hardware(o.hardware or ("h100" if device == "cuda" else "cpu"))
    tag = f"tp{layout.tp}{'-sp' if layout.sequence_parallel else ''}" if layout.tp > 1 else f"cp{layout.cp}-{layout.cp_kind}"
    out = check_output(o.out or f"runs/{tag}-{o.phase}-{device}.json", "--out", "run.json", kind=RESULTS_FILE,
                       inputs=[o.hardware], overwrite=o.overwrite)
    from ..profiler.distributed import DistributedError, parallel_point

    probes = [parallel_point(v, s, layout, hw if hw.interconnect else None, None if v == "sliding_window" else "flash",
                             params.get(v)) for v, s in pairs]  # a window's band mask: whichever backend takes it
    try:
        run = _launch(layout.gpus, device, str(out), probes, hw, command)
    except DistributedError as err:
        raise fail(str(err))
    if run is not None:
        _print_measured(run.points, out, hw, skipped)


def _scheme_flag(layout: Layout) -> str:
    return f"--tp {layout.tp}" if layout.tp > 1 else f"--cp-kind {layout.cp_kind}"


def _runnable(names: list, shapes: list, params: dict, layout: Layout) -> tuple:
    """([(variant, shape)] the layout splits, [one sentence for each variant it does not])."""
    pairs, skipped = [], {}
    for v in names:
        for s in shapes:
            try:
                check_layout(v, s, layout, params.get(v))
                pairs.append((v, s))
            except ParallelError as err:
                skipped.setdefault(v, str(err))
    return pairs, list(skipped.values())


def _launch(n: int, device: str, out: str, probes: list, hw, command: str):
    """Run every probe on ``n`` ranks: this process's rank under torchrun, else ``n`` spawned here."""
    from ..profiler.distributed import TIMEOUT, init, launched, run_parallel, spawn

    if not launched():
        return spawn(run_parallel, n, out, probes, PARALLEL_REPS, hw, command, device=device)[0]
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world != n:
        raise fail(f"{n} ranks asked for under a launcher of {world} processes: they must be equal")
    init(rank, n, device, 0)
    try:
        return run_parallel(rank, n, device, TIMEOUT, out, probes, PARALLEL_REPS, hw, command)
    finally:
        dist.destroy_process_group()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _print_measured(points: list, path, hw, skipped: list) -> None:
    console = screen()
    cols = [Column("variant", "left"), Column("T"), Column("ms\nmeasured"), Column("ms\npredicted"), Column("error"),
            Column("ms by rank", "left"), Column("bytes sent\nby rank", "left"), Column("bytes\npredicted")]
    rows = []
    for p in points:
        err = p.predicted_time_s / p.timing.median_s - 1 if p.predicted_time_s and p.timing else None
        rows.append([p.variant, f"{p.shape.T:,}", ms(p.timing.median_s, unit=False) if p.timing else "–",
                     ms(p.predicted_time_s, unit=False) if p.predicted_time_s else "–",
                     pct(err) if err is not None else "–",
                     ", ".join(ms(t, unit=False) for t in p.rank_times_s or []),
                     ", ".join(f"{b:,.0f}" for b in p.rank_bytes_sent or []),
                     f"{p.predicted_bytes_sent:,.0f}" if p.predicted_bytes_sent is not None else "–"])
    print_table(console, cols, rows)
    console.print(f"Wrote {path} ({len(points)} points).", soft_wrap=True)
    for why in skipped:
        console.print(f"[dim]- not measured: {escape(why)}[/]")
    console.print(f"[dim]measured: the slowest rank's median; predicted: one device, `attncost predict --tp/--cp` "
                  f"on {escape(hw.name)}{'' if hw.interconnect else ' (no interconnect figures: none)'}.[/]")
