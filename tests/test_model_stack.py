"""Whole models with random weights (profiler.model_stack) and `attncost profile --model`, on the CPU."""

import json

import pytest
import torch

from attncost.costmodel.model_params import count_params
from attncost.costmodel.model_spec import MoE, ModelConfig
from attncost.costmodel.results import Point, Run
from attncost.costmodel.shape import Shape
from attncost.profiler import model_stack, runner
from attncost.profiler.model_stack import build_stack, model_point, run_models

TINY = {"name": "tiny", "layers": 2, "d": 64, "heads": 4, "vocab": 512, "mlp_hidden": 256, "context": 128}
LLAMA = ModelConfig(name="tiny-llama", layers=2, d=64, heads=4, kv_heads=2, vocab=300, context=64, positions="rope",
                    tied_embeddings=False, norm="rmsnorm", bias=False, mlp="swiglu", mlp_hidden=128, attention="gqa")
MOE = ModelConfig(name="tiny-moe", layers=3, d=64, heads=4, vocab=300, context=64, positions="rope",
                  tied_embeddings=False, norm="rmsnorm", bias=False, mlp="swiglu", mlp_hidden=128, attention="mla",
                  moe=MoE(routed_experts=8, active_experts=2, shared_experts=1, expert_hidden=32, first_dense_layers=1),
                  attention_params={"mla": {"kv_lora_rank": 32, "q_lora_rank": 0, "rope_dim": 8}})
FAST = dict(budget_s=0.02, min_reps=2, warmup=1)


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.mark.parametrize("cfg, variant", [(ModelConfig(**TINY), None), (LLAMA, None), (LLAMA, "mqa"),
                                          (MOE, None), (MOE, "gqa"), (ModelConfig(**TINY), "performer")])
def test_decode_with_the_cache_repeats_the_prefills_last_logits(cfg, variant):
    stack = build_stack(cfg, variant, T=16, batch=2)
    ids = torch.randint(0, cfg.vocab, (2, 16))
    with torch.inference_mode():
        full = stack(ids)
    assert full.shape == (2, 16, cfg.vocab)
    stack.to_decode(ids)
    with torch.inference_mode():
        step = stack.decode(ids[:, -1:])
    assert step.shape == (2, 1, cfg.vocab)
    torch.testing.assert_close(step[:, 0], full[:, -1], atol=1e-4, rtol=1e-4)


def test_last_logits_and_random_cache():
    stack = build_stack(LLAMA, T=8, batch=3, logits="last")
    with torch.inference_mode():
        assert stack(torch.randint(0, 300, (3, 8))).shape == (3, 1, 300)
    stack.to_decode()  # random past hidden states
    with torch.inference_mode():
        assert stack.decode(torch.zeros(3, 1, dtype=torch.long)).shape == (3, 1, 300)


@pytest.mark.parametrize("cfg, variant", [(LLAMA, None), (MOE, None), (LLAMA, "mla")])
def test_the_stack_holds_the_parameters_the_cost_model_counts(cfg, variant):
    stack = build_stack(cfg, variant, T=16)
    assert sum(p.numel() for p in stack.parameters()) == count_params(cfg, variant, None, 16).total


def test_run_writes_points_that_load_back_with_measured_and_predicted_fields(tmp_path, tiny_file):
    from attncost.costmodel.hardware import get_hardware

    out = tmp_path / "run.json"
    seen = []
    run = run_models(out, str(tiny_file), ["mha", "gqa"], [16, 32], 2, "cpu", "fp32", new_tokens=2,
                     hardware=get_hardware("cpu"), measure_kwargs=FAST,
                     on_point=lambda p, i, n, skipped: seen.append((Run.load(out).points[-1].key, skipped)))
    back = Run.load(out)
    assert back == run and len(back.points) == 4
    assert [k for k, _ in seen] == [p.key for p in back.points]  # saved point by point
    for p in back.points:
        assert p.status == "ok", p.message
        assert p.model == "tiny" and p.logits == "all" and p.new_tokens == 2 and p.shape.batch == 2
        for f in ("ttft_s", "predicted_ttft_s", "decode_s_per_token", "decode_tokens_per_s",
                  "predicted_decode_s_per_token", "predicted_decode_tokens_per_s", "predicted_memory_bytes"):
            assert getattr(p, f) > 0, f
        assert p.timing.median_s == p.ttft_s and p.predicted_time_s == p.predicted_ttft_s
        assert p.decode_tokens_per_s == pytest.approx(2 / p.decode_s_per_token)
        assert p.decode_timing.p10_s <= p.decode_s_per_token <= p.decode_timing.p90_s
    # resume: nothing measured again
    again = run_models(out, str(tiny_file), ["mha", "gqa"], [16, 32], 2, "cpu", "fp32", new_tokens=2,
                       hardware=get_hardware("cpu"), resume=True, measure_kwargs=FAST,
                       fault_hook=lambda *a: pytest.fail("measured again"))
    assert again.points == back.points


