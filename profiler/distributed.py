"""Run one attention layer split over N processes with torch.distributed (gloo on the CPU, NCCL on CUDA).

``spawn(fn, n, *args)`` starts N ranks itself (torch.multiprocessing) when no launcher did; under
``torchrun`` (RANK / WORLD_SIZE / MASTER_ADDR set) ``init`` joins the launcher's group instead. Every
collective is bounded by ``timeout``: a rank that fails makes the others raise, not hang, and
``spawn`` ends the rest and raises ``DistributedError`` naming the rank and its error.

``measure_point`` times the layer (``ParallelLayer``: bias-free Q/K/V projections, attention, output
projection; split by heads (tp) or by the sequence (ring, Ulysses); prefill or forward + backward)
per rank; rank 0 gathers each rank's median time and bytes sent and writes the results file
atomically (``runner.run_points``). ``measure_links`` times p2p, all-reduce and all-to-all at six
sizes, each issued right after compute as a layer issues it, how much of a p2p transfer hides
behind compute, and how much longer ranks compute all busy at once (``attncost calibrate --nproc N``).
"""

from __future__ import annotations

import os
import socket
import statistics
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..costmodel.hardware import Interconnect, Link, load_profile
from ..costmodel.estimate import resolve_params
from ..costmodel.parallel import Layout, collective_bytes, collective_steps, kv_heads, predict_parallel
from ..costmodel.results import Point, Timing
from ..costmodel.shape import Shape
from ..costmodel.units import TORCH_DTYPE_NAMES
from .ring import ATTENTION, Sent, local_attention, wait, zigzag_index
from .tensor_parallel import enter, leave

TIMEOUT = timedelta(seconds=60)
LINK_SIZES = tuple(4096 * 4**i for i in range(6))  # bytes per rank of the calibration messages: 4 KiB .. 4 MiB
AFTER_COMPUTE_S = 0.005  # compute before each timed collective (a layer's blocks take milliseconds)
OVERLAP_BYTES = 2**20  # the ring shift whose overlap with compute is measured


class DistributedError(RuntimeError):
    """A rank failed or timed out (one plain sentence naming it)."""


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as one rank."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def backend_for(device: str) -> str:
    return "nccl" if device == "cuda" else "gloo"


def init(rank: int, n: int, device: str, port: int, timeout: timedelta = TIMEOUT) -> None:
    """Join (or, spawned, form) the process group; on CUDA bind rank r to GPU r."""
    if device == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    if launched():
        dist.init_process_group(backend_for(device), timeout=timeout)
        return
    dist.init_process_group(backend_for(device), init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=n, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, fn: Callable, n: int, port: int, device: str, timeout: timedelta, queue, args) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // n))
    init(rank, n, device, port, timeout)
    try:
        result = fn(rank, n, device, timeout, *args)
        queue.put((rank, "ok", result))
    except BaseException as err:  # report any failure of a rank to the parent, then re-raise it
        queue.put((rank, "error", f"{type(err).__name__}: {err}".strip() + "\n" + traceback.format_exc(limit=3)))
        raise
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable, n: int, *args, device: str = "cpu", timeout: timedelta = TIMEOUT,
          start_method: str = "spawn") -> list:
    """Run ``fn(rank, n, device, timeout, *args)`` on ``n`` new processes; their return values by rank.
    ``fn`` must be importable (a module-level function). DistributedError if a rank fails.
    ``start_method`` "fork" starts faster (no new interpreter) but only where torch has started no
    threads or CUDA in this process."""
    ctx = mp.get_context(start_method)
    queue = ctx.SimpleQueue()
    try:
        mp.start_processes(_rank_main, args=(fn, n, free_port(), device, timeout, queue, args), nprocs=n,
                           join=True, start_method=start_method)
    except mp.ProcessRaisedException as err:
        raise DistributedError(_first_error(queue) or f"a rank failed: {str(err).splitlines()[-1]}") from None
    except mp.ProcessExitedException as err:
        raise DistributedError(_first_error(queue) or f"rank {err.error_index} exited with code "
                               f"{err.exit_code}") from None
    results = {}
    while not queue.empty():
        rank, status, value = queue.get()
        results[rank] = value
    return [results[r] for r in range(n)]


