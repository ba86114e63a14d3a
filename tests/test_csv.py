"""--csv beside --json: the same fields, flattened, one row per result, written atomically."""

import csv
import json

from typer.testing import CliRunner

from attncost.cli.main import app

runner = CliRunner()


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_predict_csv_has_the_json_fields(tmp_path):
    path = tmp_path / "layer.csv"
    args = ["predict", "--d", "1024", "--T", "1k,2k", "--variants", "flash,mla"]
    result = runner.invoke(app, args + ["--csv", str(path)])
    assert result.exit_code == 0, result.output
    doc = json.loads(runner.invoke(app, args + ["--json"]).output)
    rows = _rows(path)
    assert [(r["variant"], r["shape.T"]) for r in rows] == [(r["variant"], str(r["shape"]["T"])) for r in doc["results"]]
    assert float(rows[1]["time_s"]) == doc["results"][1]["time_s"] and "cheaper_ranges_T.flops" in rows[0]
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, renamed


def test_predict_csv_compares_profiles(tmp_path):
    path = tmp_path / "two.csv"
    result = runner.invoke(app, ["predict", "--d", "1024", "--T", "1024", "--variants", "flash",
                                 "--hardware", "h100,a100", "--csv", str(path)])
    assert result.exit_code == 0, result.output
    assert [r["hardware"] for r in _rows(path)] == ["h100", "a100"]


def test_predict_model_csv(tmp_path):
    path = tmp_path / "model.csv"
    result = runner.invoke(app, ["predict", "--model", "gpt2", "--T", "1024", "--batch", "1,8", "--csv", str(path)])
    assert result.exit_code == 0, result.output
    rows = _rows(path)
    assert len(rows) == 2 * 5 and {r["batch"] for r in rows} == {"1", "8"} and rows[0]["ttft_s"]


def test_csv_refused_with_kernels_and_on_a_folder(tmp_path):
    r = runner.invoke(app, ["predict", "--d", "1024", "--T", "1024", "--kernels", "flash", "--csv", "x.csv"])
    assert r.exit_code == 2 and "--csv" in r.output
    r = runner.invoke(app, ["predict", "--d", "1024", "--T", "1024", "--csv", str(tmp_path)])
    assert r.exit_code == 2 and "--csv" in r.output


def test_profile_has_csv():
    out = runner.invoke(app, ["profile", "--help"], env={"COLUMNS": "100"}).output
    assert "--csv" in out and "--wide" in out
