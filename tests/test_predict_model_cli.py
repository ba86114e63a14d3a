"""`attncost predict --model …` as a user runs it."""

import json

import pytest
from typer.testing import CliRunner

from attncost.cli.main import app

runner = CliRunner()

FIELDS = {"model", "variant", "params", "T", "batch", "dtype", "status", "param_count", "param_count_active",
          "weights_bytes", "kv_cache_bytes", "kv_cache_bytes_per_token", "flops_total", "flops_attention_core",
          "flops_attention_proj", "flops_mlp", "flops_norms", "flops_embed", "flops_lm_head", "shares",
          "ttft_s", "prefill_tokens_per_s", "bound", "decode_step_s", "decode_tokens_per_s", "decode_bound",
          "decode_bytes_min", "decode_tokens_per_s_roofline", "memory_bytes", "fits", "max_T_fitting",
          "max_batch_fitting", "per_layer", "time_prefill_s", "context"}


def run(*args):
    return runner.invoke(app, list(args))


def test_gpt2_table_shows_the_native_variant_and_alternatives():
    r = run("predict", "--model", "gpt2", "--T", "1024")
    assert r.exit_code == 0, r.output
    for word in ("gpt2", "mha", "flash", "gqa", "mqa", "mla", "TTFT", "attention core", "MLP", "LM head"):
        assert word in r.output


