"""The parts of a transformer block around its attention, as ``Graph`` ops: the MLP (GELU, SwiGLU,
GeGLU or MoE), the norms and residual adds, the embedding lookups, and the final norm with the LM
head. The attention of each layer is the attention cost model's own graph, fitted into the model
by ``model_attention``.

Per-element FLOPs of the model-level functions are compositions of ``units.ELEMENT_FLOPS`` entries
(that table stays the one source; each function runs as one fused kernel):

- LayerNorm 7 per element: mean 1, x - mean 1 (add), squared sum 2 (square_sum), * rstd 1 (mul),
  * gamma 1 (mul), + beta 1 (add).  RMSNorm 4: squared sum 2, * rstd 1, * gamma 1.
- GELU, tanh form (GPT-2's gelu_new, Gemma's gelu_pytorch_tanh) 9: 0.5 x (1 + tanh(sqrt(2/pi)
  (x + 0.044715 x^3))): x^3 2 mul, x 0.044715 / sqrt(2/pi) / 0.5 3 scale, + x and 1 + 2 add,
  tanh 1 (as exp), * 1 mul.
- SiLU 3: x / (1 + exp(-x)): exp 1, add 1, div 1; a gated MLP (SwiGLU, GeGLU) multiplies by the
  up projection: mul 1.
- Soft-capping of the logits (Gemma 2) 3: c * tanh(x / c), as for attention scores.
- Bias adds of the linears are fused into the GEMM (addmm) and not counted (their parameters
  are); a residual add is 1 per element; Gemma's embedding scale 1 per element.

An MoE layer routes each token to ``active_experts`` of the routed experts (softmax, top-k); the
experts its tokens touch (``touched_experts``) run as one grouped GEMM each.
"""

from typing import Literal, get_args

from .graph import Graph
from .model_attention import SOFTCAP, Extras
from .model_spec import LayerKind, ModelConfig, MoE
from .shape import Shape

# model-level functions as compositions of units.ELEMENT_FLOPS entries: (fn, per element)
LAYERNORM = (("mean", 1), ("add", 1), ("square_sum", 1), ("mul", 1), ("mul", 1), ("add", 1))  # 7
RMSNORM = (("square_sum", 1), ("mul", 1), ("mul", 1))  # 4
GELU_TANH = (("mul", 2), ("scale", 3), ("add", 2), ("exp", 1), ("mul", 1))  # 9
SILU = (("exp", 1), ("add", 1), ("div", 1))  # 3
GATE_ACTIVATION = {"swiglu": SILU, "geglu": GELU_TANH}

Logits = Literal["all", "last"]  # LM head rows: every token, or the last of each sequence
LOGITS: tuple = get_args(Logits)


def touched_experts(moe: MoE, tokens: float) -> float:
    """Expected distinct routed experts picked by ``tokens`` tokens (uniform, independent routing:
    E (1 - (1 - k/E)^N))."""
    E, k = moe.routed_experts, moe.active_experts
    return E * (1.0 - (1.0 - k / E) ** tokens)


def _fused(g: Graph, name: str, terms: tuple, reads: tuple, elems: float) -> str:
    """One kernel ``name`` applying ``terms`` ((ELEMENT_FLOPS key, times per element), ...) to
    ``elems`` elements; the first op reads ``reads``."""
    out = None
    for i, (fn, times) in enumerate(terms):
        last = i == len(terms) - 1
        out = g.elementwise(name if last else f"{name}.{i}", fn, reads if out is None else (out,),
                            elems=elems * times, out_elems=elems, kernel=name)
    return out


def _norm(g: Graph, cfg: ModelConfig, name: str, x: str, rows: float, width: float = 0, weights: float = 0) -> str:
    """A LayerNorm or RMSNorm (``cfg.norm``) of ``rows`` x ``width`` (default d) elements."""
    ln = cfg.norm == "layernorm"
    width = width or cfg.d
    w = g.weight(name + ".weight", weights or (2 if ln else 1) * width)
    return _fused(g, name, LAYERNORM if ln else RMSNORM, (x, w), rows * width)


def _linear(g: Graph, name: str, x: str, rows: float, k: int, n: int, batch: float = 1) -> str:
    """A bias-free linear layer; ``batch`` > 1: that many (experts') weights, ``rows`` tokens each."""
    w = g.weight("W_" + name, batch * k * n)
    return g.matmul(name, x, w, batch=batch, m=rows, k=k, n=n, part="proj")


def _gated(g: Graph, name: str, x: str, rows: float, d: int, h: int, act: tuple, batch: float = 1) -> str:
    """down(act(gate(x)) * up(x)); ``batch`` experts of ``rows`` tokens each (grouped GEMM)."""
    gate = _linear(g, name + "gate", x, rows, d, h, batch)
    up = _linear(g, name + "up", x, rows, d, h, batch)
    a = _fused(g, name + ("silu" if act is SILU else "gelu"), act, (gate,), batch * rows * h)
    a = g.elementwise(name + "mul", "mul", (a, up), elems=batch * rows * h)
    return _linear(g, name + "down", a, rows, h, d, batch)


