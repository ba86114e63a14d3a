"""`attncost pick` in words and in a figure: the sentences the CLI and the page share, the scatter
of the sweep (time against memory, the front drawn) and its page. Importing this module loads no
plotly: the figure and the page import it when they are built."""

from pathlib import Path
from typing import Optional

from ..costmodel.pick import CONSTRAINTS, Fidelity, Outcome, PickPoint, PickResult
from . import fmt

FIDELITY_METHOD = ("fidelity: from the --fidelity file, the worst over its input kinds, linear in log T and log "
                   "parameter between measured points (gqa and mqa by group size, heads/kv_heads); beyond the "
                   "measured T held at the nearest measured T (marked 'at T=...'), outside the measured parameter "
                   "range unknown (a point of unknown fidelity breaks a fidelity constraint); exact by construction: "
                   "mha, flash, a window or k of at least T.")
NO_FIDELITY = ("fidelity: unconstrained and unknown (no --fidelity file): the front weighs time and memory alone, "
               "and approximations are not told apart from exact attention.")


def flag(name: str) -> str:
    """The flag of a constraint: "max_kv" -> "--max-kv"."""
    return "--" + name.replace("_", "-")


def value_text(name: str, value: Optional[float]) -> str:
    """A constraint's value in its unit: 8 GiB, 1.2 ms, 0.95."""
    if value is None:
        return "unknown"
    attr = CONSTRAINTS[name][0]
    if attr == "time_s":
        return fmt.ms(value)
    return fmt.nbytes(value) if attr.endswith("bytes") else fmt.sig(value)


def limits_text(result: PickResult) -> str:
    """"--max-kv 64 MiB, --min-cosine 0.95", or "none"."""
    active = result.constraints.active()
    return ", ".join(f"{flag(n)} {value_text(n, v)}" for n, v in active.items()) or "none"


def params_text(params: dict) -> str:
    """"kv_heads=4, window=512"; "defaults" for none."""
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def tied_params_text(points: list) -> str:
    """The parameters of points that tie ("latents=32, 64 or 128"; one point: ``params_text``): the
    values they share once, then the one that differs, or each point's in turn where several do."""
    if len(points) == 1:
        return params_text(points[0].params)
    keys = list(points[0].params)
    differ = [k for k in keys if len({repr(p.params.get(k)) for p in points}) > 1]
    if len(differ) != 1 or any(list(p.params) != keys for p in points):
        return " or ".join(params_text(p.params) for p in points)
    values = [str(p.params[differ[0]]) for p in points]
    shared = [f"{k}={points[0].params[k]}" for k in keys if k != differ[0]]
    return ", ".join(shared + [f"{differ[0]}={', '.join(values[:-1])} or {values[-1]}"])


def point_label(p: PickPoint) -> str:
    """"gqa kv_heads=4", "flash"."""
    return f"{p.variant} {params_text(p.params)}" if p.params else p.variant


def fidelity_text(f: Fidelity, objective: Optional[str]) -> str:
    """The point's fidelity in the objective's terms: "0.987", "0.95 at T=4k", "exact", "unknown"."""
    if f.method == "exact":
        return "exact"
    value = f.rel_error if objective == "rel_error" else f.cosine
    if value is None:
        return "unknown"
    text = fmt.sig(value, 4)
    return text + (f" at T={fmt.tokens(f.held_T)}" if f.held_T is not None else "")


def fitting_values(result: PickResult, variant: str) -> str:
    """The swept values of ``variant`` among its points that meet every constraint: "kv_heads 2, 4"."""
    values: dict = {}
    for p in result.points:
        if p.variant == variant and p.status == "ok" and not p.broken:
            for k, v in p.params.items():
                values.setdefault(k, set()).add(v)
    return "; ".join(f"{k} {', '.join(str(v) for v in sorted(vs))}" for k, vs in values.items())


def excluded_text(result: PickResult) -> str:
    """"16 of 69 points break a constraint: --max-kv 16" (a point may break several)."""
    n = sum(1 for p in result.points if p.status == "ok" and p.broken)
    na = sum(1 for p in result.points if p.status != "ok")
    total = len(result.points)
    parts = [f"{n:,} of {total:,} points break a constraint"
             + (": " + ", ".join(f"{flag(k)} {c:,}" for k, c in result.excluded.items()) if result.excluded else "")]
    if len(result.excluded) > 1:
        parts.append("a point may break several")
    if na:
        parts.append(f"{na:,} do not apply here (the variants below say why)")
    return "; ".join(parts)


