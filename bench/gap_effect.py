"""How much slower a small op runs in a layer than back to back, by what ran since its last call.

`calibrate` times each op over and over; in a layer, each op runs once per call, after the layer's
other ops. This script times three small ops of a decode layer (a 1 x 320 by 320 x 320
projection, a 4 x 320 one, one query against 1,536 cached keys of 5 heads in SDPA) with nothing
between their calls, then with a gap between calls filled by pure Python work (the interpreter,
as a module's forward runs between its ops) or by other small torch ops (a layer's other kernels),
and prints each op's time (the median of 5 rounds) per gap.

On a machine whose caches and cores are shared with other tenants, an op finds its code and data
colder the longer it was idle; on a dedicated machine the times stay flat.
    usage: python bench/gap_effect.py [--threads N]   (default: torch's)
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

GAPS_US = (0, 100, 300, 1000, 3000)
ROUNDS, CALLS = 5, 200


def python_work(us: float):
    """A function that keeps the interpreter busy for about ``us`` microseconds (no torch op)."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.02:
        sum(range(100))
        n += 1
    per = 0.02 / n

    def work():
        for _ in range(int(us * 1e-6 / per)):
            sum(range(100))
    return work


def torch_work(us: float):
    """A function that runs small torch ops (element-wise, 64 x 64) for about ``us`` microseconds."""
    x = torch.randn(64, 64)
    t0 = time.perf_counter()
    for _ in range(200):
        x.mul(2.0)
    per = (time.perf_counter() - t0) / 200

    def work():
        for _ in range(int(us * 1e-6 / per)):
            x.mul(2.0)
    return work


def timed(op, between) -> float:
    """Median over rounds of an op's mean time (us), ``between`` run after each call, untimed."""
    for _ in range(10):
        op()
        between()
    rounds = []
    for _ in range(ROUNDS):
        spent = 0.0
        for _ in range(CALLS):
            t0 = time.perf_counter()
            op()
            spent += time.perf_counter() - t0
            between()
        rounds.append(spent / CALLS * 1e6)
    return statistics.median(rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    threads = ap.parse_args().threads
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    lin = torch.nn.Linear(320, 320, bias=False)
    x1, x4 = torch.randn(1, 1, 320), torch.randn(4, 1, 320)
    q, k, v = torch.randn(1, 5, 1, 64), torch.randn(1, 5, 1536, 64), torch.randn(1, 5, 1536, 64)
    ops = {"linear 1 x 320 x 320": lambda: lin(x1), "linear 4 x 320 x 320": lambda: lin(x4),
           "sdpa 1 query, 1,536 keys, 5 heads": lambda: F.scaled_dot_product_attention(q, k, v)}
    print(f"{torch.get_num_threads()} threads; us per call (median of {ROUNDS} rounds of {CALLS} calls) "
          f"with a gap of N us between calls")
    print(f"{'op':36s} {'gap filled by':14s} " + " ".join(f"{g:>7d}" for g in GAPS_US))
    with torch.no_grad():
        for name, op in ops.items():
            for label, make in (("python", python_work), ("torch ops", torch_work)):
                row = [timed(op, make(g) if g else (lambda: None)) for g in GAPS_US]
                print(f"{name:36s} {label:14s} " + " ".join(f"{t:7.1f}" for t in row), flush=True)


if __name__ == "__main__":
    main()
