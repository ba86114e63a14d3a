"""`attncost predict --model NAME|FILE.json`: a whole model, per attention variant (presentation only;
the numbers come from ``costmodel.model_cost``)."""

import json
from typing import Optional

from rich import box
from rich.console import Console
from rich.table import Table

from ..costmodel.units import DTYPES, GIGA, KV_DTYPES, WEIGHT_DTYPES
from ..reports.fmt import bandwidth, nbytes, pct, sig
from .errors import fail
from .options import check_choice, check_params, load_model, make_shape, parse_params, parse_T, parse_variants

console = Console(highlight=False, width=None if Console().is_terminal else 160)

COMPONENT_LABELS = {"attention_core": "attention core", "attention_proj": "attention projections",
                    "mlp": "MLP", "norms": "norms + residual", "embed": "embeddings", "lm_head": "LM head"}


def run(model: str, T: str, batch: int, dtype: str, variants: Optional[str], param: Optional[list],
        hw, as_json: bool, logits: str = "all", weights_dtype: Optional[str] = None,
        kv_dtype: Optional[str] = None) -> None:
    """Evaluate and print (table or JSON) the whole model for each T and variant."""
    from ..costmodel.model_cost import default_variants, predict_model
    from ..costmodel.model_graphs import LOGITS

    cfg = load_model(model)
    Ts = parse_T(T)
    check_choice(dtype, DTYPES, "--dtype")
    check_choice(logits, LOGITS, "--logits")
    _check_precision(dtype, weights_dtype, kv_dtype, hw)
    names = default_variants(cfg) if variants is None else parse_variants(variants)
    params = parse_params(param)
    for t in Ts:  # the shape and explicit parameters must be valid (exit 2 naming the flag)
        s = make_shape(T=t, d=cfg.d, heads=cfg.heads, kv_heads=cfg.kv_heads, batch=batch, dtype=dtype)
        for v, p in params.items():
            check_params(v, cfg.variant_params(v, p), s)
    results = [predict_model(cfg, T=t, batch=batch, dtype=dtype, variant=v, params=params.get(v), hardware=hw,
                             logits=logits, weights_dtype=weights_dtype, kv_dtype=kv_dtype) for t in Ts for v in names]
    if as_json:
        print(json.dumps({"model": cfg.model_dump(), "hardware": hw.model_dump(),
                          "results": [r.as_dict() for r in results]}, indent=1, allow_nan=False))
        return
    _print(cfg, results, hw)


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


def _print(cfg, results, hw) -> None:
    first = results[0]
    moe = (f", MoE {cfg.moe.routed_experts} routed + {cfg.moe.shared_experts} shared experts, "
           f"{cfg.moe.active_experts} active, width {cfg.moe.expert_hidden}") if cfg.moe else ""
    kv = f" ({cfg.kv_heads} KV)" if cfg.kv_heads else ""
    kv += f", head dim {cfg.head_dim}" if cfg.head_dim else ""
    console.print(
        f"[bold]{cfg.name}[/]: {cfg.layers} layers, d {cfg.d}, {cfg.heads} heads{kv}, "
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
    console.print(f"batch {first.batch} · {first.dtype}{stored} · {hw.name} ({hw.description}, "
                  f"{nbytes(hw.mem_bytes)}, {bandwidth(hw.mem_bandwidth)})"
                  + (f" · parameters {', '.join(pub)}" if pub else ""))
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, padding=(0, 1))
    cols = ["T", "variant", "params", "GFLOP\nprefill", "attn\ncore", "attn\nproj", "MLP", "LM\nhead",
            "KV cache", "TTFT\nms", "bound", "decode\ntok/s", "roofline\ntok/s", "decode\nbound", "max T\nfits",
            "max batch\nat T"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("variant", "bound", "decode\nbound") else "right", no_wrap=True)
    notes: dict = {}
    model_notes = {n for r in results if r.variant == cfg.attention for n in r.notes} | set(cfg.notes)
    last_T = None
    for r in results:
        if last_T is not None and r.T != last_T:
            table.add_section()
        last_T = r.T
        name = f"[bold]{r.variant}[/]" if r.variant == cfg.attention else r.variant
        if r.status != "ok":
            table.add_row(f"{r.T:,}", name, *["–"] * 13, "[dim]n/a[/]")
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
        table.add_row(
            f"{r.T:,}", name, params, sig(pre.flops_total / GIGA), _share(sh["attention_core"]),
            _share(sh["attention_proj"]), _share(sh["mlp"]), _share(sh["lm_head"]), nbytes(r.kv_cache_bytes),
            sig(r.ttft_s * 1e3) if r.ttft_s is not None else "–", pre.bound or "–",
            sig(r.decode_tokens_per_s) if r.decode_tokens_per_s else "n/a",
            sig(r.decode_tokens_per_s_roofline) if r.decode_tokens_per_s_roofline else "–",
            (dec.bound or "–") if dec else "–",
            _max_T(r),
            f"{r.max_batch_fitting:,}" if r.max_batch_fitting is not None else "–")
    console.print(table)
    native = [r for r in results if r.variant == cfg.attention and r.status == "ok"]
    for r in native:
        _print_components(r)
        if len(r.prefill.per_layer) > 1:
            _print_layers(r)
    console.print(
        "[dim]params: total (active per token, MoE). Shares are of prefill FLOPs; TTFT = predicted time of "
        f"the prefill of T tokens x batch (PyTorch eager), with the LM head over "
        f"{'all T tokens (--logits last: the last only)' if first.logits == 'all' else 'the last token'}; decode: one token per sequence against a cache of "
        "T; roofline = batch x bandwidth / (weights read + KV cache). max T fits: weights + KV cache + prefill "
        "activations within the device memory at this batch (*: beyond the model's context); max batch: at this T.[/]")
    for n in notes:
        console.print(f"[dim]- {n}[/]")


