"""The parallel cost model (torch-free): collective formulas, layouts refused with one sentence, per-device
time, memory and the searches over T."""

import pytest

from attncost.costmodel.hardware import PCIE5, Interconnect, Link, get_hardware
from attncost.costmodel.parallel import (Layout, ParallelError, check_layout, collective_bytes, collective_s,
                                         copies_s, fits_until_T, pays_from_T, predict_parallel)
from attncost.costmodel.shape import Shape

H100 = get_hardware("h100")
BIG = Shape(T=131072, d=4096, heads=32)


@pytest.mark.parametrize("kind,factor", [("all_reduce", 2 * 3 / 4), ("reduce_scatter", 3 / 4), ("all_gather", 3 / 4),
                                         ("all_to_all", 3 / 4), ("p2p", 1.0)])
def test_collective_bytes_follow_the_ring_formulas(kind, factor):
    assert collective_bytes(kind, 4, 1000.0) == pytest.approx(factor * 1000.0)
    assert collective_bytes(kind, 1, 1000.0) == 0.0


def test_all_reduce_time_is_alpha_beta():
    hw = H100.model_copy(update={"interconnect": Interconnect(name="x", bandwidth_Bps=1e9, latency_s=1e-6)})
    assert collective_s("all_reduce", 8, 8e9, hw) == pytest.approx(14 * 1e-6 + 2 * 7 / 8 * 8)
    measured = hw.model_copy(update={"interconnect": Interconnect(
        name="x", bandwidth_Bps=1e9, latency_s=1e-6, collectives={"all_reduce": Link(bandwidth_Bps=2e9, latency_s=0)})})
    assert collective_s("all_reduce", 8, 8e9, measured) == pytest.approx(7 / 8 * 8)


def test_measured_collective_times_are_interpolated():
    points = [(1e3, 1e-3), (1e5, 1e-3), (1e6, 5e-3)]
    hw = H100.model_copy(update={"interconnect": Interconnect(
        name="x", bandwidth_Bps=1e9, latency_s=1e-6, collectives={"p2p": Link(bandwidth_Bps=1e9, latency_s=0,
                                                                             measured=points)})})
    assert collective_s("p2p", 2, 10.0, hw) == pytest.approx(1e-3)  # below the smallest size: its time
    assert collective_s("p2p", 2, 5.5e5, hw) == pytest.approx(3e-3)  # between two sizes: the line through them
    assert collective_s("p2p", 2, 2e6, hw) == pytest.approx(5e-3 + 4e-3 / 0.9)  # above: the last segment extended
    assert collective_s("all_reduce", 2, 1e6, hw) == pytest.approx(2e-6 + 1e6 / 1e9)  # unmeasured: alpha-beta


def test_builtin_interconnects_cite_their_source():
    assert H100.interconnect.bandwidth_Bps == 450e9 and "datasheet" in H100.interconnect.source
    assert get_hardware("h200").interconnect == H100.interconnect
    assert get_hardware("a100").interconnect.bandwidth_Bps == 300e9
    assert get_hardware("l4").interconnect.bandwidth_Bps == 32e9 and PCIE5.bandwidth_Bps == 64e9


@pytest.mark.parametrize("name,layout,words", [
    ("linformer", Layout(cp=4), "whole sequence"),
    ("nystrom", Layout(cp=4, cp_kind="ulysses"), "landmarks"),
    ("sliding_window", Layout(cp=4), "window"),
    ("flash", Layout(cp=3, cp_kind="ulysses"), "divide heads"),
    ("mqa", Layout(cp=4, cp_kind="ulysses"), "K/V heads"),
    ("flash", Layout(tp=2, cp=2), "together"),
])
def test_undefined_layouts_are_refused_in_one_sentence(name, layout, words):
    with pytest.raises(ParallelError, match=words):
        check_layout(name, BIG, layout)
    e = predict_parallel(name, BIG, layout, H100)
    assert e.status == "n/a" and e.reason.count(". ") == 0


def test_ulysses_has_no_decode_and_ring_needs_zigzag_chunks():
    with pytest.raises(ParallelError, match="decode"):
        check_layout("flash", BIG.with_(phase="decode"), Layout(cp=2, cp_kind="ulysses"))
    with pytest.raises(ParallelError, match="zig-zag"):
        check_layout("flash", Shape(T=4100, d=4096, heads=32), Layout(cp=4))


