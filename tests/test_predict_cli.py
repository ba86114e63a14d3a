"""`attncost predict`, `variants`, `hardware` as a user runs them."""

import json


import pytest
from typer.testing import CliRunner

from attncost.cli.main import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_default_table_has_every_variant():
    r = run("predict", "--d", "1024", "--T", "4096")
    assert r.exit_code == 0, r.output
    from attncost.costmodel.variants import NAMES

    for name in NAMES:
        assert name in r.output
    assert "faster than" in r.output


def test_json_has_the_stable_fields():
    r = run("predict", "--d", "1024", "--T", "4096", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert {"shape", "hardware", "baseline", "results"} <= set(data)
    assert data["baseline"] == "flash"
    fields = {"variant", "params", "shape", "flops", "flops_matmul", "flops_core", "weights_bytes",
              "activation_bytes_unfused", "activation_bytes_fused", "kv_cache_bytes", "time_s", "bound",
              "crossover_T"}
    for row in data["results"]:
        assert fields <= set(row), fields - set(row)
    mha = next(r for r in data["results"] if r["variant"] == "mha")
    assert mha["flops_matmul"] == pytest.approx(103.08e9, rel=1e-4)
    lin = next(r for r in data["results"] if r["variant"] == "linformer")
    assert set(lin["crossover_T"]) == {"flops", "memory", "time"}
    assert set(lin["cheaper_ranges_T"]) == {"flops", "memory", "time"} and lin["baseline"] == "flash"
    assert "crossover_d" not in lin  # the search over d is gone: nothing read it


def test_sweep_over_T_prints_one_row_per_variant_and_T():
    r = run("predict", "--d", "512", "--heads", "8", "--T", "512:2048", "--variants", "flash,linformer", "--json")
    data = json.loads(r.output)
    assert [(x["variant"], x["shape"]["T"]) for x in data["results"]] == [
        ("flash", 512), ("linformer", 512), ("flash", 1024), ("linformer", 1024), ("flash", 2048), ("linformer", 2048)]
    r = run("predict", "--d", "512", "--heads", "8", "--T", "512,1024", "--variants", "flash,linformer")
    assert r.exit_code == 0 and "1,024" in r.output


def test_html_compares_with_the_baseline_asked_for(tmp_path):
    out = tmp_path / "p.html"
    r = run("predict", "--d", "512", "--heads", "8", "--T", "512,4096", "--variants", "flash,mha,linformer",
            "--baseline", "mha", "--html", str(out))
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "cheaper than mha from T" in page and "below the baseline (mha)" in page
    assert "cheaper than flash from T" not in page


def test_table_shows_where_the_variant_is_faster():
    r = run("predict", "--d", "1024", "--T", "1000", "--batch", "4", "--variants", "flash,gqa")
    assert r.exit_code == 0 and "from 1,105" in r.output, r.output  # not "60 to 64": a host-bound tie


def test_param_changes_the_variant():
    a = json.loads(run("predict", "--d", "1024", "--T", "4096", "--variants", "linformer", "--json").output)
    b = json.loads(run("predict", "--d", "1024", "--T", "4096", "--variants", "linformer",
                       "--param", "linformer.k=128", "--json").output)
    assert b["results"][0]["params"]["k"] == 128
    assert b["results"][0]["flops_core"] == a["results"][0]["flops_core"] / 2


def test_default_parameter_above_T_is_marked_not_fatal():
    r = run("predict", "--d", "256", "--heads", "4", "--T", "128", "--json")
    assert r.exit_code == 0
    lin = next(x for x in json.loads(r.output)["results"] if x["variant"] == "linformer")
    assert lin["status"] == "n/a" and "at most T=128" in lin["reason"]


@pytest.mark.parametrize("args, flag", [
    (["--d", "1000", "--T", "64"], "--heads"),  # 16 heads do not divide 1000
    (["--d", "1024", "--T", "64", "--kv-heads", "3"], "--kv-heads"),
    (["--d", "1024", "--T", "0"], "--T"),
    (["--d", "1024", "--T", "-5"], "--T"),
    (["--d", "1024", "--T", "abc"], "--T"),
    (["--d", "1024", "--T", "64", "--variants", "nope"], "--variants"),
    (["--d", "1024", "--T", "64", "--param", "linformer.q=3"], "--param"),
    (["--d", "1024", "--T", "64", "--param", "linformer.k=zero"], "--param"),
    (["--d", "1024", "--T", "64", "--param", "nystrom.landmarks=128"], "--param"),
    (["--d", "1024", "--T", "64", "--hardware", "tpu9"], "--hardware"),
    (["--d", "1024", "--T", "64", "--dtype", "int3"], "--dtype"),
    (["--d", "1024", "--T", "64", "--phase", "serve"], "--phase"),
])
def test_bad_input_is_one_sentence_and_exit_2(args, flag):
    r = run("predict", *args)
    assert r.exit_code == 2, r.output
    assert flag in r.output
    assert "Traceback" not in r.output
    assert len([line for line in r.output.strip().splitlines() if line.strip()]) <= 2


def test_malformed_hardware_file(tmp_path):
    bad = tmp_path / "hw.json"
    bad.write_text("{not json")
    r = run("predict", "--d", "1024", "--T", "64", "--hardware", str(bad))
    assert r.exit_code == 2 and "--hardware" in r.output and "Traceback" not in r.output


def test_variants_and_hardware_commands():
    r = run("variants", "--json")
    assert r.exit_code == 0
    names = [v["name"] for v in json.loads(r.output)]
    assert "msla" in names and "dsa" in names
    assert run("variants").exit_code == 0
    r = run("hardware", "--json")
    assert r.exit_code == 0 and "h100" in [h["name"] for h in json.loads(r.output)]


def test_version():
    from attncost import __version__

    r = run("--version")
    assert r.exit_code == 0 and r.output.strip() == f"attncost {__version__}"


def test_table_says_per_layer_baseline_kv_na_and_search_start():
    r = runner.invoke(app, ["predict", "--d", "1024", "--T", "4096", "--variants", "flash,linformer,sliding_window"],
                      env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    assert "one attention layer" in r.output and "baseline" in r.output and "KV cache /" in r.output
    lin = next(line for line in r.output.splitlines() if line.startswith("linformer"))
    assert "n/a" in lin
    assert "at d 1,024" in r.output


def test_T_sweep_gives_crossovers_once_per_variant_and_params_per_d():
    r = runner.invoke(app, ["predict", "--d", "1024,2048", "--T", "1024,4096", "--variants", "flash,mla"],
                      env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    assert r.output.count("baseline") == 2  # flash's crossover row once per d, not once per (T, d)
    assert "(d 1,024)" in r.output and "(d 2,048)" in r.output  # MLA's ranks scale with d


def test_datasheet_profiles_say_so_and_compare_side_by_side():
    r = runner.invoke(app, ["predict", "--d", "1024", "--T", "4096", "--variants", "flash", "--hardware", "h100,a100"],
                      env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    assert "a100: datasheet peaks, not calibrated" in r.output and "attncost calibrate" in r.output
    assert "h100: datasheet" not in r.output
    h = runner.invoke(app, ["hardware"], env={"COLUMNS": "100"})
    assert "TF32" in h.output and "495" in h.output and "66.9" in h.output and "datasheet" in h.output


def test_variants_speaks_to_a_user():
    r = runner.invoke(app, ["variants"], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    assert "seeds.md" not in r.output and "either;" not in r.output and "causal or not" in r.output
    assert "project K and V down to" in r.output

