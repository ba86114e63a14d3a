"""The layer split over 2 gloo processes (one fork of 2 ranks, one of 4 for a few cases): ring attention,
Ulysses and tensor parallelism (plain and sequence parallel), prefill and forward + backward, for flash,
gqa, mqa and sliding_window where the model splits them. Outputs and input gradients equal the
single-device layer; each rank sends the bytes the model counts; a missing rank raises within the timeout."""

import time
from datetime import timedelta

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from attncost.costmodel.hardware import get_hardware  # noqa: E402
from attncost.costmodel.parallel import Layout, predict_parallel  # noqa: E402
from attncost.costmodel.shape import Shape  # noqa: E402
from attncost.profiler.distributed import ParallelLayer, spawn  # noqa: E402
from attncost.profiler.ring import ATTENTION, Sent, block_attention, formula_grads, zigzag_index  # noqa: E402

B, H, T, DH = 1, 4, 16, 8
CASES = (("ring", True), ("ring", False), ("ulysses", True), ("ulysses", False))
GQA = {"kv_heads": 2}
RING, ULYSSES = Layout(cp=2), Layout(cp=2, cp_kind="ulysses")
TP, SP = Layout(tp=2), Layout(tp=2, sequence_parallel=True)
# (name, variant, params, layout, phase, causal)
LAYERS = (
    ("ring-gqa", "gqa", GQA, RING, "prefill", True),
    ("ring-mqa", "mqa", None, RING, "prefill", False),
    ("ulysses-gqa", "gqa", GQA, ULYSSES, "prefill", True),
    ("ulysses-window", "sliding_window", {"window": 5}, ULYSSES, "prefill", True),
    ("tp-flash", "flash", None, TP, "prefill", True),
    ("tp-mqa", "mqa", None, TP, "prefill", True),
    ("tp-window", "sliding_window", {"window": 5}, TP, "prefill", True),
    ("sp-gqa", "gqa", GQA, SP, "prefill", True),
    ("ring-train", "flash", None, RING, "train", True),
    ("ring-gqa-train", "gqa", GQA, RING, "train", False),
    ("ulysses-train", "gqa", GQA, ULYSSES, "train", True),
    ("tp-train", "gqa", GQA, TP, "train", True),
    ("sp-train", "flash", None, SP, "train", True),
)


def shape(phase="prefill", causal=True):
    return Shape(batch=B, T=T, d=H * DH, heads=H, dtype="fp32", causal=causal, phase=phase)


def check_layer(rank, n, variant, params, layout, phase, causal, timeout):
    """(max output error, max input-gradient error or None, bytes sent) of one rank's share of the layer."""
    layer = ParallelLayer(variant, shape(phase, causal), layout, rank, "cpu", params)
    sent = Sent()
    y = layer.step(timeout, sent, train=phase == "train")
    x = layer.x_whole.clone().requires_grad_(phase == "train")
    with torch.set_grad_enabled(phase == "train"):
        ref = layer.reference(x)
    out_err = (y - ref[:, layer.out_index()]).abs().max().item()
    if phase != "train":
        return out_err, None, sent.bytes
    (ref * layer.dout_whole).sum().backward()  # a scalar backward: no lazy import of sympy
    grad = x.grad[:, layer.index(layout.sequence_parallel)]
    return out_err, (layer.x.grad - grad).abs().max().item(), sent.bytes