def test_tp_replicates_kv_heads_beyond_their_count():
    s = BIG.with_(kv_heads=4)
    e4, e8 = (predict_parallel("gqa", s, Layout(tp=n), H100) for n in (4, 8))
    assert e4.status == e8.status == "ok"
    assert e8.kv_cache_bytes == pytest.approx(e4.kv_cache_bytes)  # one K/V head per device either way
    assert e8.bytes_sent == pytest.approx(2 * 7 / 8 * BIG.T * BIG.d * 2)  # one all-reduce of the output
    sp = predict_parallel("gqa", s, Layout(tp=8, sequence_parallel=True), H100)
    assert sp.bytes_sent == pytest.approx(e8.bytes_sent)  # reduce-scatter + all-gather = all-reduce's bytes


@pytest.mark.parametrize("phase", ["prefill", "train"])
def test_ring_hides_comm_and_sends_n_minus_one_blocks(phase):
    s = BIG.with_(phase=phase)
    e = predict_parallel("flash", s, Layout(cp=8), H100)
    block = 2 * s.T // 8 * s.d * 2
    blocks = 2 + 2 if phase == "train" else 1  # train: forward K/V, backward K/V, fp32 dK/dV (twice bf16's bytes)
    assert e.bytes_sent == pytest.approx(7 * block * blocks)
    assert 0 < e.hidden_s <= e.comm_s and e.time_s == pytest.approx(e.compute_s + e.comm_s - e.hidden_s)
    one = predict_parallel("flash", s, Layout(), H100)
    assert one.time_s / 8 < e.time_s < one.time_s / 4
    assert e.memory_bytes < one.memory_bytes