def _max_T(r) -> str:
    if r.max_T_fitting is None:
        return "–"
    return f"{r.max_T_fitting:,}" + ("*" if r.max_T_fitting > r.context else "")


def _print_components(r) -> None:
    pre, dec = r.prefill, r.decode
    t = Table(title=f"{r.model} · {r.variant} · T {r.T:,} · batch {r.batch}: by component", title_justify="left",
              box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, padding=(0, 1))
    for c in ("component", "GFLOP", "FLOPs", "ms", "time", "GFLOP/layer", "decode ms", "decode time"):
        t.add_column(c, justify="left" if c == "component" else "right", no_wrap=True)
    tot_t = sum(pre.time.values()) if pre.time else 0.0
    dtot = sum(dec.time.values()) if dec and dec.time else 0.0
    per_layer = pre.per_layer[-1]["flops"] if pre.per_layer else {}
    for c, label in COMPONENT_LABELS.items():
        pl = per_layer.get(c)
        t.add_row(label, sig(pre.flops[c] / GIGA), _share(pre.flops[c] / pre.flops_total),
                  sig(pre.time[c] * 1e3) if pre.time else "–", _share(pre.time[c] / tot_t) if tot_t else "–",
                  sig(pl / GIGA) if pl is not None else "",
                  sig(dec.time[c] * 1e3) if dec and dec.time else "–",
                  _share(dec.time[c] / dtot) if dtot else "–")
    t.add_row("[bold]total[/]", sig(pre.flops_total / GIGA), "100%", sig(tot_t * 1e3) if tot_t else "–",
              "100%" if tot_t else "–", "", sig(dtot * 1e3) if dtot else "–", "100%" if dtot else "–")
    console.print(t)
    console.print(f"[dim]weights {nbytes(r.weights_bytes)}, KV cache {nbytes(r.kv_cache_bytes)} "
                  f"({nbytes(r.kv_cache_bytes_per_token)} per token), peak prefill activations "
                  f"{nbytes(pre.activation_bytes)}; total {nbytes(r.memory_bytes)} of {nbytes(r.mem_bytes)}"
                  f"{'' if r.fits is None or r.fits else ' [bold red]does not fit[/]'}. GFLOP/layer: "
                  f"{pre.per_layer[-1]['kind']} layer.[/]")


def _print_layers(r) -> None:
    """One row per group of layers that cost the same: Gemma's local and global attention,
    DeepSeek's dense and MoE layers."""
    t = Table(title=f"{r.model} · {r.variant} · T {r.T:,}: by kind of layer (one layer each)", title_justify="left",
              box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, padding=(0, 1))
    for c in ("layers", "MLP", "attention", "window", "KV cache", "GFLOP", "prefill ms", "decode ms"):
        t.add_column(c, justify="left" if c in ("MLP", "attention") else "right", no_wrap=True)
    decode = {(lay["kind"], lay["attention"], lay["variant"]): lay for lay in (r.decode.per_layer if r.decode else [])}
    for lay in r.prefill.per_layer:
        dec = decode.get((lay["kind"], lay["attention"], lay["variant"]))
        t.add_row(f"{lay['count']}", lay["kind"], f"{lay['variant']} {lay['attention'] or ''}".strip(),
                  f"{lay['window']:,}" if lay["window"] else "–", nbytes(lay["kv_cache_bytes"]),
                  sig(sum(lay["flops"].values()) / GIGA),
                  sig(sum(lay["time_s"].values()) * 1e3) if "time_s" in lay else "–",
                  sig(sum(dec["time_s"].values()) * 1e3) if dec and "time_s" in dec else "–")
    console.print(t)