def test_an_oom_is_recorded_and_the_run_goes_on(tmp_path, tiny_file, monkeypatch):
    def hook(model, variant, T):
        if T == 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(model_stack, "FAULT_HOOK", hook)
    out = tmp_path / "run.json"
    run_models(out, str(tiny_file), ["mha"], [16, 32], 1, "cpu", "fp32", new_tokens=1, measure_kwargs=FAST)
    points = Run.load(out).points
    assert [(p.shape.T, p.status) for p in points] == [(16, "oom"), (32, "ok")]
    assert "out of memory" in points[0].message and points[0].ttft_s is None
    assert points[0].predicted_ttft_s is None or points[0].predicted_ttft_s > 0


def test_a_model_too_big_for_the_device_is_not_built(monkeypatch):
    monkeypatch.setattr(runner, "free_memory", lambda device: 2 * 2**30)
    monkeypatch.setattr(model_stack, "build_stack", lambda *a, **k: pytest.fail("built anyway"))
    p = model_point("llama-3-8b", None, 128, 1, "cpu", "bf16")
    assert p.status == "oom-predicted" and "not run" in p.message and "GiB" in p.message
    assert p.predicted_memory_bytes > 15 * 2**30


def test_a_variant_that_does_not_apply_is_na(tiny_file):
    p = model_point(str(tiny_file), "linformer", 16, 1, "cpu", "fp32", params={"k": 256})
    assert p.status == "n/a" and p.message


def test_gpt2_at_T64_on_the_cpu():
    p = model_point("gpt2", None, 64, 1, "cpu", "fp32", new_tokens=1, measure_kwargs=FAST)
    assert p.status == "ok", p.message
    assert p.model == "gpt2" and p.variant == "mha" and p.shape.d == 768
    assert p.ttft_s > 0 and p.decode_tokens_per_s > 0


def test_old_points_load_and_keep_their_keys():
    old = {"variant": "mha", "params": {}, "shape": {"T": 64, "d": 64, "heads": 2}, "status": "ok"}
    p = Point.model_validate(old)
    assert p.model is None and p.ttft_s is None
    assert p.key == json.dumps(["mha", {}, Shape(T=64, d=64, heads=2).model_dump()], sort_keys=True)
    assert Point(model="gpt2", **old).key != p.key


# -- the command line ------------------------------------------------------------------------
def invoke(args):
    from typer.testing import CliRunner

    from attncost.cli.main import app

    return CliRunner().invoke(app, args)


def test_cli_profile_model(tmp_path, tiny_file):
    out = tmp_path / "m.json"
    r = invoke(["profile", "--model", str(tiny_file), "--device", "cpu", "--T", "16,32", "--variants", "mha,mqa",
                "--new-tokens", "2", "--budget", "0.02", "--out", str(out)])
    assert r.exit_code == 0, r.output
    run = Run.load(out)
    assert [(p.variant, p.shape.T) for p in run.points] == [("mha", 16), ("mqa", 16), ("mha", 32), ("mqa", 32)]
    assert all(p.status == "ok" and p.ttft_s and p.decode_s_per_token for p in run.points)
    assert "--model" in run.command and "Wrote" in r.stdout and "tiny" in r.stdout