def outcome_text(result: PickResult, o: Outcome) -> str:
    """Why a variant has no point on the front, in one sentence (it names the values that fit)."""
    pts = result.points
    if o.na is not None:
        return f"does not apply: {o.na}"
    if o.excluded_by is not None:
        closest = pts[o.closest] if o.closest is not None else None
        attr = CONSTRAINTS[o.excluded_by][0]
        near = (f"; nearest: {value_text(o.excluded_by, getattr(closest, attr))} at {params_text(closest.params)}"
                if closest is not None and closest.params else
                f" ({value_text(o.excluded_by, getattr(closest, attr))})" if closest is not None else
                _unknown(result, o.variant))
        n = o.points - _na(result, o.variant)
        which = "its one point breaks" if n == 1 else f"all {n} points break"
        return f"excluded by {flag(o.excluded_by)}: {which} it{near}"
    if not o.feasible:
        counts = ", ".join(f"{flag(k)} {c}" for k, c in o.broken.items())
        return f"every point breaks some constraint, none breaks one alone ({counts})"
    best = pts[o.best]
    if o.points == 1:
        lead, its = f"its one point fits ({_costs(best)})", "but it"
    else:
        fits = fitting_values(result, o.variant)
        lead = f"{o.feasible} of {o.points} points fit" + (f" ({fits})" if fits else "")
        its = f"its best, {params_text(best.params)} ({_costs(best)}),"
    if o.dominated_by is None:
        return lead
    by = pts[o.dominated_by]
    return f"{lead}{',' if o.points == 1 else ';'} {its} is beaten by {point_label(by)} ({_costs(by)})"


def _unknown(result: PickResult, variant: str) -> str:
    """" (fidelity unknown: ...)" where the variant's points have no known fidelity."""
    reason = next((p.fidelity.reason for p in result.points if p.variant == variant and p.fidelity.reason), None)
    return f" (fidelity unknown: {reason})" if reason else ""


def _na(result: PickResult, variant: str) -> int:
    return sum(1 for p in result.points if p.variant == variant and p.status != "ok")


def _costs(p: PickPoint) -> str:
    text = f"{fmt.ms(p.time_s)}, {fmt.nbytes(p.memory_bytes)}"
    return text + (f", cosine {fmt.sig(p.cosine, 4)}" if p.cosine is not None and p.fidelity.method != "exact" else "")


def nothing_text(result: PickResult) -> str:
    """The sentence for a sweep where no point meets the constraints."""
    if all(p.status != "ok" for p in result.points):
        reasons = "; ".join(dict.fromkeys(p.reason for p in result.points if p.reason))
        return f"--variants: none of the variants swept applies at this shape and phase ({reasons})"
    name, i = result.nothing_meets()
    if name is None:
        return (f"no point meets {limits_text(result)} together: each breaks at least one of them "
                f"({', '.join(f'{flag(k)} {c:,}' for k, c in result.excluded.items())} points)")
    best = result.points[i] if i is not None else None
    where = (f": the nearest is {point_label(best)} at {value_text(name, getattr(best, CONSTRAINTS[name][0]))}"
             if best is not None else ": no point has a known value")
    return f"no point meets {flag(name)} {value_text(name, result.constraints.active()[name])}{where}"


# -- the figure and the page ---------------------------------------------------------------

def _hover(result: PickResult, p: PickPoint) -> str:
    from .html import plot_text

    lines = [f"<b>{plot_text(point_label(p))}</b>", f"time {fmt.ms(p.time_s)}", f"memory {fmt.nbytes(p.memory_bytes)}",
             f"KV cache {fmt.nbytes(p.kv_bytes)}"]
    if result.objective is not None:
        lines.append(f"fidelity {fidelity_text(p.fidelity, result.objective)}")
    if p.broken:
        lines.append("breaks " + ", ".join(flag(n) for n in p.broken))
    return "<br>".join(lines)


