"""Seed #2's FLOP table beside attncost's count of the same layers.

Seed #2 ("Sparse attention with MLP approximation") claimed, full vs sparse:
128d/T64 1.0M vs 5.8M ... 2048d/T2048 10,737.4M vs 704.6M, and "sparse attention complexity O(k)".
Its "full" column is 2*T^2*d: one matmul of the attention core (QK^T), no AV, no projections,
no softmax. attncost counts whole layers (head dim 64, k=16, hidden 64, causal prefill, batch 1).

Run: python bench/seed2_topk.py
"""

from attncost.costmodel.estimate import estimate, graph
from attncost.costmodel.shape import Shape

# (d, T, claimed full MFLOP, claimed sparse MFLOP)
SEED2 = [(128, 64, 1.0, 5.8), (256, 128, 8.4, 12.6), (512, 256, 67.1, 29.4), (768, 512, 402.7, 75.5),
         (1024, 1024, 2147.5, 218.1), (2048, 2048, 10737.4, 704.6)]


def rows():
    for d, T, full, sparse in SEED2:
        s = Shape(T=T, d=d, heads=d // 64)
        mha, flash, topk = estimate("mha", s), estimate("flash", s), estimate("topk", s)
        logits = next(op.flops for op in graph("topk", s).ops if op.name == "selector_logits")
        yield d, T, full, sparse, mha, flash, topk, logits


def main() -> None:
    print(f"{'shape':>12} | {'seed full':>10} {'seed topk':>10} {'claim':>6} | {'mha core':>10} "
          f"{'flash all':>10} {'topk core':>10} {'topk all':>10} {'flash/topk':>10} | topk selector logits")
    for d, T, full, sparse, mha, flash, topk, logits in rows():
        print(f"{d:>5}d/T{T:<5} | {full:>10,.1f} {sparse:>10,.1f} {full / sparse:>5.2f}x | "
              f"{mha.flops_core / 1e6:>10,.1f} {flash.flops / 1e6:>10,.1f} {topk.flops_core / 1e6:>10,.1f} "
              f"{topk.flops / 1e6:>10,.1f} {flash.flops / topk.flops:>9.2f}x | "
              f"{logits / 1e6:,.1f} M")
    print("MFLOP per layer. The selector's last layer emits T logits per query: 2*T*hidden*T per head,\n"
          "O(T^2) per sequence, so topk never reaches the claimed O(k).")


if __name__ == "__main__":
    main()