def _first_error(queue) -> Optional[str]:
    errors = []
    while not queue.empty():
        rank, status, value = queue.get()
        if status == "error":
            errors.append(f"rank {rank} failed: {value.splitlines()[0]}")
    return "; ".join(sorted(errors)) or None


# -- the layer -----------------------------------------------------------------------------------------

@dataclass
class ParallelLayer:
    """One rank's share of the layer (bias-free Q/K/V projections, attention, output projection) of
    ``variant`` at ``shape`` split by ``layout``: every rank draws the same whole weights, input and
    output gradient, and keeps its part. ``reference()`` is the single-device layer on the same data."""

    variant: str
    shape: Shape
    layout: Layout
    rank: int
    device: str
    params: Optional[dict] = None

    def __post_init__(self):
        s = self.shape
        self.window = getattr(resolve_params(self.variant, s, self.params), "window", None)
        self.kv = kv_heads(self.variant, s, self.params)
        dt = getattr(torch, TORCH_DTYPE_NAMES[s.dtype])
        gen = torch.Generator().manual_seed(0)
        kv_rows = self.kv * s.head_dim
        whole = {w: torch.randn(rows, s.d, generator=gen) / s.d ** 0.5
                 for w, rows in (("q", s.d), ("k", kv_rows), ("v", kv_rows), ("o", s.d))}
        self.whole = {w: t.to(self.device, dt) for w, t in whole.items()}
        self.x_whole, self.dout_whole = (torch.randn(s.batch, s.T, s.d, generator=gen).to(self.device, dt)
                                         for _ in range(2))
        self.w = self.rank_weights()
        self.x = self.x_whole[:, self.index(self.layout.sequence_parallel)].contiguous()
        self.dout = self.dout_whole[:, self.out_index()].contiguous()

    @property
    def n(self) -> int:
        return self.layout.gpus

    def heads(self) -> tuple:
        """(query heads, K/V heads) this rank projects: tp splits them, K/V heads replicated where N exceeds them."""
        if self.layout.tp == 1:
            return self.shape.heads, self.kv
        return self.shape.heads // self.n, max(1, self.kv // self.n)

    def rank_weights(self) -> dict:
        """Column-parallel Q/K/V rows (this rank's heads) and row-parallel O columns under tp; else whole."""
        if self.layout.tp == 1:
            return dict(self.whole)
        dh, (h, kvh) = self.shape.head_dim, self.heads()
        q0, k0 = self.rank * h * dh, self.rank * self.kv // self.n * dh
        return {"q": self.whole["q"][q0:q0 + h * dh], "k": self.whole["k"][k0:k0 + kvh * dh],
                "v": self.whole["v"][k0:k0 + kvh * dh], "o": self.whole["o"][:, q0:q0 + h * dh].contiguous()}

    def index(self, sharded: bool = True) -> torch.Tensor:
        """Token positions of this rank's input: zig-zag chunks (causal ring), a contiguous shard (other
        cp, sequence-parallel tp) or all of them (tp)."""
        s = self.shape
        if self.layout.cp > 1 and self.layout.cp_kind == "ring" and s.causal:
            return zigzag_index(s.T, self.n, self.rank)
        if self.layout.cp > 1 or sharded:
            c = s.T // self.n
            return torch.arange(self.rank * c, (self.rank + 1) * c)
        return torch.arange(s.T)

    def out_index(self) -> torch.Tensor:
        """Token positions of this rank's output (tp without sequence parallel: all of them)."""
        return self.index(self.layout.tp == 1 or self.layout.sequence_parallel)

    def leaves(self) -> list:
        return [self.x] + list(self.w.values())

    def forward(self, timeout: timedelta, sent: Sent) -> torch.Tensor:
        s, lay = self.shape, self.layout
        x = enter(self.x, lay.sequence_parallel, timeout, sent) if lay.tp > 1 else self.x
        B, rows = x.shape[:2]
        (h, kvh), dh = self.heads(), s.head_dim
        q, k, v = (torch.nn.functional.linear(x, self.w[w]).view(B, rows, heads, dh).transpose(1, 2)
                   for w, heads in (("q", h), ("k", kvh), ("v", kvh)))
        if lay.tp > 1:
            o = local_attention(q, k, v, causal=s.causal, window=self.window)
        else:
            o = ATTENTION[lay.cp_kind](q, k, v, causal=s.causal, timeout=timeout, sent=sent, window=self.window)
        y = torch.nn.functional.linear(o.transpose(1, 2).reshape(B, rows, h * dh), self.w["o"])
        return leave(y, lay.sequence_parallel, timeout, sent) if lay.tp > 1 else y

    def reference(self, x: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The single-device layer's whole output (B, T, d) on ``x`` (default: the whole input)."""
        s, B, dh = self.shape, self.shape.batch, self.shape.head_dim
        x = self.x_whole if x is None else x
        q, k, v = (torch.nn.functional.linear(x, self.whole[w]).view(B, s.T, heads, dh).transpose(1, 2)
                   for w, heads in (("q", s.heads), ("k", self.kv), ("v", self.kv)))
        o = local_attention(q, k, v, causal=s.causal, window=self.window)
        return torch.nn.functional.linear(o.transpose(1, 2).reshape(B, s.T, s.d), self.whole["o"])

    def step(self, timeout: timedelta, sent: Sent, train: bool) -> torch.Tensor:
        """One call: the forward (no autograd), or forward and backward from this rank's output gradient
        (through the loss sum(y * dout): a scalar's backward, which skips torch's lazy import of sympy
        that a tensor gradient costs on the first call of each process)."""
        if not train:
            with torch.inference_mode():
                return self.forward(timeout, sent)
        for t in self.leaves():
            t.requires_grad_(True)
            t.grad = None
        y = self.forward(timeout, sent)
        (y * self.dout).sum().backward()
        return y.detach()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_calls(call: Callable[[], None], device: str, reps: int, together: bool = True) -> list:
    """Seconds of each of ``reps`` calls of ``call`` after one warm-up; ranks start each call together
    (``together`` False: this rank times alone, the others elsewhere)."""
    call()
    times = []
    for _ in range(reps):
        if together:
            dist.barrier()
        _sync(device)
        t0 = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def time_layer(layer: ParallelLayer, timeout: timedelta, reps: int, train: bool = False) -> tuple:
    """(median seconds, bytes sent by one call, every time) on this rank; ranks start each call together."""
    sent = Sent()

    def call() -> None:
        nonlocal sent
        sent = Sent()
        layer.step(timeout, sent, train)

    times = timed_calls(call, layer.device, reps)
    return statistics.median(times), sent.bytes, times


def parallel_point(variant: str, shape: Shape, layout: Layout, hw, backend: Optional[str],
                   params: Optional[dict] = None) -> Point:
    """The unmeasured point of one distributed run, with its prediction (none where ``hw`` has no links).
    A window runs as SDPA with a dense band mask here (``local_attention``): priced as that kernel."""
    if getattr(resolve_params(variant, shape, params), "window", None) is not None:
        params = dict(params or {}, kernel="masked")
    pred = predict_parallel(variant, shape, layout, hw, params) if hw is not None else None
    ok = pred is not None and pred.status == "ok"
    where = (dict(tp=layout.tp, sequence_parallel=layout.sequence_parallel) if layout.tp > 1
             else dict(cp=layout.cp, cp_kind=layout.cp_kind))
    return Point(variant=variant, params=params or {}, shape=shape, backend=backend, **where,
                 predicted_time_s=pred.time_s if ok else None,
                 predicted_bytes_sent=pred.bytes_sent if ok else None)


def point_layout(point: Point) -> Layout:
    if point.tp:
        return Layout(tp=point.tp, sequence_parallel=bool(point.sequence_parallel))
    return Layout(cp=point.cp, cp_kind=point.cp_kind)


def measure_point(rank: int, n: int, device: str, timeout: timedelta, point: Point, reps: int) -> Optional[Point]:
    """Every rank times the layer; rank 0 returns the point with each rank's time and bytes sent."""
    layer = ParallelLayer(point.variant, point.shape, point_layout(point), rank, device, point.params or None)
    median, nbytes, times = time_layer(layer, timeout, reps, train=point.shape.phase == "train")
    gathered = [None] * n
    dist.all_gather_object(gathered, (median, nbytes, times))
    if rank:
        return None
    all_times = sorted(t for _, _, ts in gathered for t in ts)
    slowest = max(m for m, _, _ in gathered)  # the layer ends when its slowest rank does
    return point.model_copy(update=dict(
        rank_times_s=[m for m, _, _ in gathered], rank_bytes_sent=[b for _, b, _ in gathered],
        timing=Timing(median_s=slowest, p10_s=all_times[len(all_times) // 10],
                      p90_s=all_times[(9 * len(all_times)) // 10], repetitions=reps)))


def run_parallel(rank: int, n: int, device: str, timeout: timedelta, path: str, probes: list, reps: int, hw,
                 command: str = ""):
    """The body of each rank of `attncost profile --cp N` / `--tp N`: every rank measures every point,
    rank 0 writes the results file (``runner``: atomic, after each point) and returns the Run."""
    from .runner import open_run, run_points

    if rank:
        for p in probes:
            measure_point(rank, n, device, timeout, p, reps)
        return None
    run = open_run(path, False, device, probes[0].shape.dtype, command=command, hardware=hw)
    return run_points(path, run, probes, lambda i: measure_point(0, n, device, timeout, probes[i], reps))


# -- calibration of the links ------------------------------------------------------------------------

def busy(seconds: float, device: str) -> None:
    """Keep this rank computing (256^3 matmuls) for about ``seconds``: what a layer does before it
    issues a collective."""
    a = torch.ones(256, 256, device=device)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ a
        _sync(device)


def compute_block(device: str, count: int) -> None:
    """A fixed amount of compute: ``count`` 256^3 matmuls."""
    a = torch.ones(256, 256, device=device)
    for _ in range(count):
        a @ a
    _sync(device)


def _collective(kind: str, nbytes: int, n: int, rank: int, device: str) -> Callable[[], list]:
    """A function that issues one ``kind`` of an ``nbytes`` buffer per rank and returns its works."""
    elems = max(n, nbytes // 4 // n * n)
    x = torch.ones(elems, device=device)
    y = torch.empty_like(x)

    def issue() -> list:
        if kind == "p2p":  # a ring shift: every rank sends and receives one message at once
            return [dist.isend(x, (rank + 1) % n), dist.irecv(y, (rank - 1) % n)]
        if kind == "all_reduce":
            return [dist.all_reduce(x, async_op=True)]
        return [dist.all_to_all_single(y, x, async_op=True)]

    return issue


def _time_collective(kind: str, nbytes: int, n: int, rank: int, device: str, timeout: timedelta,
                     reps: int) -> float:
    """Seconds of one collective issued right after ``AFTER_COMPUTE_S`` of compute, as a layer issues
    it (issued back to back, the same collective takes about half as long on gloo: its threads and
    sockets are then warm, which no layer sees): the mean of the middle 80% of ``reps`` calls. Not the
    median: on gloo the time is bimodal (about half the calls several times slower than the others),
    and a median jumps between the two modes from one calibration to the next."""
    issue = _collective(kind, nbytes, n, rank, device)
    times = []
    for _ in range(reps + 1):  # the first call warms up
        dist.barrier()
        busy(AFTER_COMPUTE_S, device)
        t0 = time.perf_counter()
        wait(issue(), timeout)
        times.append(time.perf_counter() - t0)
    return trimmed_mean(times[1:])


def trimmed_mean(values: list, cut: float = 0.1) -> float:
    """Mean of ``values`` less the lowest and highest ``cut`` share of them."""
    xs = sorted(values)
    k = int(len(xs) * cut)
    return statistics.fmean(xs[k:len(xs) - k] or xs)


def non_decreasing(points: list) -> list:
    """(bytes, seconds) points with the seconds made non-decreasing in the bytes by pooling adjacent
    violators (isotonic regression): more bytes never take less time, noise that says so is averaged."""
    blocks = []  # [sum of seconds, count]
    for _, t in sorted(points):
        blocks.append([t, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            t2, c2 = blocks.pop()
            blocks[-1][0] += t2
            blocks[-1][1] += c2
    ys = [b[0] / b[1] for b in blocks for _ in range(b[1])]
    return [(b, y) for (b, _), y in zip(sorted(points), ys)]


def measure_overlap(rank: int, n: int, device: str, timeout: timedelta, reps: int) -> float:
    """Share of a ring shift's time hidden behind compute issued after it, as ring attention does:
    (C + P - O) / min(C, P) with C a block of compute, P the shift issued right after it, and O the
    shift posted, the same compute, then its wait. C, P and O are taken together in each call (the same
    block's time moves by up to 2x between seconds on a shared host, which a difference of separate
    medians would read as overlap); the median share over ``reps`` calls, in [0, 1], the lowest rank's."""
    issue = _collective("p2p", OVERLAP_BYTES, n, rank, device)
    count = max(1, round(AFTER_COMPUTE_S / max(statistics.median(
        timed_calls(lambda: compute_block(device, 1), device, 5)), 1e-6)))
    shares = []
    for _ in range(reps + 1):  # the first call warms up
        dist.barrier()
        t0 = time.perf_counter()
        compute_block(device, count)
        t1 = time.perf_counter()
        wait(issue(), timeout)
        t2 = time.perf_counter()
        dist.barrier()
        t3 = time.perf_counter()
        works = issue()
        compute_block(device, count)
        wait(works, timeout)
        c, p, o = t1 - t0, t2 - t1, time.perf_counter() - t3
        shares.append((c + p - o) / max(min(c, p), 1e-9))
    got = [None] * n
    dist.all_gather_object(got, statistics.median(shares[1:]))
    return min(1.0, max(0.0, min(got)))


def contention_block(device: str) -> Callable[[], None]:
    """A mix of the kernels a rank runs: a 512^3 matmul (its operands beyond a core's L2, in the
    shared L3) and a causal SDPA of 2 heads x 512 tokens x 64."""
    a = torch.randn(512, 512, device=device)
    q = torch.randn(1, 2, 512, 64, device=device)

    def block() -> None:
        a @ a
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
        _sync(device)

    return block


def measure_contention(rank: int, n: int, device: str, reps: int, rounds: int = 5) -> float:
    """How much longer the slowest rank computes while all ``n`` ranks compute at once than a rank
    computing alone (the others waiting): shared caches and memory bandwidth, and the wait for the
    slowest rank that every collective of a layer makes; at least 1. The same block's time moves by up
    to 2x between seconds on a shared host, so alone and together alternate over ``rounds``: per call,
    the largest ratio over ranks; the median over every call of every round."""
    block = contention_block(device)
    ratios = []
    for _ in range(rounds):
        alone = 0.0
        for r in range(n):  # one rank at a time; the others wait at the barrier
            dist.barrier()
            if r == rank:
                alone = statistics.median(timed_calls(block, device, reps, together=False))
            dist.barrier()
        mine = [t / alone for t in timed_calls(block, device, reps)]
        got = [None] * n
        dist.all_gather_object(got, mine)
        ratios += [max(call) for call in zip(*got)]
    return max(1.0, statistics.median(ratios))


def measure_links(rank: int, n: int, device: str, timeout: timedelta, reps: int = 30) -> Optional[dict]:
    """Each collective's times (``_time_collective``, the slowest rank's), at every one of
    ``LINK_SIZES``, the overlap share (``measure_overlap``) and the compute slowdown of all ranks busy at
    once (``measure_contention``): rank 0 returns {kind: [(bytes a rank sends, seconds), ...],
    "overlap": share, "contention": factor}. On gloo the time is no straight line in the size (its TCP
    transport changes protocol with it), so the model interpolates between these points."""
    laws = {}
    for kind in ("p2p", "all_reduce", "all_to_all"):
        points = []
        for size in LINK_SIZES:
            mine = _time_collective(kind, size, n, rank, device, timeout, reps)
            got = [None] * n
            dist.all_gather_object(got, mine)
            points.append((collective_bytes(kind, n, size), max(got)))
        laws[kind] = points
    laws["overlap"] = measure_overlap(rank, n, device, timeout, reps)
    laws["contention"] = measure_contention(rank, n, device, reps // 3)
    return laws if rank == 0 else None


def alpha_beta(points: list, steps: int) -> tuple:
    """(bandwidth, latency) of the least-squares line time = steps * latency + bytes / bandwidth."""
    xs, ys = [b for b, _ in points], [t for _, t in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(sum((x - mx) ** 2 for x in xs), 1e-30)
    bw = 1 / max(slope, 1e-12)
    return bw, max(0.0, (my - mx / bw) / steps)


def interconnect_from(laws: dict, n: int, backend: str) -> Interconnect:
    """The measured points of each collective as a profile's interconnect, with the least-squares
    alpha-beta line through them (the plain link: p2p's), the overlap share and the contention."""
    links = {}
    for kind, points in laws.items():
        if kind in ("overlap", "contention"):
            continue
        points = non_decreasing(points)
        bw, lat = alpha_beta(points, collective_steps(kind, n))
        links[kind] = Link(bandwidth_Bps=max(bw, 1.0), latency_s=min(lat, 1.0), measured=points)
    p2p = links["p2p"]
    overlap, contention = laws.get("overlap", 1.0), laws.get("contention", 1.0)
    return Interconnect(name=f"{backend}, {n} processes", bandwidth_Bps=p2p.bandwidth_Bps, latency_s=p2p.latency_s,
                        source=f"measured by attncost calibrate --nproc {n} ({backend}): each collective issued "
                               f"right after {AFTER_COMPUTE_S * 1e3:g} ms of compute, as a layer issues it; "
                               f"{overlap:.0%} of a ring shift hidden behind compute issued after it; compute "
                               f"{contention:.3g}x as long with all {n} ranks busy as alone",
                        collectives=links, overlap=overlap, contention=contention)



def links_into_profile(path, n: int, device: str):
    """Measure the links between ``n`` ranks here and write them into the profile at ``path``
    (its ``interconnect``); returns the updated profile."""
    laws = spawn(measure_links, n, device=device)[0]
    hw = load_profile(path)
    hw = hw.model_copy(update={"interconnect": interconnect_from(laws, n, backend_for(device))})
    hw.save(path)
    return hw


__all__ = ["DistributedError", "ParallelLayer", "TIMEOUT", "backend_for", "free_port", "init", "interconnect_from",
           "launched", "links_into_profile", "measure_contention", "measure_links", "measure_overlap",
           "measure_point", "non_decreasing", "parallel_point", "point_layout", "run_parallel", "spawn",
           "time_layer", "timed_calls", "trimmed_mean"]