@pytest.mark.parametrize("args, flag", [
    (["--model", "no-such-model"], "--model"),
    (["--model", "missing.json"], "--model"),
    (["--model", "gpt2", "--d", "64"], "--d"),
    (["--model", "gpt2", "--new-tokens", "0"], "--new-tokens"),
    (["--model", "gpt2", "--logits", "first"], "--logits"),
    (["--new-tokens", "4"], "--new-tokens"),
])
def test_cli_profile_model_bad_flags_exit_2_with_one_sentence(tmp_path, args, flag):
    r = invoke(["profile", "--device", "cpu", "--out", str(tmp_path / "x.json")] + args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and flag in lines[0] and lines[0].endswith(".")
    assert "Traceback" not in r.output and not (tmp_path / "x.json").exists()


# -- Hugging Face configs and precisions -----------------------------------------------------------
from attncost.costmodel.hf_config import from_hf_config  # noqa: E402
from attncost.costmodel.variants import VariantError  # noqa: E402
from attncost.profiler.model_stack import precision_unmeasurable  # noqa: E402

SMALL = {  # the architectures' features at toy sizes
    "qwen3": {"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 96, "vocab_size": 300,
              "max_position_embeddings": 64, "tie_word_embeddings": True},
    "gemma2": {"model_type": "gemma2", "hidden_size": 48, "num_hidden_layers": 4, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 96, "vocab_size": 300,
               "max_position_embeddings": 64, "sliding_window": 8},
    "gemma3": {"model_type": "gemma3_text", "hidden_size": 48, "num_hidden_layers": 6, "num_attention_heads": 4,
               "num_key_value_heads": 1, "head_dim": 16, "intermediate_size": 96, "vocab_size": 300,
               "max_position_embeddings": 64, "sliding_window": 8, "sliding_window_pattern": 3},
    "deepseek_v3": {"model_type": "deepseek_v3", "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
                    "intermediate_size": 96, "vocab_size": 300, "max_position_embeddings": 64, "kv_lora_rank": 32,
                    "q_lora_rank": 48, "qk_rope_head_dim": 8, "qk_nope_head_dim": 32, "v_head_dim": 32,
                    "n_routed_experts": 8, "num_experts_per_tok": 2, "n_shared_experts": 1,
                    "moe_intermediate_size": 32, "first_k_dense_replace": 1, "topk_method": "noaux_tc"},
    "phi3": {"model_type": "phi3", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 96, "vocab_size": 300, "max_position_embeddings": 64,
             "partial_rotary_factor": 0.75, "sliding_window": 12},
}


@pytest.mark.parametrize("family", list(SMALL))
@pytest.mark.parametrize("variant", [None, "mqa"])
def test_config_features_build_as_the_cost_model_counts_them(family, variant):
    """Head dims other than width/heads, q/k and latent norms, post-norms, GeGLU, local and global
    layers, partial RoPE, a router bias: the stack holds the parameters the cost model counts and
    its decode repeats the prefill's last logits."""
    cfg = from_hf_config(SMALL[family], family)
    stack = build_stack(cfg, variant, T=16, batch=2)
    assert sum(p.numel() for p in stack.parameters()) == count_params(cfg, variant, None, 16).total
    ids = torch.randint(0, cfg.vocab, (2, 16))
    with torch.inference_mode():
        full = stack(ids)
    stack.to_decode(ids)
    with torch.inference_mode():
        step = stack.decode(ids[:, -1:])
    torch.testing.assert_close(step[:, 0], full[:, -1], atol=1e-4, rtol=1e-4)


def test_gemma2_local_layers_get_their_window_in_the_stack():
    stack = build_stack(from_hf_config(SMALL["gemma2"], "g"), T=16)
    assert [b.attn.window for b in stack.blocks] == [8, None, 8, None]
    assert any("soft-capping is not run" in n for n in stack.notes)


def test_fp8_is_refused_where_it_cannot_run():
    why = precision_unmeasurable("fp8", None, "cpu", "fp32")
    assert "fp8 weights cannot be measured here" in why and "compute capability 8.9" in why
    assert "weight-only" in precision_unmeasurable("int4", None, "cpu", "fp32")
    assert precision_unmeasurable(None, "fp32", "cpu", "fp32") is None
    with pytest.raises(VariantError, match="fp8 KV cache cannot be measured here"):
        build_stack(LLAMA, T=8, kv_dtype="fp8")


@pytest.mark.parametrize("args, flag, words", [
    (["--model", "gpt2", "--weights-dtype", "fp8"], "--weights-dtype", "CUDA GPU of compute capability 8.9"),
    (["--model", "gpt2", "--kv-dtype", "fp8"], "--kv-dtype", "not on the CPU"),
    (["--model", "gpt2", "--weights-dtype", "int4"], "--weights-dtype", "weight-only"),
    (["--model", "gpt2", "--weights-dtype", "bf16"], "--weights-dtype", "--dtype"),
    (["--model", "gpt2", "--kv-dtype", "fp5"], "--kv-dtype", "must be one of"),
    (["--weights-dtype", "fp8"], "--weights-dtype", "only with --model"),
])
def test_cli_profile_says_what_is_not_measurable_here(tmp_path, args, flag, words):
    r = invoke(["profile", "--device", "cpu", "--out", str(tmp_path / "x.json")] + args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and flag in lines[0] and words in " ".join(r.stderr.split())
    assert not (tmp_path / "x.json").exists()


def test_cli_profile_a_config_folder(tmp_path):
    folder = tmp_path / "tiny-qwen3"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(SMALL["qwen3"]))
    out = tmp_path / "m.json"
    r = invoke(["profile", "--model", str(folder), "--device", "cpu", "--T", "16", "--new-tokens", "1",
                "--budget", "0.02", "--out", str(out)])
    assert r.exit_code == 0, r.output
    (p,) = Run.load(out).points
    assert p.status == "ok" and p.model == "tiny-qwen3" and p.shape.d == 4 * 32


fp8_gpu = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
                             reason="fp8 needs a CUDA GPU of compute capability 8.9 or later")