def test_json_has_the_stable_fields_and_seed5_answer():
    r = run("predict", "--model", "gpt2", "--T", "1024", "--variants", "mha,mla,gqa", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["model"]["name"] == "gpt2" and data["hardware"]["name"] == "h100"
    rows = {x["variant"]: x for x in data["results"]}
    assert list(rows) == ["mha", "mla", "gqa"]
    for x in rows.values():
        assert FIELDS <= set(x), FIELDS - set(x)
        assert x["status"] == "ok" and x["T"] == 1024 and x["batch"] == 1
        assert set(x["shares"]) == {"flops", "time"}
        parts = sum(x["flops_" + c] for c in ("attention_core", "attention_proj", "mlp", "norms", "embed", "lm_head"))
        assert parts == pytest.approx(x["flops_total"])
    assert rows["mha"]["param_count"] == 124_439_808
    assert rows["mha"]["shares"]["flops"]["attention_core"] < 0.15  # seed #5: attention is a small share
    assert rows["mla"]["kv_cache_bytes"] < rows["mha"]["kv_cache_bytes"] / 5  # MLA: the KV cache


def test_default_variants_start_with_the_native_one_and_T_lists_give_rows_per_T():
    r = run("predict", "--model", "llama-3-8b", "--T", "1024,8192", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["results"]
    assert [(x["T"], x["variant"]) for x in rows] == [(t, v) for t in (1024, 8192)
                                                      for v in ("gqa", "flash", "mqa", "mla")]
    assert rows[0]["param_count"] == 8_030_261_248


def test_variants_all_marks_what_does_not_apply():
    r = run("predict", "--model", "gpt2", "--T", "128", "--variants", "all", "--json")
    assert r.exit_code == 0, r.output
    rows = {x["variant"]: x for x in json.loads(r.output)["results"]}
    assert rows["linformer"]["status"] == "n/a"  # k=256 > T
    assert rows["nystrom"]["decode_tokens_per_s"] is None and rows["nystrom"]["decode_reason"]
    r = run("predict", "--model", "gpt2", "--T", "128", "--variants", "all")
    assert r.exit_code == 0 and "n/a" in r.output


def test_params_and_batch_reach_the_model():
    r = run("predict", "--model", "gpt2", "--T", "1024", "--variants", "gqa", "--param", "gqa.kv_heads=2",
            "--batch", "4", "--hardware", "a100", "--json")
    assert r.exit_code == 0, r.output
    x = json.loads(r.output)["results"][0]
    assert x["params"] == {"kv_heads": 2, "window": None, "kernel": None} and x["batch"] == 4 and x["hardware"] == "a100"
    assert x["kv_cache_bytes"] == 12 * 2 * 2 * 64 * 1024 * 4 * 2


def test_custom_model_file(tmp_path):
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps({"name": "tiny", "layers": 2, "d": 64, "heads": 4, "vocab": 100, "mlp_hidden": 256}))
    r = run("predict", "--model", str(p), "--T", "256")
    assert r.exit_code == 0, r.output
    assert "tiny" in r.output


@pytest.mark.parametrize("args,message", [
    (["--model", "gpt5", "--T", "1024"], "unknown model 'gpt5'"),
    (["--model", "gpt2", "--d", "768", "--T", "1024"], "--d cannot be combined with --model"),
    (["--model", "gpt2", "--heads", "8", "--T", "1024"], "--heads cannot be combined"),
    (["--model", "gpt2", "--phase", "decode", "--T", "1024"], "--phase cannot be combined"),
    (["--model", "gpt2", "--html", "x.html", "--T", "1024", "--hardware", "h100,a100"], "--html takes one --hardware"),
    (["--model", "gpt2", "--T", "1024", "--dtype", "fp8"], "--dtype must be one of"),
    (["--model", "gpt2", "--T", "1024", "--variants", "foo"], "unknown variant 'foo'"),
    (["--model", "gpt2", "--T", "1024", "--param", "gqa.kv_heads=5"], "must divide heads=12"),
    (["--model", "gpt2", "--T", "1024", "--batch", "0"], "--batch"),
    (["--model", "gpt2", "--T", "abc"], "--T must be"),
    (["--T", "1024"], "--d is required unless --model is given"),
    (["--d", "64", "--T", "8", "--logits", "last"], "--logits applies only with --model"),
    (["--model", "gpt2", "--T", "1024", "--logits", "first"], "--logits must be 'all' or 'last'"),
])
def test_bad_input_is_one_sentence_and_exit_2(args, message):
    r = run("predict", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("content,message", [
    ("{not json", "invalid JSON"),
    ('{"name": "x", "layers": 2}', "is missing"),
    ('{"name": "x", "layers": 2, "d": 64, "heads": 4, "vocab": 10, "mlp_hidden": 8, "moe": '
     '{"routed_experts": 4, "active_experts": 8, "expert_hidden": 8}}', "active_experts=8 exceeds"),
])
def test_malformed_model_file_exit_2(tmp_path, content, message):
    p = tmp_path / "m.json"
    p.write_text(content)
    r = run("predict", "--model", str(p), "--T", "1024")
    assert r.exit_code == 2, r.output
    assert message in r.output and "error:" in r.output


def test_the_layer_view_is_unchanged_without_model():
    r = run("predict", "--d", "1024", "--T", "4096", "--variants", "mha,flash", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["shape"]["heads"] == 16 and data["shape"]["phase"] == "prefill"
    assert [x["variant"] for x in data["results"]] == ["mha", "flash"]


def test_last_token_logits():
    r = run("predict", "--model", "gpt2", "--T", "1024", "--variants", "mha", "--logits", "last", "--json")
    assert r.exit_code == 0, r.output
    x = json.loads(r.output)["results"][0]
    assert x["logits"] == "last" and x["flops_lm_head"] == 2 * 768 * 50257


# -- Hugging Face config.json files and precisions -------------------------------------------------
CONFIGS = __import__("pathlib").Path(__file__).parent / "data" / "configs"


def test_gemma2_config_shows_two_attention_kinds_with_their_windows_and_costs():
    gemma = str(CONFIGS / "gemma-2-9b.json")
    r = run("predict", "--model", gemma, "--T", "8192", "--variants", "gqa")
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "by kind of layer" in out and "head dim 256" in out
    kinds = out[out.index("by kind of layer"):]  # a table, or blocks in a narrow terminal
    local, full = kinds.index("sliding_attention"), kinds.index("full_attention")
    assert local < kinds.index("4,096") < kinds.index("32 MiB") < full < kinds.index("64 MiB")
    assert "do not change the cost" in out and "soft-capped" in out
    r = run("predict", "--model", gemma, "--T", "8192", "--variants", "gqa", "--json")
    local, full = json.loads(r.output)["results"][0]["per_layer"]
    assert (local["attention"], local["window"], full["attention"], full["window"]) == (
        "sliding_attention", 4096, "full_attention", None)
    assert local["time_s"]["attention_core"] < full["time_s"]["attention_core"]
    assert local["kv_cache_bytes"] * 2 == full["kv_cache_bytes"]


def test_a_folder_holding_config_json_is_a_model():
    r = run("predict", "--model", str(CONFIGS / "Meta-Llama-3-8B"), "--T", "1024", "--variants", "gqa", "--json")
    assert r.exit_code == 0, r.output
    x = json.loads(r.output)["results"][0]
    assert x["model"] == "Meta-Llama-3-8B" and x["param_count"] == 8_030_261_248
    assert x["kv_cache_bytes_per_token"] == 131_072 and (x["weights_dtype"], x["kv_dtype"]) == ("bf16", "bf16")


def test_weights_and_kv_dtypes_reach_the_model():
    r = run("predict", "--model", "llama-3-8b", "--T", "1024", "--variants", "gqa", "--weights-dtype", "int4",
            "--kv-dtype", "fp8", "--hardware", "l4", "--json")
    assert r.exit_code == 0, r.output
    x = json.loads(r.output)["results"][0]
    assert (x["weights_dtype"], x["kv_dtype"]) == ("int4", "fp8")
    assert x["kv_cache_bytes_per_token"] == 65_536 and x["weights_bytes"] < 6 * 2**30
    r = run("predict", "--model", "llama-3-8b", "--T", "1024", "--weights-dtype", "fp8")
    assert r.exit_code == 0 and "weights fp8" in r.output and "fp8 tensor peak" in " ".join(r.output.split())


@pytest.mark.parametrize("args, message", [
    (["--model", "llama-3-8b", "--weights-dtype", "fp8", "--hardware", "a100"],
     "--weights-dtype fp8: fp8 weights cannot run on a100"),
    (["--model", "llama-3-8b", "--kv-dtype", "fp8", "--hardware", "a100"], "--kv-dtype fp8: an fp8 KV cache cannot"),
    (["--model", "llama-3-8b", "--weights-dtype", "fp4"], "--weights-dtype must be one of"),
    (["--model", "llama-3-8b", "--kv-dtype", "int4"], "--kv-dtype must be one of"),
    (["--d", "64", "--kv-dtype", "fp8"], "--weights-dtype and --kv-dtype apply only with --model"),
])
def test_bad_precisions_are_one_sentence_and_exit_2(args, message):
    r = run("predict", "--T", "1024", *args)
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split()) and "Traceback" not in r.output


@pytest.mark.parametrize("content, message", [
    ({"model_type": "bert", "hidden_size": 768}, "model_type 'bert' is not one attncost knows"),
    ({"model_type": "qwen2", "hidden_size": 64}, "qwen2 config: field num_hidden_layers is missing"),
    ({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 0}, "n_positions: input"),
])
def test_bad_and_unsupported_configs_exit_2(tmp_path, content, message):
    (tmp_path / "config.json").write_text(json.dumps(content))
    r = run("predict", "--model", str(tmp_path), "--T", "64")
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert message in " ".join(r.output.split()) and lines[0].startswith("error:") and "Traceback" not in r.output


def test_a_run_that_does_not_fit_says_so_in_its_row_and_batch_sweeps():
    r = runner.invoke(app, ["predict", "--model", "llama-3-8b", "--T", "8192", "--batch", "1,32", "--variants", "gqa"],
                      env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if " gqa " in line and " 8,192 " in line and "GiB" in line]
    assert len(rows) == 2, r.output
    assert "NO" in rows[1] and "(" in rows[1] and "NO" not in rows[0]
    assert "tok/s per" in r.output and "for the whole batch" in r.output
    assert "not achievable" in r.output


def test_model_html_report(tmp_path):
    """--model with --html writes the model's page: its table and where the time goes."""
    from typer.testing import CliRunner

    from attncost.cli.main import app

    out = tmp_path / "gpt2.html"
    r = CliRunner().invoke(app, ["predict", "--model", "gpt2", "--T", "1024", "--html", str(out),
                                 "--plotly-js", "shared"])
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert "gpt2 on h100" in page and "Where the prefill time goes" in page and "attention core" in page
    assert (tmp_path / "plotly.min.js").exists()


def test_components_scale_their_flops_and_a_datasheet_profile_says_so():
    """A whole model's FLOPs read as 4.51 PFLOP, not 4,505,107 GFLOP; a profile not fitted to
    measurements says so, on the screen and on the --html page."""
    r = runner.invoke(app, ["predict", "--model", "llama-3-8b", "--T", "8192", "--batch", "32", "--variants", "gqa",
                            "--hardware", "a100"], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    total = next(line for line in r.output.splitlines() if line.startswith("total "))
    assert "4.51 PFLOP" in total and "4,505,107" not in r.output
    assert "a100: datasheet peaks, not calibrated" in " ".join(r.output.split())
    from attncost.costmodel.hardware import get_hardware
    from attncost.costmodel.model_cost import predict_model
    from attncost.costmodel.model_presets import get_model
    from attncost.reports.page import build_model_html

    cfg = get_model("gpt2")
    for name, says in (("a100", True), ("h100", False)):
        hw = get_hardware(name)
        result = predict_model(cfg, T=1024, batch=1, dtype="bf16", variant="flash", hardware=hw)
        page = build_model_html(cfg, [result], hw, {"attention_core": "attention core"}, plotly_js="shared")
        assert ("datasheet peaks, not calibrated" in page) is says, name
