"""`attncost predict --model NAME|FILE.json`: a whole model, per attention variant (presentation only;
the numbers come from ``costmodel.model_cost``)."""

from typing import Optional

from rich.markup import escape

from ..costmodel.units import DTYPES, KV_DTYPES, WEIGHT_DTYPES
from ..reports.fmt import bandwidth, flops, nbytes, pct, sig
from .errors import fail
from .layout import SECTION, Column, datasheet_warning, print_json, print_table, screen
from .options import check_choice, check_params, load_model, make_shape, parse_params, parse_T, parse_variants

COMPONENT_LABELS = {"attention_core": "attention core", "attention_proj": "attention projections",
                    "mlp": "MLP", "norms": "norms + residual", "embed": "embeddings", "lm_head": "LM head"}


def run(model: str, T: str, batch, dtype: str, variants: Optional[str], param: Optional[list],
        hw, as_json: bool, logits: str = "all", weights_dtype: Optional[str] = None,
        kv_dtype: Optional[str] = None, wide: bool = False) -> list:
    """Evaluate and print (table or JSON) the whole model for each batch (an int or a list), T and
    variant; returns the results (``ModelResult``), batch-major."""
    from ..costmodel.model_cost import default_variants, predict_model
    from ..costmodel.model_graphs import LOGITS

    cfg = load_model(model)
    Ts = parse_T(T)
    check_choice(dtype, DTYPES, "--dtype")
    check_choice(logits, LOGITS, "--logits")
    _check_precision(dtype, weights_dtype, kv_dtype, hw)
    names = default_variants(cfg) if variants is None else parse_variants(variants)
    params = parse_params(param)
    batches = [batch] if isinstance(batch, int) else list(batch)
    for t, batch in ((t, b) for t in Ts for b in batches):  # the shape and explicit parameters must be valid (exit 2 naming the flag)
        s = make_shape(T=t, d=cfg.d, heads=cfg.heads, kv_heads=cfg.kv_heads, batch=batch, dtype=dtype)
        for v, p in params.items():
            check_params(v, cfg.variant_params(v, p), s)
    results = [predict_model(cfg, T=t, batch=b, dtype=dtype, variant=v, params=params.get(v), hardware=hw,
                             logits=logits, weights_dtype=weights_dtype, kv_dtype=kv_dtype)
               for b in batches for t in Ts for v in names]
    if as_json:
        print_json({"model": cfg.model_dump(), "hardware": hw.model_dump(),
                    "results": [r.as_dict() for r in results]})
    else:
        _print(cfg, results, hw, wide)
    return results


def write_report(model: str, results: list, hw, path, command: str, plotly_js: str, quiet: bool = False) -> None:
    """--html: the model's page (``reports.page.write_model_report``); says where it went unless ``quiet``."""
    from ..reports.page import write_model_report

    try:
        written = write_model_report(load_model(model), results, hw, path, COMPONENT_LABELS, command=command,
                                     plotly_js=plotly_js)
    except OSError as err:
        raise fail(f"--html {path}: cannot write there ({err.strerror or err})")
    if not quiet:
        screen().print(f"Report written to [bold]{escape(str(written))}[/]")


def _check_precision(dtype: str, weights: Optional[str], kv: Optional[str], hw) -> None:
    """--weights-dtype and --kv-dtype: known names the hardware can run, or exit 2 naming the flag."""
    from ..costmodel.model_precision import Precision, PrecisionError, check

    if weights is not None:
        check_choice(weights, WEIGHT_DTYPES, "--weights-dtype")
    if kv is not None:
        check_choice(kv, KV_DTYPES, "--kv-dtype")
    try:
        check(Precision.of(dtype, weights, kv), hw)
    except PrecisionError as err:
        flag = "--weights-dtype" if weights == "fp8" else "--kv-dtype"
        raise fail(f"{flag} fp8: {err}")


# -- presentation ------------------------------------------------------------------------------

def _count(n: float) -> str:
    """A parameter count as models are named: 124M, 8.03B."""
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.4g}M"


def _share(x: Optional[float]) -> str:
    """A share of a total: 45.3%."""
    return pct(x, 3, signed=False)