def ranks_check(rank, n, device, timeout):
    """Each case's errors against the single device and the bytes sent; then a transfer the other rank skips."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(B, H, T, DH, generator=g) for _ in range(3))
    out = {}
    for kind, causal in CASES:
        idx = zigzag_index(T, n, rank) if kind == "ring" and causal else torch.arange(rank * T // n, (rank + 1) * T // n)
        sent = Sent()
        o = ATTENTION[kind](q[:, :, idx], k[:, :, idx], v[:, :, idx], causal=causal, timeout=timeout, sent=sent)
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)[:, :, idx]
        out[f"{kind}-{causal}"] = ((o - ref).abs().max().item(), sent.bytes)
    for name, *case in LAYERS:
        out[name] = check_layer(rank, n, *case, timeout)
    dist.barrier()
    if rank == 0:  # rank 1 is gone: the transfer must fail, within the short timeout
        t0 = time.perf_counter()
        try:
            ATTENTION["ring"](q, k, v, causal=False, timeout=timedelta(seconds=2), sent=Sent())
            out["failure"] = None
        except (TimeoutError, RuntimeError) as err:
            out["failure"] = (type(err).__name__, str(err)[:200], time.perf_counter() - t0)
    return out


FOUR = (
    ("ring-train", "flash", None, Layout(cp=4), "train", True),
    ("ulysses", "flash", None, Layout(cp=4, cp_kind="ulysses"), "prefill", True),
    ("tp-gqa", "gqa", GQA, Layout(tp=4), "prefill", True),  # 2 K/V heads, each on 2 ranks
    ("sp-train", "mqa", None, Layout(tp=4, sequence_parallel=True), "train", True),
)


def four_ranks_check(rank, n, device, timeout):
    return {name: check_layer(rank, n, *case, timeout) for name, *case in FOUR}


@pytest.fixture(scope="module")
def ranks():
    return spawn(ranks_check, 2, timeout=timedelta(seconds=5), start_method="fork")


@pytest.mark.parametrize("kind,causal", CASES)
def test_outputs_equal_sdpa(ranks, kind, causal):
    for r in ranks:
        assert r[f"{kind}-{causal}"][0] < 1e-5


@pytest.mark.parametrize("kind,causal", CASES)
def test_bytes_sent_equal_the_model(ranks, kind, causal):
    model = predict_parallel("flash", shape(causal=causal), Layout(cp=2, cp_kind=kind), get_hardware("h100"))
    assert model.status == "ok"
    for r in ranks:
        assert r[f"{kind}-{causal}"][1] == model.bytes_sent


@pytest.mark.parametrize("name,variant,params,layout,phase,causal", LAYERS, ids=[c[0] for c in LAYERS])
def test_split_layer_equals_one_device_and_sends_the_model_bytes(ranks, name, variant, params, layout, phase, causal):
    check_ranks(ranks, name, variant, params, layout, phase, causal)


def check_ranks(ranks, name, variant, params, layout, phase, causal):
    """Every rank's output and input gradient equal the single device's; each sent the model's bytes."""
    model = predict_parallel(variant, shape(phase, causal), layout, get_hardware("h100"), params)
    assert model.status == "ok", model.reason
    for r in ranks:
        out_err, grad_err, sent = r[name]
        assert out_err < 1e-5 and (grad_err is None or grad_err < 1e-4)
        assert sent == model.bytes_sent


def test_missing_rank_raises_no_hang(ranks):
    failure = ranks[0]["failure"]
    assert failure is not None, "a transfer to a rank that has left succeeded"
    assert failure[2] < 10



@pytest.fixture(scope="module")
def four():
    return spawn(four_ranks_check, 4, timeout=timedelta(seconds=5), start_method="fork")


@pytest.mark.parametrize("name,variant,params,layout,phase,causal", FOUR, ids=[c[0] for c in FOUR])
def test_four_ranks(four, name, variant, params, layout, phase, causal):
    check_ranks(four, name, variant, params, layout, phase, causal)


@pytest.mark.parametrize("causal", [True, False])
def test_block_gradient_formulas_equal_the_flash_backward(causal):
    """The formulas ring attention's backward uses where no kernel takes a log-sum-exp (CUDA)."""
    g = torch.Generator().manual_seed(2)
    q, k, v, dout = (torch.randn(B, H, T, DH, generator=g) for _ in range(4))
    out, lse = block_attention(q, k, v, causal)
    kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(dout, q, k, v, out, lse, 0.0, causal)
    for a, b in zip(formula_grads(dout, q, k, v, out, lse, causal), kernel):
        assert (a - b).abs().max().item() < 1e-4
