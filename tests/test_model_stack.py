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
