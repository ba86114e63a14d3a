"""Values a user's files and flags may hold that attncost must refuse in one sentence (exit 2):
non-finite and negative numbers, results files of another kind or version, sizes that cannot fit
in memory, flags that would be ignored or are empty, parameters larger than the shape allows."""

import json
import math

import pytest
from typer.testing import CliRunner

from attncost.cli.main import app
from attncost.costmodel.estimate import estimate
from attncost.costmodel.hardware import HardwareError, get_hardware
from attncost.costmodel.model_presets import get_model
from attncost.costmodel.results import Environment, Point, Run, Timing
from attncost.costmodel.shape import Shape
from attncost.reports import fmt

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def refused(res, *words):
    """Exit 2 with one sentence holding ``words``, no traceback."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "error:" in res.output, res.output
    for w in words:
        assert w in res.output, (w, res.output)


def strict_json(text: str):
    """JSON as strict parsers read it: NaN and Infinity are not JSON."""
    def no_constant(name):
        raise ValueError(f"{name} in JSON output")
    return json.loads(text, parse_constant=no_constant)


def write(path, data) -> str:
    path.write_text(json.dumps(data))  # json.dumps writes NaN, Infinity as the hostile files hold them
    return str(path)


def with_value(data: dict, where: tuple, value) -> dict:
    data = json.loads(json.dumps(data))
    node = data
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    return data


def small_run() -> Run:
    """A measured run of two points (a test fixture, not a measurement)."""
    s = Shape(T=256, d=256, heads=4)
    pts = [Point(variant=v, shape=s, predicted_time_s=t, timing=Timing(median_s=t, p10_s=t, p90_s=t, repetitions=5))
           for v, t in (("flash", 1e-3), ("mha", 2e-3))]
    return Run(environment=Environment(device="cpu"), dtype="fp32", hardware=get_hardware("cpu"), points=pts)


# -- non-finite and negative numbers --------------------------------------------------------------
H100 = get_hardware("h100").model_dump()


@pytest.mark.parametrize("where, value, words", [
    (("mem_bandwidth",), math.inf, "mem_bandwidth: input should be a finite number"),
    (("mem_bandwidth",), math.nan, "mem_bandwidth: input should be a finite number"),
    (("mem_bandwidth",), 1e-300, "mem_bandwidth: must be at least 1 per second"),
    (("mem_bytes",), math.inf, "mem_bytes: input should be a finite number"),
    (("launch_overhead_s",), math.inf, "launch_overhead_s"),
    (("kernel_latency_s",), 1e300, "kernel_latency_s: input should be less than or equal to 1"),
    (("peak_flops", "bf16"), math.inf, "peak_flops.bf16: input should be a finite number"),
    (("matmul", "bf16", "latency_s"), math.inf, "matmul.bf16.latency_s"),
    (("matmul", "bf16", "max_eff"), 1e-300, "matmul.bf16.max_eff: must be at least 1e-09"),
    (("attention", "cudnn", "dh_half"), 1e300, "attention.cudnn.dh_half"),
    (("vector_eff", "softmax"), -0.5, "vector_eff.softmax: input should be greater than 0"),
])
def test_hardware_file_numbers_are_finite_and_in_range(tmp_path, where, value, words):
    path = write(tmp_path / "hw.json", with_value(H100, where, value))
    with pytest.raises(HardwareError, match="is not a valid profile"):
        get_hardware(path)
    refused(run("predict", "--d", 1024, "--T", 4096, "--hardware", path, "--html", tmp_path / "r.html"), words)
    assert not (tmp_path / "r.html").exists()


def test_a_bad_key_is_named_as_written(tmp_path):
    """A profile's dict with a key it does not take: the key named, and brackets in the sentence kept
    as written (the error line is not read as markup)."""
    bad = dict(H100, cold_access_s_per_byte={"gemm": 1e-11})
    res = run("predict", "--d", 1024, "--T", 4096, "--hardware", write(tmp_path / "[hw].json", bad))
    refused(res, "[hw].json is not a valid profile: cold_access_s_per_byte.gemm: as a key, input should be "
                 "'matmul' or 'index'")


def test_extreme_but_valid_hardware_predicts_finite_numbers(tmp_path):
    """The slowest profile the ranges allow, at the largest shape: every number stays finite."""
    slow = dict(H100, peak_flops={d: 1.0 for d in H100["peak_flops"]}, vector_flops=1.0, mem_bandwidth=1.0,
                launch_overhead_s=1.0, kernel_latency_s=1.0, mem_efficiency=1e-9, vector_eff={}, vector_latency={},
                matmul={"bf16": dict(max_eff=1e-9, mn_half=1e12, k_half=1e12, k_step_s=1.0, latency_s=1.0,
                                     mem_eff=1e-9)},
                attention={"cudnn": dict(max_eff=1e-9, dh_half=1e12, keys_half=1e12, causal_tile=1e12,
                                         mem_eff=1e-9, latency_s=1.0)})
    path = write(tmp_path / "slow.json", slow)
    res = run("predict", "--d", 1048576, "--heads", 1, "--T", "4194304", "--batch", 1048576, "--hardware", path,
              "--variants", "mha,flash,topk", "--json")
    assert res.exit_code == 0, res.output
    data = strict_json(res.output)
    assert all(r["time_s"] is None or math.isfinite(r["time_s"]) for r in data["results"])


def test_predict_json_is_strict(tmp_path):
    res = run("predict", "--d", 4096, "--T", "16,4096", "--batch", 4, "--variants", "all", "--json")
    assert res.exit_code == 0, res.output
    strict_json(res.output)
    for value in (math.inf, math.nan):
        path = write(tmp_path / "hw.json", with_value(H100, ("mem_bandwidth",), value))
        refused(run("predict", "--d", 1024, "--T", 4096, "--hardware", path, "--json"), "mem_bandwidth")
    for command in (("variants", "--json"), ("hardware", "--json")):
        res = run(*command)
        assert res.exit_code == 0 and strict_json(res.output)


@pytest.mark.parametrize("value, words", [(math.nan, "a finite number"), (math.inf, "a finite number"),
                                          (-1, "greater than or equal to 0")])
def test_results_file_times_are_finite_and_not_negative(tmp_path, value, words):
    data = json.loads(small_run().model_dump_json())
    path = write(tmp_path / "run.json", with_value(data, ("points", 0, "timing", "median_s"), value))
    refused(run("report", path, "-o", tmp_path / "r.html"), "points.0.timing.median_s", words)
    refused(run("crosscheck", "--time", path), "--time", "points.0.timing.median_s")


def test_results_file_embedded_profile_is_finite(tmp_path):
    data = json.loads(small_run().model_dump_json())
    path = write(tmp_path / "run.json", with_value(data, ("hardware", "mem_bandwidth"), math.inf))
    refused(run("report", path, "-o", tmp_path / "r.html"), "hardware.mem_bandwidth")


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 0.0])
def test_model_file_published_counts_are_finite_and_positive(tmp_path, value):
    data = with_value(get_model("gpt2").model_dump(), ("published_params",), value)
    refused(run("predict", "--model", write(tmp_path / "m.json", data), "--T", 128), "published_params")


def test_fidelity_file_numbers_are_finite(tmp_path):
    from attncost.costmodel.fidelity_doc import FidelityFileError, load_fidelity

    point = {"variant": "flash", "label": "flash", "status": "ok", "params": {}, "T": 64, "inputs": "random",
             "causal": True, "shape": {"T": 64, "d": 64, "heads": 2}, "cosine_output": math.nan}
    path = write(tmp_path / "f.json", {"schema": "attncost-fidelity", "schema_version": 1, "points": [point]})
    with pytest.raises(FidelityFileError, match="cosine_output: input should be a finite number"):
        load_fidelity(path)


def test_fmt_writes_non_finite_numbers_without_raising():
    for x in (math.inf, -math.inf, math.nan):
        for f in (fmt.sig, fmt.flops, fmt.rate, fmt.bandwidth, fmt.nbytes, fmt.ms, fmt.count, fmt.pct, fmt.tokens,
                  fmt.ms_value):
            assert isinstance(f(x), str)
        assert fmt.log_ticks(1.0, x, str) == ([], [])
    assert fmt.count(math.inf) == "inf" and fmt.nbytes(math.inf) == "inf B"


# -- the results loader names what is wrong ------------------------------------------------------
def _variant(data, name):
    data["points"][0]["variant"] = name


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(schema_version=999), "reads version 1 files, not version 999"),
    (lambda d: _variant(d, "bogus"), "points.0: unknown variant 'bogus'"),
    (lambda d: d["points"][0].update(params={"zz": 1}), "points.0: params of flash: unknown field zz"),
    (lambda d: d["points"][1].update(variant="linformer", params={"k": "abc"}), "params of linformer: k:"),
    (lambda d: d.pop("points"), "field points is missing"),
    (lambda d: (d.pop("points"), d.update(rows=[{"op": "matmul"}])), "measurements of `attncost calibrate`"),
])
def test_results_loader_names_what_is_wrong(tmp_path, change, words):
    data = json.loads(small_run().model_dump_json())
    change(data)
    path = write(tmp_path / "run.json", data)
    refused(run("report", path, "-o", tmp_path / "r.html"), "is not an attncost results file", words)
    refused(run("crosscheck", "--time", path), words)
    with pytest.raises(ValueError, match="points|version"):  # what `profile --resume` reads with
        Run.load(path)


def test_results_loader_takes_what_profile_writes(tmp_path):
    path = tmp_path / "run.json"
    small_run().save(path)
    assert len(Run.load(path).points) == 2
    res = run("report", path, "-o", tmp_path / "r.html")
    assert res.exit_code == 0 and "(1 run, 2 points)" in res.output


# -- sizes that cannot fit ------------------------------------------------------------------------
@pytest.fixture
def free_gib(monkeypatch):
    """Pretend the machine has ``gib`` GiB free (the real amount would make a test depend on it)."""
    from attncost.profiler import fidelity

    def set_free(gib):
        monkeypatch.setattr(fidelity, "free_memory", lambda device: gib * 2**30)
    return set_free


def test_fidelity_refuses_a_size_that_cannot_fit(free_gib):
    pytest.importorskip("torch")
    free_gib(8)
    refused(run("fidelity", "--d", 1048576, "--heads", 1, "--T", 4096), "--d 1048576", "--T 4096",
            "no point fits in memory", "GiB")


def test_fidelity_records_the_points_that_cannot_fit(free_gib):
    pytest.importorskip("torch")
    free_gib(0.01)  # T = 64 fits, T = 2048 does not
    res = run("fidelity", "--variants", "mha", "--T", "64,2048", "--inputs", "random", "--json")
    assert res.exit_code == 0, res.output
    status = {p["T"]: p["status"] for p in strict_json(res.output)["points"]}
    assert status == {64: "ok", 2048: "oom-predicted"}


def test_fidelity_point_out_of_memory_is_that_points_status(monkeypatch):
    pytest.importorskip("torch")
    from attncost.profiler import fidelity

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: you tried "
                           "to allocate 17179869184 bytes.")

    monkeypatch.setattr(fidelity, "make_inputs", no_memory)
    p = fidelity.fidelity_point("mha", Shape(T=64, d=64, heads=2, dtype="fp32"), "random")
    assert p["status"] == "oom" and "not enough memory" in p["reason"] and p["cosine_output"] is None


def test_fidelity_memory_estimate_grows_with_the_inputs():
    pytest.importorskip("torch")
    from attncost.costmodel.estimate import resolve_params
    from attncost.profiler.fidelity import memory_needed

    small, big = Shape(T=256, d=256, heads=4, dtype="fp32"), Shape(T=4096, d=1048576, heads=1, dtype="fp32")
    need = {s: memory_needed("mha", s, {}, resolve_params("mha", s)) for s in (small, big)}
    assert need[small] < 2**30 < 3 * 4096 * 1048576 * 4 <= need[big]  # q, k, v alone: 48 GiB


# -- flags accepted and ignored, or meaningless -----------------------------------------------------
@pytest.mark.parametrize("budget", ["inf", "nan", "-1", "0", "1e9"])
def test_profile_budget_must_be_finite_and_positive(tmp_path, budget):
    tiny = ("--variants", "flash", "--T", 16, "--d", 16, "--heads", 1)  # quick to measure, were it measured
    refused(run("profile", "--device", "cpu", *tiny, "--budget", budget, "--out", tmp_path / "p.json"), "--budget")
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("flags, words", [
    (["--variants", "mha"], "--variants"), (["--d", "512"], "--d"), (["--T", "1024"], "--T"),
    (["--phase", "decode"], "--phase"), (["--param", "linformer.k=abc"], "--param"), (["--no-causal"], "--no-causal"),
    (["--heads", "8", "--batch", "2"], "--heads, --batch"),
])
def test_crosscheck_time_refuses_the_flags_it_would_ignore(tmp_path, flags, words):
    path = tmp_path / "run.json"
    small_run().save(path)
    refused(run("crosscheck", "--time", path, *flags), words, "cannot be combined with --time")
    assert run("crosscheck", "--time", path).exit_code in (0, 1)  # alone it checks the run


@pytest.mark.parametrize("args, words", [
    (["predict", "--d", "64", "--T", "512,,1024"], "--T '512,,1024' has an empty item"),
    (["predict", "--d", "64", "--T", "512,"], "--T '512,' has an empty item"),
    (["predict", "--d", "64,,128", "--T", "512"], "--d '64,,128' has an empty item"),
    (["predict", "--d", "64", "--T", "512", "--variants", "mha,,flash"], "--variants 'mha,,flash' has an empty item"),
    (["predict", "--d", "64", "--T", ""], "--T is empty"),
    (["crosscheck", "--variants", "mha,,flash"], "--variants 'mha,,flash' has an empty item"),
    (["fidelity", "--T", "64,,128"], "--T '64,,128' has an empty item"),
    (["fidelity", "--param", "linformer.k=16,,32"], "--param linformer.k '16,,32' has an empty item"),
    (["profile", "--device", "cpu", "--T", "128,,256"], "--T '128,,256' has an empty item"),
])
def test_empty_list_items_are_refused(args, words):
    refused(run(*args), words)


def test_counts_of_tokens_larger_than_T_are_refused_alike():
    for param in ("linformer.k=100000", "topk.k=100000", "nystrom.landmarks=100000"):
        variant, _, rest = param.partition(".")
        refused(run("predict", "--d", 256, "--T", 512, "--variants", variant, "--param", param),
                f"--param {param} must be at most T=512")
        key, _, value = rest.partition("=")
        e = estimate(variant, Shape(T=512, d=256, heads=4), {key: int(value)})
        assert e.status == "n/a" and e.reason == f"{param} must be at most T=512"
    refused(run("predict", "--d", 256, "--T", 512, "--param", "msla.k=100"),
            "msla.k=100 must be at most msla.latents=64")
    assert estimate("topk", Shape(T=512, d=256, heads=4), {"k": 512}).status == "ok"


def test_messages_say_what_the_path_is(tmp_path):
    (tmp_path / "somedir").mkdir()
    (tmp_path / "file.json").write_text("{}")
    refused(run("predict", "--d", 64, "--T", 64, "--hardware", f"{tmp_path / 'somedir'}/"), "directory")
    refused(run("predict", "--model", "", "--T", 64), "--model is empty")
    refused(run("predict", "--d", 64, "--T", 64, "--hardware", ""), "--hardware is empty")
    small_run().save(tmp_path / "run.json")
    refused(run("report", tmp_path / "run.json", "-o", tmp_path / "file.json" / "x.html"),
            "file.json is a file, not a folder")