def test_ulysses_sends_four_all_to_alls():
    e = predict_parallel("flash", BIG, Layout(cp=8, cp_kind="ulysses"), H100)
    assert e.bytes_sent == pytest.approx(4 * 7 / 8 * BIG.T // 8 * BIG.d * 2)
    assert e.hidden_s == 0


def test_decode_shards_the_cache():
    s = BIG.with_(phase="decode")
    e, one = predict_parallel("flash", s, Layout(cp=4), H100), predict_parallel("flash", s, Layout(), H100)
    assert e.kv_cache_bytes == pytest.approx(one.kv_cache_bytes / 4)


def test_searches_over_T():
    s = Shape(T=4096, d=4096, heads=32)
    pays = pays_from_T("flash", s, Layout(cp=8), H100)
    assert pays is not None and pays % 16 == 0
    assert predict_parallel("flash", s.with_(T=pays * 4), Layout(cp=8), H100).time_s < predict_parallel(
        "flash", s.with_(T=pays * 4), Layout(), H100).time_s
    full = fits_until_T("mha", s, H100)
    assert predict_parallel("mha", s.with_(T=full), Layout(), H100).memory_bytes > H100.mem_bytes
    assert predict_parallel("mha", s.with_(T=full // 2), Layout(), H100).memory_bytes <= H100.mem_bytes


def test_predict_cli_shows_the_per_device_table():
    from typer.testing import CliRunner

    from attncost.cli.main import app

    r = CliRunner().invoke(app, ["predict", "--d", "4096", "--heads", "32", "--T", "65536", "--variants",
                                 "flash,linformer", "--cp", "4", "--cp-kind", "ulysses"])
    assert r.exit_code == 0, r.output
    assert "comm" in r.output and "linformer under --cp-kind ulysses" in r.output
    bad = CliRunner().invoke(app, ["predict", "--d", "64", "--T", "64", "--cp", "2", "--hardware", "cpu"])
    assert bad.exit_code == 2 and "interconnect" in bad.output
    for split, words in ((["--tp", "3"], "must divide heads=16"), (["--cp", "3"], "multiple of 6")):
        for command in (["predict"], ["profile", "--device", "cpu"]):
            bad = CliRunner().invoke(app, [*command, "--d", "1024", "--heads", "16", "--T", "1000", *split])
            assert bad.exit_code == 2 and bad.output.count(words) == 1 and bad.output.count("\n") <= 2, bad.output


def test_train_ring_and_gqa_window_under_ring():
    e = predict_parallel("gqa", BIG.with_(phase="train", kv_heads=8), Layout(cp=2), H100)
    block = 2 * BIG.T // 2 * 8 * 128 * 2  # K and V of 8 heads of 128
    assert e.bytes_sent == pytest.approx(block + block + 2 * block)  # forward K/V, backward K/V, fp32 dK/dV
    with pytest.raises(ParallelError, match="window"):
        check_layout("gqa", BIG, Layout(cp=2), {"window": 512})


def test_report_section_draws_devices_and_measured_points():
    from attncost.costmodel.results import Environment, Point, Run, Timing
    from attncost.reports.data import from_runs
    from attncost.reports.parallel_figure import parallel_data, parallel_figure

    s = Shape(T=1024, d=256, heads=8, dtype="fp32")
    timing = Timing(median_s=2e-3, p10_s=1e-3, p90_s=3e-3, repetitions=3)
    points = [Point(variant="flash", shape=s, cp=2, cp_kind="ring", timing=timing, rank_times_s=[2e-3, 1.9e-3]),
              Point(variant="flash", shape=s.with_(phase="train"), cp=2, cp_kind="ring", timing=timing),
              Point(variant="flash", shape=s, timing=timing)]
    data = from_runs([Run(environment=Environment(device="cpu"), hardware=H100, points=points)])
    assert len(data.rows) == 1  # the distributed points are the parallel section's alone
    par = parallel_data(data)
    assert [(m.scheme, m.n, m.T) for m in par.measured] == [("ring", 2, 1024)]  # its shape only, not the train one
    assert [(ln.scheme, ln.n) for ln in par.lines] == [("one", 1), ("ring", 2), ("ring", 4), ("ring", 8)]
    assert all(ln.Ts for ln in par.lines) and len(parallel_figure(par).traces) == 1 + 3 * 2 + 1


def test_profile_refuses_what_it_cannot_split_before_starting_ranks():
    from typer.testing import CliRunner

    from attncost.cli.main import app

    for args, words in ((["--tp", "2", "--variants", "linformer"], "runs flash"),
                        (["--cp", "2", "--phase", "decode"], "decode"),
                        (["--sequence-parallel"], "only with --tp")):
        r = CliRunner().invoke(app, ["profile", "--device", "cpu", *args])
        assert r.exit_code == 2 and words in r.output, r.output


CPU_SHAPE = Shape(T=1024, d=256, heads=8, dtype="fp32")


def cpu_with(**figures):
    """The built-in cpu profile with a 1 GB/s, 100 us link and the given interconnect figures."""
    return get_hardware("cpu").model_copy(update={"interconnect": Interconnect(
        name="x", bandwidth_Bps=1e9, latency_s=1e-4, **figures)})


def test_ring_hides_only_the_measured_overlap_share():
    e1, half, none = (predict_parallel("flash", CPU_SHAPE, Layout(cp=2), cpu_with(overlap=x)) for x in (1.0, 0.5, 0.0))
    assert e1.comm_s == half.comm_s == none.comm_s == pytest.approx(1e-4 + 2 * 512 * 256 * 4 / 1e9)
    assert e1.hidden_s == pytest.approx(min(e1.comm_s, e1.compute_s))  # one step: the block outlasts the transfer
    assert half.hidden_s == pytest.approx(e1.hidden_s / 2) and none.hidden_s == 0
    assert none.time_s == pytest.approx(none.compute_s + none.comm_s)


@pytest.mark.parametrize("layout", [Layout(tp=2), Layout(cp=2), Layout(cp=2, cp_kind="ulysses")])
def test_contention_scales_each_ranks_compute(layout):
    one, busy = (predict_parallel("gqa", CPU_SHAPE, layout, cpu_with(contention=x)) for x in (1.0, 1.25))
    assert busy.compute_s == pytest.approx(1.25 * one.compute_s)
    assert busy.comm_s == pytest.approx(one.comm_s) and busy.bytes_sent == one.bytes_sent


def test_the_layers_own_copies_are_priced():
    hw = cpu_with()
    s = CPU_SHAPE
    assert copies_s(s, (), hw) == 0
    a, b = copies_s(s, (2**16,), hw), copies_s(s, (2**20,), hw)
    assert 0 < a < b and copies_s(s, (2**16, 2**20), hw) == pytest.approx(a + b, rel=0.05)  # a kernel each
    # tp: the all-reduced output (T x d) is cloned once, sequence parallel clones nothing
    tp, sp = (predict_parallel("flash", s, lay, hw) for lay in (Layout(tp=2), Layout(tp=2, sequence_parallel=True)))
    assert tp.compute_s - sp.compute_s == pytest.approx(copies_s(s, (s.T * s.d,), hw))