def mlp_graph(cfg: ModelConfig, s: Shape, kind: LayerKind) -> Graph:
    """The MLP of one layer at this shape (rows = batch x tokens)."""
    g = Graph(s.itemsize)
    rows, d = s.batch * s.tokens, cfg.d
    x = g.input("x", rows * d)
    if kind == "moe":
        m = cfg.moe
        E, k = m.routed_experts, m.active_experts
        logits = _linear(g, "router", x, rows, d, E)
        probs = g.elementwise("router_softmax", "softmax", (logits,), elems=rows * E)
        idx = g.elementwise("router_topk", "topk", (probs,), elems=rows * E, out_elems=rows * k, index_out=True)
        n = touched_experts(m, rows)
        xs = g.elementwise("dispatch", "gather", (x, idx), elems=rows * k * d)
        y = _gated(g, "expert_", xs, rows * k / n, d, m.expert_hidden, SILU, batch=n)
        y = g.elementwise("combine_weigh", "mul", (y, probs), elems=rows * k * d)
        y = g.elementwise("combine_sum", "add", (y,), elems=rows * k * d, out_elems=rows * d)
        if m.shared_experts:
            sh = _gated(g, "shared_", x, rows, d, m.shared_experts * m.expert_hidden, SILU)
            y = g.elementwise("shared_add", "add", (y, sh), elems=rows * d)
        g.output(y)
    elif cfg.mlp in GATE_ACTIVATION:
        g.output(_gated(g, "mlp_", x, rows, d, cfg.mlp_hidden, GATE_ACTIVATION[cfg.mlp]))
    else:
        h = _linear(g, "mlp_fc", x, rows, d, cfg.mlp_hidden)
        a = _fused(g, "mlp_gelu", GELU_TANH, (h,), rows * cfg.mlp_hidden)
        g.output(_linear(g, "mlp_proj", a, rows, cfg.mlp_hidden, d))
    return g


def block_graph(cfg: ModelConfig, s: Shape, around: Extras) -> Graph:
    """Norms and residual adds of one block (kernels norm_attn, qk_norm, latent_norm, rope,
    post_norm_attn, residual_attn, norm_mlp, post_norm_mlp, residual_mlp, those the model has);
    the attention and MLP outputs enter as inputs."""
    g = Graph(s.itemsize)
    rows = s.batch * s.tokens
    x = g.input("x", rows * cfg.d)
    _norm(g, cfg, "norm_attn", x, rows)
    if around.qk_norm:  # RMSNorm over each head's q and k: head_size weights each
        qk = g.input("qk", around.qk_norm)
        g.output(_fused(g, "qk_norm", RMSNORM, (qk, g.weight("qk_norm.weight", 2 * cfg.head_size)), around.qk_norm))
    if around.latent_norm:
        lat = g.input("latents", around.latent_norm)
        w = g.weight("latent_norm.weight", around.latent_norm / rows)  # one weight per latent channel
        g.output(_fused(g, "latent_norm", RMSNORM, (lat, w), around.latent_norm))
    if around.rope:
        qk = g.input("qk_rope", around.rope)
        g.output(g.elementwise("rope", "rope", (qk,), elems=around.rope))
    a = g.input("attn_out", rows * cfg.d)
    if cfg.post_norms:
        a = _norm(g, cfg, "post_norm_attn", a, rows)
    r = g.elementwise("residual_attn", "add", (x, a), elems=rows * cfg.d)
    _norm(g, cfg, "norm_mlp", r, rows)
    m = g.input("mlp_out", rows * cfg.d)
    if cfg.post_norms:
        m = _norm(g, cfg, "post_norm_mlp", m, rows)
    g.output(g.elementwise("residual_mlp", "add", (r, m), elems=rows * cfg.d))
    return g


BLOCK_BEFORE = ("norm_attn", "qk_norm", "latent_norm", "rope")  # block kernels before the attention's
BLOCK_BETWEEN = ("post_norm_attn", "residual_attn", "norm_mlp")  # between the attention's and the MLP's
BLOCK_AFTER = ("post_norm_mlp", "residual_mlp")  # after the MLP's


def embed_graph(cfg: ModelConfig, s: Shape) -> Graph:
    """Token (and position) lookups: gathers of ``rows`` table rows, 0 FLOPs, then the position
    add; Gemma scales the embeddings by sqrt(d)."""
    g = Graph(s.itemsize)
    rows = s.batch * s.tokens
    ids = g.input("token_ids", rows)
    tok = g.elementwise("embed_tokens", "gather", (ids, g.weight("wte_rows", rows * cfg.d, trainable=False)),
                        elems=rows * cfg.d)
    if cfg.positions == "learned":
        pos = g.elementwise("embed_positions", "gather", (g.weight("wpe_rows", rows * cfg.d, trainable=False),),
                            elems=rows * cfg.d)
        tok = g.elementwise("embed_add", "add", (tok, pos), elems=rows * cfg.d)
    if cfg.embed_scale:
        tok = g.elementwise("embed_scale", "scale", (tok,), elems=rows * cfg.d)
    g.output(tok)
    return g


def head_graph(cfg: ModelConfig, s: Shape, logits: Logits = "all") -> Graph:
    """Final norm and LM head: logits for every row (``all``) or for the last token of each
    sequence (``last``, what generation needs); soft-capped where the model caps them."""
    g = Graph(s.itemsize)
    rows = s.batch * (s.tokens if logits == "all" else 1)
    x = _norm(g, cfg, "norm_final", g.input("x", rows * cfg.d), rows)
    out = _linear(g, "lm_head", x, rows, cfg.d, cfg.vocab)
    if cfg.logit_softcap:
        out = _fused(g, "logit_softcap", SOFTCAP, (out,), rows * cfg.vocab)
    g.output(out)
    return g
