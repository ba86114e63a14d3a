"""The parts of a transformer block around its attention, as ``Graph`` ops: the MLP (GELU, SwiGLU
or MoE), the norms and residual adds, the embedding lookups, and the final norm with the LM head.
The attention of each layer is the attention cost model's own graph (``estimate.graph``).

Per-element FLOPs of the model-level functions are compositions of ``units.ELEMENT_FLOPS`` entries
(that table stays the one source; each function runs as one fused kernel):

- LayerNorm 7 per element: mean 1, x - mean 1 (add), squared sum 2 (square_sum), * rstd 1 (mul),
  * gamma 1 (mul), + beta 1 (add).  RMSNorm 4: squared sum 2, * rstd 1, * gamma 1.
- GELU, tanh form (GPT-2's gelu_new) 9: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))):
  x^3 2 mul, x 0.044715 / sqrt(2/pi) / 0.5 3 scale, + x and 1 + 2 add, tanh 1 (as exp), * 1 mul.
- SiLU 3: x / (1 + exp(-x)): exp 1, add 1, div 1; SwiGLU multiplies by the up projection: mul 1.
- Bias adds of GPT-2's linears are fused into the GEMM (addmm) and not counted (their parameters
  are); a residual add is 1 per element.

An MoE layer routes each token to ``active_experts`` of the routed experts (softmax, top-k); the
experts its tokens touch (``model_params.touched_experts``) run as one grouped GEMM each.
"""

from typing import Literal, get_args

from .graph import Graph
from .model_params import touched_experts
from .model_spec import LayerKind, ModelConfig
from .shape import Shape

# model-level functions as compositions of units.ELEMENT_FLOPS entries: (fn, per element)
LAYERNORM = (("mean", 1), ("add", 1), ("square_sum", 1), ("mul", 1), ("mul", 1), ("add", 1))  # 7
RMSNORM = (("square_sum", 1), ("mul", 1), ("mul", 1))  # 4
GELU_TANH = (("mul", 2), ("scale", 3), ("add", 2), ("exp", 1), ("mul", 1))  # 9
SILU = (("exp", 1), ("add", 1), ("div", 1))  # 3

Logits = Literal["all", "last"]  # LM head rows: every token, or the last of each sequence
LOGITS: tuple = get_args(Logits)


def _fused(g: Graph, name: str, terms: tuple, reads: tuple, elems: float) -> str:
    """One kernel ``name`` applying ``terms`` ((ELEMENT_FLOPS key, times per element), ...) to
    ``elems`` elements; the first op reads ``reads``."""
    out = None
    for i, (fn, times) in enumerate(terms):
        last = i == len(terms) - 1
        out = g.elementwise(name if last else f"{name}.{i}", fn, reads if out is None else (out,),
                            elems=elems * times, out_elems=elems, kernel=name)
    return out


def _norm(g: Graph, cfg: ModelConfig, name: str, x: str, rows: float) -> str:
    ln = cfg.norm == "layernorm"
    w = g.weight(name + ".weight", (2 if ln else 1) * cfg.d)
    return _fused(g, name, LAYERNORM if ln else RMSNORM, (x, w), rows * cfg.d)


def _linear(g: Graph, name: str, x: str, rows: float, k: int, n: int, batch: float = 1) -> str:
    """A bias-free linear layer; ``batch`` > 1: that many (experts') weights, ``rows`` tokens each."""
    w = g.weight("W_" + name, batch * k * n)
    return g.matmul(name, x, w, batch=batch, m=rows, k=k, n=n, part="proj")