def pick_figure(result: PickResult):
    """Time (x) against memory (y), log axes: every applicable point in its variant's colour,
    those that break a constraint faint and crossed, the front ringed and joined in time order."""
    from .colors import color_for
    from .figures import layout, log_axis
    from .html import plot_text
    from .plotdict import PlotFigure, scatter

    fig = PlotFigure()
    ok = [p for p in result.points if p.status == "ok"]
    for v in dict.fromkeys(p.variant for p in ok):
        fitting = [p for p in ok if p.variant == v and not p.broken]
        for fits in (True, False):
            pts = fitting if fits else [p for p in ok if p.variant == v and p.broken]
            if not pts:
                continue
            fig.add_trace(scatter(
                x=[p.time_s * 1e3 for p in pts], y=[p.memory_bytes for p in pts], mode="markers",
                name=plot_text(v), legendgroup=v, showlegend=fits or not fitting,
                marker=dict(color=color_for(v), size=9 if fits else 7, symbol="circle" if fits else "x-thin-open",
                            opacity=0.9 if fits else 0.35, line=dict(width=1.5 if not fits else 0, color=color_for(v))),
                hovertext=[_hover(result, p) for p in pts], hoverinfo="text"))
    front = [result.points[i] for i in sorted(result.front, key=lambda i: result.points[i].time_s)]
    if front:
        fig.add_trace(scatter(
            x=[p.time_s * 1e3 for p in front], y=[p.memory_bytes for p in front], mode="lines+markers",
            name="Pareto front", line=dict(color="#222", width=1, dash="dot"),
            marker=dict(size=15, symbol="circle-open", color="#222", line=dict(width=2)),
            hovertext=[_hover(result, p) for p in front], hoverinfo="text"))
    mem = "whole model memory" if result.whole_model else "memory per layer (activations + KV cache)"
    fig.update_layout(**layout("Every point of the sweep: time against memory", "predicted time per layer", mem,
                               xaxis=log_axis([p.time_s * 1e3 for p in ok], fmt.ms_value),
                               yaxis=log_axis([p.memory_bytes for p in ok], fmt.nbytes, base=2)))
    return fig


def _front_rows(result: PickResult) -> list:
    from .html import esc, swatch

    rows = []
    for tied in result.front_rows():
        p = result.points[tied[0]]
        params = tied_params_text([result.points[i] for i in tied])
        rows.append([swatch(p.variant) + esc(p.variant), esc(params), esc(fmt.ms(p.time_s)),
                     esc(fmt.nbytes(p.memory_bytes)), esc(fmt.nbytes(p.kv_bytes))]
                    + ([esc(fidelity_text(p.fidelity, result.objective))] if result.objective else []))
    return rows


def build_pick_html(result: PickResult, hardware: str, command: str = "", plotly_js: str = "inline") -> str:
    """The page of a pick: the front as a table, the scatter, the variants off the front, the method."""
    from .html import bullets, esc, lead, note, table
    from .page import Page

    s = result.shape
    shape = (f"d {s.d:,} · {s.heads} heads · T {s.T:,} · batch {s.batch} · {s.phase} · {s.dtype} · "
             f"{'causal' if s.causal else 'non-causal'} · {hardware}")
    page = Page("attncost pick", shape)
    headers = ["variant", "parameters", "time", "memory", "KV cache"] + (
        ["cosine" if result.objective == "cosine" else "rel. error"] if result.objective else [])
    body = lead(f"Constraints: {limits_text(result)}. {excluded_text(result)}. The front: no other point that meets "
                f"the constraints is as fast, as small and as faithful and better in one; best first by "
                f"{result.sort}.") + table(headers, _front_rows(result), left=(0, 1))
    body += page.figure("pick-scatter", pick_figure(result))
    body += note("Crossed, faint: points that break a constraint. Ringed: the front (its points may also differ in "
                 "fidelity, which this projection does not show).")
    page.section("front", "The Pareto front", body)
    off = [f"{o.variant}: {outcome_text(result, o)}" for o in result.outcomes if not o.on_front]
    page.section("off", "Variants with no point on the front", bullets(off) if off else note("none"))
    method = [NO_FIDELITY if result.objective is None else FIDELITY_METHOD]
    if command:
        method.append(f"command: {command}")
    page.section("method", "How the points were costed", "".join(f"<p class=\"note\">{esc(t)}</p>" for t in method))
    return page.render(plotly_js)


def write_pick_report(result: PickResult, path, hardware: str, command: str = "", plotly_js: str = "inline") -> Path:
    """Write ``build_pick_html`` to ``path`` atomically (in "shared" mode plotly.js beside it)."""
    from .plotly_bundle import write_page

    return write_page(path, build_pick_html(result, hardware, command, plotly_js), plotly_js)
