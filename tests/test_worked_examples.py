"""Worked examples: every variant at a small shape, counted by hand (not by the code under test).

Shape unless stated: B=1, T=8, d=32, heads=4 (dh=8), bf16, causal prefill. A linear layer
(rows x k) @ (k x n) costs 2*rows*k*n FLOPs; non-matmul ops cost ELEMENT_FLOPS per element:
scale 1, mask 1, softmax 5, relu 1, rope 3, mean 1, square_sum 2, feature_map 5, topk 1,
cumsum 1, add 1, mul 1, div 1, addcmul 2, max 1, pinv_update 1; gather and copy 0.
Each case lists its terms; the comments carry the arithmetic.
"""

import pytest

from attncost.costmodel.estimate import estimate, graph, resolve_params
from attncost.costmodel.shape import Shape
from attncost.costmodel.variants.latent import block_rows

S = Shape(batch=1, T=8, d=32, heads=4)
PROJ = 2 * 8 * 32 * 32  # one d x d projection of 8 tokens: 16,384

CASES = {
    # name: (params, matmul FLOPs, total FLOPs)
    # QKV+O 4*16384 = 65536; QK^T 2*4*8*8*8 = 4096, AV 4096 (dense);
    # scale 256, mask 256, softmax 5*256 = 1280
    "mha": ({}, 4 * PROJ + 4096 + 4096, 4 * PROJ + 8192 + 256 + 256 + 1280),
    # fused causal: half the core: 2048 + 2048; scale 128, softmax 640
    "flash": ({}, 4 * PROJ + 4096, 4 * PROJ + 4096 + 128 + 640),
    # kv_heads=2: K, V 2*8*32*16 = 8192 each
    "gqa": ({"kv_heads": 2}, 2 * PROJ + 2 * 8192 + 4096, 2 * PROJ + 2 * 8192 + 4096 + 768),
    # kv_heads=1: K, V 2*8*32*8 = 4096 each
    "mqa": ({}, 2 * PROJ + 2 * 4096 + 4096, 2 * PROJ + 2 * 4096 + 4096 + 768),
    # window 4: pairs T*w - w^2/2 = 24; QK^T 2*4*24*8 = 1536, AV 1536; scale 96, softmax 480
    "sliding_window": ({"window": 4}, 4 * PROJ + 3072, 4 * PROJ + 3072 + 96 + 480),
    # d_c=32, d_c'=96, d_r=4 (defaults 4dh, 12dh, dh/2): q_down 2*8*32*96 = 49152;
    # q_up 2*8*96*(4*12) = 73728; kv_down 2*8*32*36 = 18432; k_up, v_up 2*8*32*32 = 16384 each;
    # QK^T 2*4*64*12/2 = 3072; AV over v padded to the q/k head dim 2*4*64*12/2 = 3072; o 16384.
    # rope q 8*4*4*3 = 384, rope k 8*4*3 = 96; scale 128; softmax 640
    "mla": ({}, 49152 + 73728 + 18432 + 2 * 16384 + 3072 + 3072 + 16384,
            49152 + 73728 + 18432 + 2 * 16384 + 3072 + 3072 + 16384 + 384 + 96 + 128 + 640),
    # d_c=16, no q latent, d_r=2, 2 index heads of 4, k=4:
    # q 2*8*32*40 = 20480; kv_down 2*8*32*18 = 9216; index q/k/w 4096, 2048, 1024;
    # index scores 2*(8*2)*4*8 = 1024; weigh 2*8*2*8 = 256; q_absorb 2*4*8*8*16 = 8192;
    # pairs T*k - k^2/2 = 24 of 32: QK^T 2*8*4*18*4*0.75 = 3456, AV over the latents' 18 channels
    # 2*8*4*4*18*0.75 = 3456; out_absorb 8192; o 16384.
    # rope 192 + 48; relu 128; mask 64; topk 64; scale 96; softmax 480
    "dsa": ({"kv_lora_rank": 16, "q_lora_rank": 0, "rope_dim": 2, "index_heads": 2, "index_dim": 4, "k": 4},
            20480 + 9216 + 4096 + 2048 + 1024 + 1024 + 256 + 8192 + 3456 + 3456 + 8192 + 16384,
            77824 + 192 + 48 + 128 + 64 + 64 + 96 + 480),
    # k=4: E K, F V 2*4*8*32 = 2048 each; QK^T 2*4*8*4*8 = 2048, AV 2048; scale 128, softmax 640
    "linformer": ({"k": 4}, 4 * PROJ + 4 * 2048, 4 * PROJ + 4 * 2048 + 128 + 640),
    # m=2, 1 iteration, conv 3: kernel_1 2*4*8*8*2 = 1024, kernel_2 256, kernel_3 1024,
    # pinv 4 x 2*4*2*2*2 = 256, kernel_3 V 1024, kernel_1 pinv 256, out 1024, conv 2*4*8*8*3 = 1536.
    # scale q, k 256 each; landmark means 256 each; softmaxes 5*(64+16+64) = 720; pinv init:
    # column sums 16 + their max 8, A^T / max 16; updates 3*16, scale 16; conv add 256
    "nystrom": ({"landmarks": 2, "pinv_iters": 1, "conv_kernel": 3},
                4 * PROJ + 1024 + 256 + 1024 + 256 + 1024 + 256 + 1024 + 1536,
                4 * PROJ + 6400 + 1024 + 720 + 24 + 16 + 48 + 16 + 256),
    # m=4, chunk 4 (2 chunks): rf q, k 2*32*8*4 = 2048 each; intra scores 2*8*4*4*4 = 1024,
    # intra AV 2*8*4*4*8 = 2048, chunk state 2048, inter num 2048, inter den 2*8*4*4 = 256.
    # per q/k: scale 256, sqnorm 512, phi 5*128 = 640; mask 128, rowsum 128, ksum 128,
    # state prefix 256 and its own state taken off 256 (exclusive), ksum prefix 32 and 32,
    # num add 256, den add 32, normalise 256
    "performer": ({"features": 4, "chunk": 4}, 4 * PROJ + 2 * 2048 + 1024 + 3 * 2048 + 256,
                  4 * PROJ + 2 * 2048 + 1024 + 3 * 2048 + 256 + 2 * 1408 + 1504),
    # k=2, hidden 4, rows R = 8*4 = 32: q, v, o 3*16384; selector hidden 2*32*8*4 = 2048,
    # logits 2*32*4*8 = 2048; approximator 2*32*16*4 = 4096 and 2*32*4*8 = 2048.
    # relu 128 + 128, mask 256, topk 256
    "topk": ({"k": 2, "hidden": 4}, 3 * PROJ + 2048 + 2048 + 4096 + 2048, 3 * PROJ + 10240 + 768),
    # hidden 4: v, o 2*16384; W1 2*8*32*16 = 8192; logits 2*4*8*4*8 = 2048; AV 4096.
    # relu 128, mask 256, softmax 1280
    "mlp_attention": ({"hidden": 4}, 2 * PROJ + 8192 + 2048 + 4096, 2 * PROJ + 14336 + 1664),
    # L=4, k=2: q, k, v, out_proj, c_proj 5*16384; latent scores 2*4*8*8*4 = 2048.
    # div 128, topk 128, softmax 5*64 = 320, mul 512, sum 512, add V 256
    "msla": ({"latents": 4, "k": 2}, 5 * PROJ + 2048, 5 * PROJ + 2048 + 1856),
}