def _print(cfg, results, hw, wide: bool = False) -> None:
    console = screen(wide)
    first = results[0]
    moe = (f", MoE {cfg.moe.routed_experts} routed + {cfg.moe.shared_experts} shared experts, "
           f"{cfg.moe.active_experts} active, width {cfg.moe.expert_hidden}") if cfg.moe else ""
    kv = f" ({cfg.kv_heads} KV)" if cfg.kv_heads else ""
    kv += f", head dim {cfg.head_dim}" if cfg.head_dim else ""
    console.print(
        f"[bold]{escape(cfg.name)}[/]: {cfg.layers} layers, d {cfg.d}, {cfg.heads} heads{kv}, "
        f"{cfg.mlp} MLP {cfg.mlp_hidden}{moe}, vocab {cfg.vocab:,}, {cfg.positions} positions, "
        f"{'tied' if cfg.tied_embeddings else 'untied'} embeddings, context {cfg.context:,}; "
        f"native attention [bold]{cfg.attention}[/]")
    pub = []
    if cfg.published_params:
        pub.append(f"published {_count(cfg.published_params)}")
    if cfg.published_active_params:
        pub.append(f"{_count(cfg.published_active_params)} active")
    stored = "" if (first.weights_dtype, first.kv_dtype) == (first.dtype, first.dtype) else (
        f" (weights {first.weights_dtype}, KV cache {first.kv_dtype})")
    batches = sorted({r.batch for r in results})
    console.print(f"whole model · batch {', '.join(map(str, batches))} · {first.dtype}{stored} · {hw.name} "
                  f"({hw.description}, {nbytes(hw.mem_bytes)}, {bandwidth(hw.mem_bandwidth)})"
                  + (f" · parameters {', '.join(pub)}" if pub else ""))
    sweep_b = len(batches) > 1
    cols = ([Column("batch")] if sweep_b else []) + [
        Column("T"), Column("variant", "left"), Column("params", wide=True), Column("prefill\nFLOPs"),
        Column("attn\ncore", wide=True), Column("attn\nproj", wide=True), Column("MLP", wide=True),
        Column("LM\nhead", wide=True), Column("KV cache"), Column("memory,\nfits"), Column("TTFT\nms"),
        Column("bound", "left", wide=True), Column("tok/s per\nbatch"), Column("tok/s per\nsequence", wide=True),
        Column("roofline\ntok/s", wide=True), Column("decode\nbound", "left", wide=True), Column("max T\nfitting"),
        Column("max\nbatch")]
    notes: dict = {}
    model_notes = {n for r in results if r.variant == cfg.attention for n in r.notes} | set(cfg.notes)
    rows, last, unfit = [], None, False
    for r in results:
        if last is not None and (r.T, r.batch) != last:
            rows.append(SECTION)
        last = (r.T, r.batch)
        lead = ([f"{r.batch:,}"] if sweep_b else []) + [f"{r.T:,}"]
        name = f"[bold]{r.variant}[/]" if r.variant == cfg.attention else r.variant
        if r.status != "ok":
            rows.append(lead + [name] + ["–"] * 15 + ["[dim]n/a[/]"])
            notes[f"{r.variant}: {r.reason}"] = None
            continue
        for n in r.notes:  # the model's own notes once, a swapped variant's with its name
            own = r.variant == cfg.attention or n in model_notes or "exceeds" in n or "MoE" in n
            notes[n if own else f"{r.variant}: {n}"] = None
        if r.decode_reason:
            notes[f"{r.variant}: decode n/a: {r.decode_reason}"] = None
        pre, dec = r.prefill, r.decode
        sh = {c: v / pre.flops_total for c, v in pre.flops.items()}
        params = _count(r.param_count)
        if r.param_count_active < 0.5 * r.param_count:
            params += f" ({_count(r.param_count_active)})"
        fits = r.fits is None or r.fits
        unfit |= not fits

        def mark(text: str) -> str:  # a figure of a run that does not fit: not achievable
            return text if fits or text in ("–", "n/a") else f"[red]({text})[/]"

        rows.append(lead + [
            name, params, flops(pre.flops_total), _share(sh["attention_core"]),
            _share(sh["attention_proj"]), _share(sh["mlp"]), _share(sh["lm_head"]), nbytes(r.kv_cache_bytes),
            nbytes(r.memory_bytes) + (" ok" if fits else " [bold red]NO[/]"),
            mark(sig(r.ttft_s * 1e3) if r.ttft_s is not None else "–"), pre.bound or "–",
            mark(sig(r.decode_tokens_per_s) if r.decode_tokens_per_s else "n/a"),
            mark(sig(r.decode_tokens_per_s / r.batch) if r.decode_tokens_per_s else "n/a"),
            mark(sig(r.decode_tokens_per_s_roofline) if r.decode_tokens_per_s_roofline else "–"),
            (dec.bound or "–") if dec else "–", _max_T(r),
            f"{r.max_batch_fitting:,}" if r.max_batch_fitting is not None else "–"])
    print_table(console, cols, rows, wide=wide, keys=len(lead) + 1)
    native = [r for r in results if r.variant == cfg.attention and r.status == "ok"]
    for r in native:
        _print_components(console, r, wide)
        if len(r.prefill.per_layer) > 1:
            _print_layers(console, r, wide)
    if unfit:
        console.print(f"[bold red]NO: the run does not fit in {nbytes(hw.mem_bytes)} of device memory (weights "
                      "+ KV cache + prefill activations); its (figures) are not achievable on this device.[/]")
    console.print(
        "[dim]params: total (active per token, MoE). Shares are of prefill FLOPs; TTFT = predicted time of "
        f"the prefill of T tokens x batch (PyTorch eager), with the LM head over "
        f"{'all T tokens (--logits last: the last only)' if first.logits == 'all' else 'the last token'}; "
        "decode tok/s: tokens per second for the whole batch, one token per sequence against a cache of T "
        "(per sequence: divided by the batch); roofline = batch x bandwidth / (weights read + KV cache). memory: "
        "weights + KV cache + prefill activations. max T fitting: within the device memory at this batch (*: beyond "
        "the model's context); max batch: at this T." + ("" if wide else " --wide: every column.") + "[/]")
    warn = datasheet_warning(hw)
    if warn:
        console.print(warn)
    for n in notes:
        console.print(f"[dim]- {escape(n)}[/]")


