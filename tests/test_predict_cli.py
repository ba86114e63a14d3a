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



def test_kernels_names_one_variant():
    """--kernels refuses 'all' and unknown names without suggesting 'all'."""
    from typer.testing import CliRunner

    from attncost.cli.main import app

    for name in ("nope", "all", "flash,mla"):
        r = CliRunner().invoke(app, ["predict", "--d", "1024", "--T", "1024", "--kernels", name])
        assert r.exit_code == 2 and "--kernels" in r.output and "choose 'all'" not in r.output, r.output


def test_variants_say_their_cost_and_dsa_indexer_rule():
    """Each definition has its cost in one line; DSA's indexer head dim follows the head dim (128 at
    dh 128, as DeepSeek-V3.2), as MLA's ranks do, and `variants` says so."""
    import json

    from typer.testing import CliRunner

    from attncost.cli.main import app
    from attncost.costmodel.estimate import resolve_params
    from attncost.costmodel.shape import Shape

    rows = json.loads(CliRunner().invoke(app, ["variants", "--json"]).output)
    assert all(r["cost"].startswith("O(") for r in rows), [r["name"] for r in rows if not r["cost"]]
    text = CliRunner().invoke(app, ["variants"], env={"COLUMNS": "80"}).output
    assert "seeds.md" not in text and "either;" not in text and "index_dim = dh" in text
    assert resolve_params("dsa", Shape(T=1024, d=2048, heads=16)).index_dim == 128
    assert resolve_params("dsa", Shape(T=1024, d=1024, heads=16)).index_dim == 64
    assert resolve_params("dsa", Shape(T=1024, d=1024, heads=16), {"index_dim": 32}).index_dim == 32


def test_profiles_are_compared_side_by_side():
    """--hardware h100,a100: a row per variant, each profile's time in columns of its own, the
    figures the --json comparison gives; the ranges of T in a table with a column per profile."""
    args = ["predict", "--d", "2048", "--T", "32768", "--variants", "flash,gqa", "--hardware", "h100,a100"]
    r = runner.invoke(app, args, env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    gqa = [line for line in lines if line.startswith("gqa")]
    assert len(gqa) == 2  # the figures, then the ranges
    doc = json.loads(runner.invoke(app, args + ["--json"]).output)
    for entry in doc["compare"]:
        ms = next(e["time_s"] for e in entry["results"] if e["variant"] == "gqa") * 1e3
        from attncost.reports.fmt import sig

        assert sig(ms) in gqa[0], (entry["hardware"]["name"], gqa[0])
    assert any("h100" in line and "a100" in line and "ms" not in line for line in lines[2:5])
    assert any("h100: faster than" in line and "a100: faster than" in line for line in lines)


def test_footnotes_and_parameters_read_plainly():
    """No float tolerance in the footnote, no parameter that does not apply (gqa's window=None)."""
    r = runner.invoke(app, ["predict", "--d", "2048", "--T", "4096", "--variants", "flash,gqa,dsa"],
                      env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    assert "1e-09" not in r.output and "tie" not in r.output and "above 1 (green)" in " ".join(r.output.split())
    text = " ".join(r.output.split())  # the footnotes wrap at the console's width
    assert "None" not in text and "gqa kv_heads=4;" in text
    assert "--json also gives the ranges where FLOPs and memory are lower" in text
    sweep = runner.invoke(app, ["predict", "--d", "1024", "--T", "1024,4096", "--batch", "1,4", "--variants", "flash"],
                          env={"COLUMNS": "100"})
    assert sweep.exit_code == 0 and "· prefill · d 1,024 ·" in sweep.output, sweep.output  # no empty field


@pytest.mark.parametrize("value,words", [("all", "--baseline takes one variant, not 'all'"),
                                         ("flash,mla", "--baseline takes one variant, not 'flash,mla'"),
                                         ("nope", "--baseline: unknown variant 'nope'; choose from mha")])
def test_one_variant_flags_refuse_all_and_lists(value, words):
    r = runner.invoke(app, ["predict", "--d", "1024", "--T", "1024", "--baseline", value])
    assert r.exit_code == 2 and words in r.output and "'all' or" not in r.output, r.output
    r = runner.invoke(app, ["predict", "--d", "1024", "--T", "1024", "--variants", "nope"])
    assert r.exit_code == 2 and "choose 'all' or from" in r.output, r.output