@pytest.mark.parametrize("name", CASES)
def test_worked_example(name):
    params, matmul, total = CASES[name]
    e = estimate(name, S, params)
    assert e.status == "ok", e.reason
    assert e.flops_matmul == pytest.approx(matmul, rel=1e-12)
    assert e.flops == pytest.approx(total, rel=1e-12)


def test_every_variant_has_a_worked_example():
    from attncost.costmodel.variants import NAMES

    assert set(NAMES) == set(CASES)


def test_issue_example_mha_and_flash_at_4096():
    """B=1, T=4096, d=1024, 16 heads: QKV 25.77 + O 8.59 + QK^T 34.36 + AV 34.36 GFLOP."""
    s = Shape(T=4096, d=1024, heads=16)
    ops = {op.name: op.flops for op in graph("mha", s).ops}
    assert (ops["q_proj"] + ops["k_proj"] + ops["v_proj"]) / 1e9 == pytest.approx(25.77, abs=0.005)
    assert ops["o_proj"] / 1e9 == pytest.approx(8.59, abs=0.005)
    assert ops["scores"] / 1e9 == pytest.approx(34.36, abs=0.005)
    assert ops["av"] / 1e9 == pytest.approx(34.36, abs=0.005)
    mha, flash = estimate("mha", s), estimate("flash", s)
    assert mha.flops_matmul / 1e9 == pytest.approx(103.08, abs=0.01)
    assert flash.flops_matmul / 1e9 == pytest.approx(68.72, abs=0.01)
    # softmax 5, scale 1, mask 1 per score: 7 * 16 * 4096^2
    assert mha.flops - mha.flops_matmul == 7 * 16 * 4096**2
    assert estimate("gqa", s, {"kv_heads": 4}).kv_cache_bytes == mha.kv_cache_bytes / 4