def _swiglu(g: Graph, name: str, x: str, rows: float, d: int, h: int, batch: float = 1) -> str:
    """down(silu(gate(x)) * up(x)); ``batch`` experts of ``rows`` tokens each (grouped GEMM)."""
    gate = _linear(g, name + "gate", x, rows, d, h, batch)
    up = _linear(g, name + "up", x, rows, d, h, batch)
    a = _fused(g, name + "silu", SILU, (gate,), batch * rows * h)
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
        y = _swiglu(g, "expert_", xs, rows * k / n, d, m.expert_hidden, batch=n)
        y = g.elementwise("combine_weigh", "mul", (y, probs), elems=rows * k * d)
        y = g.elementwise("combine_sum", "add", (y,), elems=rows * k * d, out_elems=rows * d)
        if m.shared_experts:
            sh = _swiglu(g, "shared_", x, rows, d, m.shared_experts * m.expert_hidden)
            y = g.elementwise("shared_add", "add", (y, sh), elems=rows * d)
        g.output(y)
    elif cfg.mlp == "swiglu":
        g.output(_swiglu(g, "mlp_", x, rows, d, cfg.mlp_hidden))
    else:
        h = _linear(g, "mlp_fc", x, rows, d, cfg.mlp_hidden)
        a = _fused(g, "mlp_gelu", GELU_TANH, (h,), rows * cfg.mlp_hidden)
        g.output(_linear(g, "mlp_proj", a, rows, cfg.mlp_hidden, d))
    return g


def block_graph(cfg: ModelConfig, s: Shape, qk_rope_elems: float) -> Graph:
    """Norms and residual adds of one block (kernels norm_attn, rope, residual_attn, norm_mlp,
    residual_mlp); the attention and MLP outputs enter as inputs."""
    g = Graph(s.itemsize)
    rows = s.batch * s.tokens
    x = g.input("x", rows * cfg.d)
    _norm(g, cfg, "norm_attn", x, rows)
    if qk_rope_elems:
        qk = g.input("qk", qk_rope_elems)
        g.output(g.elementwise("rope", "rope", (qk,), elems=qk_rope_elems))
    a = g.input("attn_out", rows * cfg.d)
    r = g.elementwise("residual_attn", "add", (x, a), elems=rows * cfg.d)
    _norm(g, cfg, "norm_mlp", r, rows)
    m = g.input("mlp_out", rows * cfg.d)
    g.output(g.elementwise("residual_mlp", "add", (r, m), elems=rows * cfg.d))
    return g


def embed_graph(cfg: ModelConfig, s: Shape) -> Graph:
    """Token (and position) lookups: gathers of ``rows`` table rows, 0 FLOPs, then the position add."""
    g = Graph(s.itemsize)
    rows = s.batch * s.tokens
    ids = g.input("token_ids", rows)
    tok = g.elementwise("embed_tokens", "gather", (ids, g.weight("wte_rows", rows * cfg.d, trainable=False)),
                        elems=rows * cfg.d)
    if cfg.positions == "learned":
        pos = g.elementwise("embed_positions", "gather", (g.weight("wpe_rows", rows * cfg.d, trainable=False),),
                            elems=rows * cfg.d)
        tok = g.elementwise("embed_add", "add", (tok, pos), elems=rows * cfg.d)
    g.output(tok)
    return g


def head_graph(cfg: ModelConfig, s: Shape, logits: Logits = "all") -> Graph:
    """Final norm and LM head: logits for every row (``all``) or for the last token of each
    sequence (``last``, what generation needs)."""
    g = Graph(s.itemsize)
    rows = s.batch * (s.tokens if logits == "all" else 1)
    x = _norm(g, cfg, "norm_final", g.input("x", rows * cfg.d), rows)
    g.output(_linear(g, "lm_head", x, rows, cfg.d, cfg.vocab))
    return g


def applies_rope(cfg: ModelConfig, attention: Graph) -> bool:
    """Whether a ``rope`` model rotates q and k around the variant's ``attention`` graph: not when
    the variant rotates them itself (mla and dsa carry their own decoupled RoPE)."""
    return cfg.positions == "rope" and not any(op.fn == "rope" for op in attention.ops)


def rope_elems(cfg: ModelConfig, attention: Graph) -> float:
    """Elements of q and k the model rotates around the variant (``applies_rope``): the q_proj and
    k_proj outputs, if any."""
    if not applies_rope(cfg, attention):
        return 0.0
    return sum(attention.tensors[n].elems for n in ("q_proj", "k_proj") if n in attention.tensors)
