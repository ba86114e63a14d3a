"""cli/options.py: the flags several commands share fail with one sentence naming the flag, exit 2."""

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from attncost.cli import options
from attncost.cli.main import app
from attncost.costmodel.shape import Shape
from attncost.reports import fmt


def _fails(capsys, call, *args, **kwargs) -> str:
    """The one-line message of a call that must exit 2."""
    with pytest.raises(typer.Exit) as exit_:
        call(*args, **kwargs)
    assert exit_.value.exit_code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and lines[0].endswith(".")
    return lines[0]


def test_check_choice(capsys):
    assert options.check_choice("fp32", ("bf16", "fp16", "fp32"), "--dtype") == "fp32"
    msg = _fails(capsys, options.check_choice, "fp8", ("bf16", "fp16", "fp32"), "--dtype")
    assert "--dtype must be one of 'bf16', 'fp16' or 'fp32', not 'fp8'" in msg
    msg = _fails(capsys, options.check_choice, "first", ("all", "last"), "--logits", why="the LM head")
    assert "--logits must be 'all' or 'last' (the LM head), not 'first'" in msg
    assert options.BACKEND_CHOICES[0] == options.DEVICE_CHOICES[0] == "auto"


def test_check_output(capsys, tmp_path):
    assert options.check_output(tmp_path / "new" / "r.html", "-o", "report.html") == tmp_path / "new" / "r.html"
    msg = _fails(capsys, options.check_output, tmp_path, "-o", "report.html")
    assert "is a directory" in msg and str(tmp_path / "report.html") in msg
    (tmp_path / "plain").write_text("x")
    msg = _fails(capsys, options.check_output, tmp_path / "plain" / "r.html", "--html", "fidelity.html")
    assert "--html" in msg and "is a file, not a folder" in msg


def _error(**fields) -> ValidationError:
    with pytest.raises(ValidationError) as err:
        Shape(**fields)
    return err.value


def test_flag_error_names_the_flag():
    assert options.flag_error(_error(T=16, d=0)) == "--d must be at least 1, not 0"
    assert options.flag_error(_error(T=16, d=100, heads=3)).startswith("--heads: heads must divide d")
    assert options.flag_error(_error(T=16, d=64, dtype="fp8")).startswith("--dtype: input should be 'bf16'")
    assert options.flag_error(_error(T=16, d=64, kv_heads=3), lambda f: f"--x.{f}").startswith("--x.kv_heads: ")


@pytest.mark.parametrize("load, text, words", [
    (options.load_hardware, "tpu9", "--hardware: unknown hardware 'tpu9'"),
    (options.load_hardware, "x" * 5000, "--hardware: "),
    (options.load_model, "nope", "--model: unknown model 'nope'"),
    (options.load_model, "~no-such-user-here/m.json", "--model: "),
])
def test_load_named_or_file(capsys, load, text, words):
    assert words in _fails(capsys, load, text)


def test_loaders_return_the_builtins():
    assert options.load_hardware("h100").name == "h100"
    assert options.load_model("gpt2").name == "gpt2"


def test_report_without_files_names_run_json(tmp_path):
    res = CliRunner().invoke(app, ["report", "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 2 and "RUN.json" in res.output and "Traceback" not in res.output


def test_numbers_the_cli_prints():
    assert fmt.sig(1032.4) == "1,032" and fmt.sig(0.1872) == "0.187" and fmt.sig(2.5) == "2.5"
    assert fmt.sig(float("nan")) == "nan" and fmt.sig(float("inf")) == "inf" and fmt.sig(-float("inf")) == "-inf"
    assert fmt.pct(0.08125, signed=False) == "8.1%" and fmt.pct(0.25) == "+25%"
    # float rounding, as a fit's error on rows it reproduces
    assert fmt.pct(3.4e-17, signed=False) == "0%" and fmt.pct(-3e-12) == "+0%"


# -- one number formatter; --T shorthand; CSV files ---------------------------------------------

def test_formatter_scales_and_signs_errors_alike():
    assert fmt.flops(4_505_107e9) == "4.51 PFLOP"
    assert fmt.error(0.763) == "+76%" and fmt.error(-0.8) == "−80%"
    assert fmt.measured_ms(0.0009271, stable=False) == fmt.UNSTABLE_MARK + "0.93"
    assert fmt.measured_ms(0.0009271) == "0.927"
    assert fmt.predicted_ms(0.000290, -0.8) == "0.29" and fmt.predicted_ms(0.0002904, 0.1) == "0.29"
    assert fmt.predicted_ms(0.0012345, 0.1) == "1.23" and fmt.predicted_ms(0.0012345, 0.6) == "1.2"


def test_T_shorthand_and_doubling():
    assert options.parse_T("32k,128k") == [32768, 131072]
    assert options.parse_T("1M") == [1048576]
    assert options.parse_T("1000:5000") == [1000, 2000, 4000]
    assert options.parse_T("1k:4k") == [1024, 2048, 4096]
    assert "doubling" in options.T_HELP and "k = 1024" in options.T_HELP


def test_T_shorthand_refuses_junk(capsys):
    assert "--T" in _fails(capsys, options.parse_T, "32q")


def test_write_csv_flattens_json_fields(tmp_path):
    path = tmp_path / "out.csv"
    options.write_csv(path, [{"variant": "mla", "shape": {"T": 8, "d": 64}, "Ts": [1, 2], "error": None},
                             {"variant": "flash", "shape": {"T": 16, "d": 64}, "extra": 1.5}])
    lines = path.read_text().splitlines()
    assert lines[0] == "variant,shape.T,shape.d,Ts,error,extra"
    assert lines[1] == "mla,8,64,1;2,," and lines[2] == "flash,16,64,,,1.5"


def test_json_text_is_the_document_with_a_row_per_line():
    import json
    import math

    from attncost.cli.layout import json_text

    doc = {"shape": {"T": 4, "d": [1, 2]}, "results": [{"a": 1.5, "b": None}, {"a": 2, "b": [3]}], "empty": [],
           "none": {}, "ok": True}
    text = json_text(doc)
    assert json.loads(text) == doc
    assert text.splitlines()[:2] == ["{", ' "shape": {"T": 4, "d": [1, 2]},']
    assert '  {"a": 1.5, "b": null},' in text.splitlines()
    for other in ([], {}, [{"x": 1}, 2], "s", 3):
        assert json.loads(json_text(other)) == other
    with pytest.raises(ValueError):
        json_text({"results": [math.nan]})
