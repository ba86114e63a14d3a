"""Units and counting conventions: the one place they are defined.

- FLOPs = 2 x multiply-accumulates (MACs) for a matmul: (m x k) @ (k x n) = 2mkn FLOPs.
  fvcore's FlopCountAnalysis reports MACs under the name "flops" (convert with ``macs_to_flops``);
  torch.utils.flop_counter.FlopCounterMode already reports 2 x MACs.
- Non-matmul ops get a fixed FLOP count per element, kept in ``ELEMENT_FLOPS`` below (forward) and
  ``BACKWARD_ELEMENT_FLOPS`` (backward). The profiler's fvcore handles use the same tables.
- Causal attention: an unfused math path computes the dense T x T scores and masks them (counted
  dense); a fused kernel (FlashAttention, cuDNN, SDPA) skips masked tiles and is counted as half of
  the dense core, FlashAttention's own benchmark convention (``CAUSAL_FUSED_FRACTION``).
- On screen: FLOPs in decimal units (GFLOP = 1e9), memory in binary units (MiB = 2**20), time in ms.
"""

from typing import Literal, get_args

# The vocabularies every command, profile and results file shares (flags check against these).
Dtype = Literal["bf16", "fp16", "fp32"]
Phase = Literal["prefill", "decode", "train"]
SdpaBackend = Literal["flash", "cudnn", "efficient", "math"]
Device = Literal["cuda", "mps", "cpu"]
DTYPES: tuple = get_args(Dtype)
PHASES: tuple = get_args(Phase)
SDPA_BACKENDS: tuple = get_args(SdpaBackend)  # torch's fused/math SDPA backends
FUSED_BACKENDS: tuple = ("cudnn", "flash", "efficient")  # the ones that skip masked tiles, fastest first
DEVICES: tuple = get_args(Device)
TORCH_DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Stored precisions of a whole model's parts (``predict --model``): its linear layers' weights and its
# KV cache. fp8 weights run fp8 matmuls (activations quantised per token); int8 / int4 weights are
# weight-only (dequantised in the matmul, computed in the activation dtype). Eight-bit tensor peaks
# of a hardware profile are kept per ``EightBit`` dtype.
WeightDtype = Literal["bf16", "fp16", "fp8", "int8", "int4"]
KvDtype = Literal["bf16", "fp16", "fp8", "int8"]
EightBit = Literal["fp8", "int8"]
WEIGHT_DTYPES: tuple = get_args(WeightDtype)
KV_DTYPES: tuple = get_args(KvDtype)
EIGHT_BIT: tuple = get_args(EightBit)
WEIGHT_ONLY: tuple = ("int8", "int4")  # dequantised inside the matmul, computed at the activation dtype
TORCH_FP8 = "float8_e4m3fn"  # torch's fp8 format for weights and caches (E4M3, as vLLM and TensorRT-LLM)

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "fp8": 1, "int8": 1, "int4": 0.5}
# Weight-only dequantisation, ops per weight element each time a matmul loads it (counted as "mul"
# FLOPs): int8 convert + scale; int4 unpack (shift and mask) + convert + scale. Group scales and
# zero points are ignored.
DEQUANT_OPS = {"int8": 2, "int4": 3}
DEQUANT_TILE_M = 128  # rows of the activation tile a weight-only kernel dequantises a weight tile for
INDEX_BYTES = 8  # torch.topk returns int64 indices
CAUSAL_FUSED_FRACTION = 0.5

# FLOPs per element of the op's output (or of its input for reductions), forward pass.
ELEMENT_FLOPS = {
    "scale": 1,  # x * c
    "mask": 1,  # causal mask: one select per score
    "softmax": 5,  # row max, subtract, exp, row sum, divide
    "exp": 1,
    "relu": 1,
    "add": 1,
    "mul": 1,
    "div": 1,
    "addcmul": 2,  # x + a * b: a multiply and an add per output element
    "square_sum": 2,  # |x|^2: multiply + add per input element
    "feature_map": 5,  # Performer phi: subtract |x|^2/2, stabiliser max, subtract it, exp, scale by 1/sqrt(m)
    "feature_map_fixed": 4,  # Performer decode key: the recurrent state fixes its stabiliser (no max)
    "rope": 3,  # x*cos + rotate(x)*sin: 2 mul + 1 add
    "mean": 1,  # one add per input element (the divide per output is negligible and ignored)
    "cumsum": 1,  # one add per element
    "topk": 1,  # one comparison per candidate element
    "gather": 0,  # data movement only
    "copy": 0,  # data movement only (KV-cache append, concat)
    "max": 1,  # one comparison per input element
    "pinv_update": 1,  # Nystrom pinv: c*I - X, one op per element
    "offset": 0,  # integer index arithmetic (row offsets added to indices): no floating-point operation
}

# Backward FLOPs per forward-output element (gradient w.r.t. the op's input).
BACKWARD_ELEMENT_FLOPS = {
    "scale": 1,
    "mask": 1,
    "softmax": 4,  # dx = y * (g - sum(g * y)): mul, row sum, sub, mul
    "exp": 1,
    "relu": 1,
    "add": 0,
    "mul": 2,
    "div": 3,
    "addcmul": 2,  # the gradients of a and b, a multiply each; x's passes through
    "square_sum": 2,
    "feature_map": 3,
    "feature_map_fixed": 3,
    "rope": 3,
    "mean": 1,
    "cumsum": 1,  # reverse cumsum
    "topk": 0,  # indices carry no gradient
    "gather": 1,  # scatter-add
    "copy": 0,
    "max": 0,
    "pinv_update": 1,
}

GIGA = 1e9
TERA = 1e12
MIB = 2**20
GIB = 2**30


def macs_to_flops(macs: float) -> float:
    """fvcore's "flops" are MACs; attncost's FLOPs are 2 x MACs."""
    return 2.0 * macs
