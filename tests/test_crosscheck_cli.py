"""`attncost crosscheck`: exit 0 when analytic and fvcore agree, 1 when they do not, 2 on bad input."""

import json

import pytest
from typer.testing import CliRunner

from attncost.cli.main import app

runner = CliRunner()


def _err(result) -> str:
    try:
        return result.stderr or result.output
    except ValueError:  # click < 8.2 mixes stderr into output
        return result.output


def test_defaults_exit_0():
    result = runner.invoke(app, ["crosscheck"])
    assert result.exit_code == 0, result.output
    for name in ("mha", "flash", "dsa", "msla", "FlopCounterMode"):
        assert name in result.output
    assert "fvcore matmul FLOPs for every variant" in result.output


def test_json_parses():
    result = runner.invoke(app, ["crosscheck", "--variants", "flash,linformer,performer", "--T", "64,96",
                                 "--d", "64", "--param", "linformer.k=32", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] is True and data["conventions"]
    rows = data["results"]
    assert [(r["variant"], r["shape"]["T"]) for r in rows] == [
        ("flash", 64), ("linformer", 64), ("performer", 64), ("flash", 96), ("linformer", 96), ("performer", 96)]
    for r in rows:
        assert r["status"] == "ok" and r["matmul_match"] and r["total_match"]
        assert r["fvcore_matmul"] == pytest.approx(r["analytic_matmul"], rel=1e-12)
    assert rows[1]["params"]["k"] == 32


def test_decode_shows_variants_without_a_decode_path():
    result = runner.invoke(app, ["crosscheck", "--phase", "decode", "--variants", "mla,nystrom", "--T", "64",
                                 "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["variant"]: r for r in json.loads(result.output)["results"]}
    assert rows["mla"]["status"] == "ok" and rows["mla"]["matmul_match"]
    assert rows["nystrom"]["status"] == "n/a" and "no decode path" in rows["nystrom"]["reason"]


def test_by_op_table_non_causal():
    result = runner.invoke(app, ["crosscheck", "--variants", "performer,nystrom", "--T", "48", "--d", "64",
                                 "--no-causal", "--param", "nystrom.landmarks=8", "--by-op"])
    assert result.exit_code == 0, result.output
    assert "by op category" in result.output and "cumsum" not in result.output  # non-causal: no prefix sums
    assert "amax" in result.output and "conv" in result.output


@pytest.mark.parametrize("args,words", [
    (["--d", "100", "--heads", "3"], "not divisible"),
    (["--phase", "train"], "--phase"),
    (["--variants", "nope"], "unknown variant"),
    (["--param", "linformer.k=999", "--variants", "linformer"], "at most T"),
    (["--param", "linformer.zz=1"], "no parameter"),
    (["--backend", "tpu"], "--backend"),
    (["--device", "tpu"], "--device"),
])
def test_bad_input_exits_2_with_one_sentence(args, words):
    result = runner.invoke(app, ["crosscheck", *args])
    assert result.exit_code == 2, result.output
    msg = _err(result).strip()
    assert words in msg
    assert len(msg.splitlines()) == 1 and msg.endswith(".")
    assert "Traceback" not in result.output


def test_matmul_mismatch_exits_1(monkeypatch):
    from attncost.profiler import counting

    real = counting.crosscheck

    def broken(*args, **kwargs):
        r = real(*args, **kwargs)
        r.fvcore_matmul *= 1.01
        r.matmul_match = False
        return r

    monkeypatch.setattr(counting, "crosscheck", broken)
    result = runner.invoke(app, ["crosscheck", "--variants", "flash", "--T", "32", "--d", "64"])
    assert result.exit_code == 1
    assert "differ" in result.output