def test_mha_decode_by_hand():
    """One token against a cache of 8: projections 4*2*32*32 = 8192; QK^T 2*4*8*8 = 512, AV 512;
    scale 32, softmax 160, no mask; the cache append moves data only."""
    e = estimate("mha", S.with_(phase="decode"))
    assert e.flops_matmul == 8192 + 1024
    assert e.flops == 8192 + 1024 + 32 + 160
    assert e.kv_cache_bytes == 8 * 2 * 32 * 2  # T * (K and V) * d * bf16 bytes


def test_a_gather_moves_the_rows_it_picks():
    """topk decode (fp32, T 1024, 4 heads of 16, k 16): the values' gather picks 16 cached rows of 16
    per head, 4 * 16 * 16 * 4 B = 4,096 B of the 262,144 B cache, reads 64 int64 indices (512 B) and
    writes the 4,096 B it picked: 8,704 B, and only the picked rows are fetched from the cache."""
    from attncost.costmodel.analysis import analyse

    g = graph("topk", Shape(T=1024, d=64, heads=4, dtype="fp32", phase="decode"))
    (gather,) = [k for k in analyse(g).kernels if k.name == "gather_values"]
    assert g.tensors["v_cache"].nbytes == 262_144
    assert (gather.bytes, gather.held) == (8_704, 4_096)


def test_performer_decode_state_update_by_hand():
    """Performer decode (B=1, 4 heads of 8, m=4 features): the state S (4 x 4 x 8 = 128 elements) takes
    phi(k)^T v in one addcmul, a multiply and an add per element: 256 FLOPs, no matmul; it reads S
    (128), phi(k) (16) and v (32) and writes S (128): 304 elements of bf16, 608 B."""
    from attncost.costmodel.analysis import analyse

    s = S.with_(phase="decode")
    g = graph("performer", s, resolve_params("performer", s, {"features": 4, "chunk": 4}))
    ops = {op.name: op for op in g.ops}
    assert ops["state_update"].flops == 256 and ops["state_update"].kind == "elementwise"
    assert "state_outer" not in ops
    (k,) = [k for k in analyse(g).kernels if k.name == "state_update"]
    assert k.bytes == 608 and k.flops_matmul == 0


