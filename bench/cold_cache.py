"""What an eager op costs on a CPU right after other work has streamed through the caches. Prints numbers;
asserts nothing.

A layer called in a loop touches its weights, caches and activations once per call. Where those exceed
what the caches keep, each op meets its data, and the host its own code and data (the interpreter's,
the dispatcher's), evicted by the ops before it. The microbenchmarks of `attncost calibrate` time each op
in a loop of its own, where both stay cached. Each op below is timed call by call
(``time.perf_counter`` around the op alone, the median of many calls), each call right after a
``sum`` over N MB of other data:

1. host: ops that move next to no data (a view, an add of 1 KB, a 16 x 16 matmul), after N MB:
   what the host pays to bring its own working set back;
2. data: ops of a decode step (matrix-vector products, an index_select of rows, SDPA over a K/V
   cache), hot and after 48 MB: the extra time, and that per byte the op reads;
3. ramp: the 320 x 768 matrix-vector product after N MB of a sum, and after N MB of other matrices'
   products, with the threads torch uses and with one: how the extra grows with what came between.

Run: python bench/cold_cache.py   (about a minute, on an otherwise idle machine)
"""


def main() -> None:
    import torch
    import torch.nn.functional as F

    from attncost.profiler.cold import per_call_us, traffic

    torch.manual_seed(0)
    stream = torch.randn(48 * 2**20 // 4)

    def after(mb: float):
        """A call that reads the first ``mb`` MB of ``stream`` (none for 0)."""
        if mb == 0:
            return lambda: None
        part = stream[: int(mb * 2**20) // 4]
        return lambda: part.sum()

    x, y = torch.randn(256), torch.randn(16, 16)
    host = {"view": lambda: y.view(256), "add 1 KB": lambda: x + 1, "matmul 16x16": lambda: y @ y}
    print(f"1. host: us per op right after a sum over N MB ({torch.get_num_threads()} threads)")
    for mb in (0, 1, 4, 16, 48):
        print(f"   after {mb:2d} MB: " + "   ".join(f"{k} {per_call_us(op, after(mb)):6.1f}" for k, op in host.items()))

    def mv(m, k, n):
        a, w = torch.randn(m, k), torch.randn(k, n)
        return (lambda: a @ w), k * n * 4

    def rows():
        src, idx = torch.randn(384, 288), torch.randperm(384)
        return (lambda: src.index_select(0, idx)), src.numel() * 4

    def sdpa(B, H, T, dh):
        q, k, v = torch.randn(B, H, 1, dh), torch.randn(B, H, T, dh), torch.randn(B, H, T, dh)
        return (lambda: F.scaled_dot_product_attention(q, k, v)), 2 * k.numel() * 4

    data = {"matmul 1x320x768": mv(1, 320, 768), "matmul 4x320x768": mv(4, 320, 768),
            "matmul 1x768x4096": mv(1, 768, 4096), "index_select 384 of 384x288": rows(),
            "sdpa 1 query, 4x5 heads, T 1536": sdpa(4, 5, 1536, 64)}
    print("2. data: hot (a loop of the op alone) and right after a sum over 48 MB")
    with torch.no_grad():
        for name, (op, nbytes) in data.items():
            hot, cold = per_call_us(op, after(0), 200), per_call_us(op, after(48), 60)
            print(f"   {name:32s} reads {nbytes / 1e6:6.2f} MB: hot {hot:7.1f} us, after {cold:7.1f} us, "
                  f"+{cold - hot:6.1f} us ({(cold - hot) * 1e6 / nbytes:5.1f} ps per byte read)")
        op, _ = data["matmul 1x320x768"]
        sizes = (0, 2, 4, 8, 12, 16, 24, 32, 48)
        threads = torch.get_num_threads()
        for n in sorted({threads, 1}, reverse=True):
            torch.set_num_threads(n)
            print(f"3. ramp, {n} thread{'s' * (n > 1)}: matmul 1x320x768 right after a sum over N MB, then right "
                  f"after matrix-vector products by other matrices of N MB in all")
            print("   " + "   ".join(f"{mb} MB {per_call_us(op, after(mb)):6.1f}" for mb in sizes))
            print("   " + "   ".join(f"{mb} MB {per_call_us(op, traffic(mb)):6.1f}" for mb in sizes))
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