@fp8_gpu
def test_fp8_weights_and_cache_on_the_gpu():
    cfg = ModelConfig(**{**LLAMA.model_dump(), "d": 128, "mlp_hidden": 256, "vocab": 320})
    ids = torch.randint(0, cfg.vocab, (2, 32), device="cuda")
    ref = build_stack(cfg, T=32, batch=2, device="cuda", dtype="bf16")
    q = build_stack(cfg, T=32, batch=2, device="cuda", dtype="bf16", weights_dtype="fp8", kv_dtype="fp8")
    with torch.inference_mode():
        a, b = ref(ids), q(ids)
    assert b.dtype == torch.bfloat16 and (a - b).abs().mean() < 0.1 * a.abs().mean()
    q.to_decode(ids)
    assert all(t.dtype == torch.float8_e4m3fn for c in q.caches for t in c)
    with torch.inference_mode():
        step = q.decode(ids[:, -1:])
    assert (step[:, 0] - b[:, -1]).abs().mean() < 0.1 * b.abs().mean()
    p = model_point(cfg, None, 32, 1, "cuda", "bf16", new_tokens=1, measure_kwargs=FAST, weights_dtype="fp8")
    assert p.status == "ok", p.message
    assert p.model == "tiny-llama (weights fp8)"


def _cpu_scaled_mm() -> bool:
    try:
        a = torch.ones(16, 16).to(torch.float8_e4m3fn)
        torch._scaled_mm(a, a.t(), scale_a=torch.tensor(1.0), scale_b=torch.tensor(1.0), out_dtype=torch.float32)
    except (AttributeError, RuntimeError, NotImplementedError):  # no fp8 kernel in this CPU build
        return False
    return True


@pytest.mark.skipif(not _cpu_scaled_mm(), reason="this torch has no fp8 matmul on the CPU")
@pytest.mark.parametrize("cfg, variant", [(LLAMA, None), (MOE, "gqa")])
def test_fp8_stack_mechanics_where_torch_runs_fp8_on_the_cpu(monkeypatch, cfg, variant):
    """The fp8 path the GPU runs (Fp8Linear, fp8 experts, an fp8 cache), checked on a CPU build of
    torch that has torch._scaled_mm, the device gate lifted: same parameters, outputs within fp8's
    error, caches stored in fp8."""
    monkeypatch.setattr(model_stack, "_fp8_missing", lambda device: None)
    ids = torch.randint(0, cfg.vocab, (2, 16))
    ref = build_stack(cfg, variant, T=16, batch=2)
    q = build_stack(cfg, variant, T=16, batch=2, weights_dtype="fp8", kv_dtype="fp8")
    assert any(isinstance(m, model_stack.Fp8Linear) for m in q.modules())
    assert sum(p.numel() for p in q.parameters()) == sum(p.numel() for p in ref.parameters())
    with torch.inference_mode():
        a, b = ref(ids), q(ids)
    assert (a - b).abs().mean() < 0.05 * a.abs().mean()
    q.to_decode(ids)
    assert all(t.dtype == torch.float8_e4m3fn for c in q.caches for t in c)
    with torch.inference_mode():
        step = q.decode(ids[:, -1:])
    assert (step[:, 0] - b[:, -1]).abs().mean() < 0.05 * b.abs().mean()
    p = model_point(cfg, variant, 16, 1, "cpu", "fp32", new_tokens=1, measure_kwargs=FAST, weights_dtype="fp8",
                    kv_dtype="fp8")
    assert p.status == "ok" and p.model == f"{cfg.name} (weights fp8, KV fp8)" and "fp8 KV cache" in p.message
