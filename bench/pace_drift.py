"""How much this machine's pace drifts, and how far one layer's time follows another's. Prints numbers;
asserts nothing.

For SECONDS, it times in turn the reference workload of ``profiler.pace`` and three layers (flash
decode, mla prefill, gqa decode at batch 4; d 320, fp32), each for 0.1 s (``harness.measure``'s median),
round after round. It prints each one's least and largest time and its correlation with the workload,
then the layers' correlations with each other. Where each ranges far and they correlate weakly, no one
workload can correct a measurement for the machine's drift: `crosscheck --time` shows the workload's
pace beside each point, and corrects nothing.

Run: python bench/pace_drift.py [SECONDS]   (default 100; on a CPU, on an otherwise idle machine)
"""

import math
import statistics
import sys
import time


def _corr(a: list, b: list) -> float:
    ma, mb = statistics.mean(a), statistics.mean(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def main(seconds: float) -> None:
    import torch

    from attncost.costmodel.shape import Shape
    from attncost.profiler.harness import measure
    from attncost.profiler.modules import build_module
    from attncost.profiler.pace import workload

    calls = {"reference workload": workload("cpu")}
    for v, phase, T, B in (("flash", "decode", 384, 1), ("mla", "prefill", 384, 1), ("gqa", "decode", 1536, 4)):
        module, inputs = build_module(v, Shape(T=T, d=320, heads=5, batch=B, phase=phase, dtype="fp32"), None,
                                      "cpu", "fp32")
        calls[f"{v} {phase} T {T} batch {B}"] = lambda m=module, x=inputs: m(*x)
    rounds = []
    stop = time.time() + seconds
    with torch.no_grad():
        while time.time() < stop:
            rounds.append({k: measure(f, "cpu", budget_s=0.1).median_s for k, f in calls.items()})
    names = list(calls)
    series = {k: [r[k] for r in rounds] for k in names}
    print(f"{len(rounds)} rounds in {seconds:.0f} s")
    for k in names:
        v = series[k]
        print(f"{k:26s} {min(v) * 1e3:8.3f} - {max(v) * 1e3:8.3f} ms ({max(v) / min(v):.2f}x), correlation with "
              f"the workload {_corr(v, series[names[0]]):.2f}")
    layers = names[1:]
    for i, a in enumerate(layers):
        for b in layers[i + 1:]:
            print(f"correlation of {a} with {b}: {_corr(series[a], series[b]):.2f}")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 100.0)