def _max_T(r) -> str:
    if r.max_T_fitting is None:
        return "–"
    return f"{r.max_T_fitting:,}" + ("*" if r.max_T_fitting > r.context else "")


def _print_components(console, r, wide: bool) -> None:
    pre, dec = r.prefill, r.decode
    cols = [Column("component", "left"), Column("FLOPs"), Column("FLOPs\nshare"), Column("ms"), Column("time\nshare"),
            Column("FLOPs/layer", wide=True), Column("decode\nms"), Column("decode\ntime share")]
    tot_t = sum(pre.time.values()) if pre.time else 0.0
    dtot = sum(dec.time.values()) if dec and dec.time else 0.0
    per_layer = pre.per_layer[-1]["flops"] if pre.per_layer else {}
    rows = []
    for c, label in COMPONENT_LABELS.items():
        pl = per_layer.get(c)
        rows.append([label, flops(pre.flops[c]), _share(pre.flops[c] / pre.flops_total),
                     sig(pre.time[c] * 1e3) if pre.time else "–", _share(pre.time[c] / tot_t) if tot_t else "–",
                     flops(pl) if pl is not None else "",
                     sig(dec.time[c] * 1e3) if dec and dec.time else "–",
                     _share(dec.time[c] / dtot) if dtot else "–"])
    rows.append(["[bold]total[/]", flops(pre.flops_total), "100%", sig(tot_t * 1e3) if tot_t else "–",
                 "100%" if tot_t else "–", "", sig(dtot * 1e3) if dtot else "–", "100%" if dtot else "–"])
    print_table(console, cols, rows, wide=wide,
                title=f"{r.model} · {r.variant} · T {r.T:,} · batch {r.batch}: by component (whole model)")
    console.print(f"[dim]weights {nbytes(r.weights_bytes)}, KV cache {nbytes(r.kv_cache_bytes)} "
                  f"({nbytes(r.kv_cache_bytes_per_token)} per token), peak prefill activations "
                  f"{nbytes(pre.activation_bytes)}; total {nbytes(r.memory_bytes)} of {nbytes(r.mem_bytes)}"
                  f"{'' if r.fits is None or r.fits else ' [bold red]does not fit[/]'}. FLOPs/layer (--wide): "
                  f"{pre.per_layer[-1]['kind']} layer.[/]")


def _print_layers(console, r, wide: bool) -> None:
    """One row per group of layers that cost the same: Gemma's local and global attention,
    DeepSeek's dense and MoE layers."""
    cols = [Column("layers"), Column("MLP", "left"), Column("attention", "left"), Column("window"),
            Column("KV cache"), Column("FLOPs"), Column("prefill ms"), Column("decode ms")]
    decode = {(lay["kind"], lay["attention"], lay["variant"]): lay for lay in (r.decode.per_layer if r.decode else [])}
    rows = []
    for lay in r.prefill.per_layer:
        dec = decode.get((lay["kind"], lay["attention"], lay["variant"]))
        rows.append([f"{lay['count']}", lay["kind"], f"{lay['variant']} {lay['attention'] or ''}".strip(),
                     f"{lay['window']:,}" if lay["window"] else "–", nbytes(lay["kv_cache_bytes"]),
                     flops(sum(lay["flops"].values())),
                     sig(sum(lay["time_s"].values()) * 1e3) if "time_s" in lay else "–",
                     sig(sum(dec["time_s"].values()) * 1e3) if dec and "time_s" in dec else "–"])
    print_table(console, cols, rows, wide=wide,
                title=f"{r.model} · {r.variant} · T {r.T:,}: by kind of layer (one layer each)")