def test_mla_decode_absorbed_example():
    """DeepSeek-V2 absorbed decode (B=1, H=16, dh=64, d_c=256, d_r=32, T=1000): MQA over the
    latent cache with head dim 288 for scores (2*16*288*1000 = 9.216 M) and, the latents being
    the values too, 288 for values: the 256 kept (2*16*1000*256 = 8.192 M) and the 32 RoPE
    channels dropped (1.024 M); the cache holds d_c + d_r = 288 elements per token."""
    s = Shape(T=1000, d=1024, heads=16, phase="decode")
    ops = {op.name: op for op in graph("mla", s).ops}
    assert ops["scores"].flops == 9_216_000
    assert ops["av"].flops == 8_192_000
    assert ops["av_dropped"].flops == 1_024_000
    assert estimate("mla", s).kv_cache_bytes_per_token == 288 * 2


def test_train_backward_multipliers():
    """Every matmul's backward is two matmuls of its size (3x in all); FlashAttention's backward
    recomputes QK^T: 5 matmuls for its 2 forward ones, so the fused core costs 3.5x in train."""
    s = Shape(T=256, d=256, heads=4)
    proj = 4 * 2 * 256 * 256 * 256
    fwd, train = estimate("mha", s), estimate("mha", s.with_(phase="train"))
    assert train.flops_matmul == 3 * fwd.flops_matmul
    core = estimate("flash", s).flops_matmul - proj
    assert estimate("flash", s.with_(phase="train")).flops_matmul == 3 * proj + 3.5 * core


def test_peak_memory_by_hand():
    """B=1, T=16, d=32, H=4, bf16: x, q, k, v and the attention output are 16*32 = 512 elements
    each, a score tensor 4*16*16 = 1024. mha, op by op: at QK^T q, k, v and the scores are live
    (3*512 + 1024 = 2560); at scale, mask and softmax v plus an input and an output score tensor
    (512 + 2*1024 = 2560). flash (fused): the scores never leave the kernel; the peak is q, k, v and
    the output at the attention kernel, 4*512 = 2048 elements, plus the log-sum-exp the kernel writes
    for its backward: one fp32 per head and query, 4*16*4 = 256 bytes."""
    s = S.with_(T=16)
    assert estimate("mha", s).activation_bytes_unfused == 2560 * 2
    assert estimate("mha", s).activation_bytes_fused == 2560 * 2  # the math path has nothing fused
    assert estimate("flash", s).activation_bytes_unfused == 2560 * 2
    assert estimate("flash", s).activation_bytes_fused == 2048 * 2 + 4 * 16 * 4


def test_dsa_peak_memory_at_32768_by_hand():
    """B=1, T=32768, d=1024, 16 heads, bf16, default DSA (64 index heads of 128, k=2048, d_c=256,
    d_r=32): 2^27 // (64*32768 + 2048*288) = 49 queries per block would fit the block budget, but
    blocks are at most 16, so 16 blocks of 2048 queries. One block's per-head index scores are
    2048*64*32768 = 2^32 elements (8 GiB in bf16), its ReLU another 8 GiB; the projections, the
    absorbed queries and the latents add under 1 GiB. All queries at once would hold 2 x 128 GiB."""
    s = Shape(T=32768, d=1024, heads=16)
    e = estimate("dsa", s)
    assert block_rows(s, resolve_params("dsa", s)) == 2048 and e.params["chunk"] is None
    assert 16 * 2**30 < e.activation_bytes_fused < 17 * 2**30
    ops = [op.name for op in graph("dsa", s).ops]
    assert ops.count("index_relu[15]") == 1 and "index_relu[16]" not in ops


def test_dsa_chunk_is_checked():
    from attncost.costmodel.variants import VariantError

    s = Shape(T=4096, d=1024, heads=16)
    assert estimate("dsa", s, {"chunk": 4}).status == "ok"  # 1024 blocks
    e = estimate("dsa", s, {"chunk": 3})
    assert e.status == "n/a" and "at least 4" in e.reason
    with pytest.raises(VariantError, match="dsa.chunk=3"):
        resolve_params("dsa", s, {"chunk": 3})
