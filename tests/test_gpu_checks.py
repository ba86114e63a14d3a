"""bench/gpu_checks.sh: its dry run on the CPU runs every step and writes every results file; its
exit status counts the steps that failed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from attncost.costmodel.results import Run

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu_checks.sh"
RESULTS = ["cpu-prefill-bf16.json", "cpu-decode-b2-bf16.json",
           "cpu-heldout-bf16.json", "cpu-model-tiny-gpt2-bf16.json", "cpu-model-tiny-llama-bf16.json"]
STEPS = ["calibrate", "prefill", "decode batch 2", "heldout", "model tiny-gpt2.json",
         "model tiny-llama.json", "report"] + [f"crosscheck {f}" for f in RESULTS]


def run_script(tmp_path, *args, timeout=600, **env):
    env = dict(os.environ, ATTNCOST_DRY="1", OUT=str(tmp_path / "out"), TMPDIR=str(tmp_path), OMP_NUM_THREADS="1",
               **{"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"], **env})
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.early  # half a minute of subprocesses: the other tests run beside it
def test_dry_run_writes_every_results_file(tmp_path):
    r = run_script(tmp_path)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    out = tmp_path / "out"
    for name in RESULTS:
        run = Run.load(out / name)  # copied to OUT, and a valid results file
        assert run.points, name
    assert (out / "cpu-calibrated.json").exists() and (out / "cpu-calibrated.microbench.json").exists()
    assert (out / "cpu-report.html").read_text().lstrip().lower().startswith("<!doctype html")
    summary = log[log.index(" done in "):]
    for label in STEPS:  # each step ran and passed (a crosscheck may miss its accuracy target)
        assert f"ok       {label}" in summary or f"MISSED   {label}" in summary, (label, summary)
    assert log.count("== ") >= 2 * len(STEPS)  # a time-stamped line as each step starts and ends


def test_exit_status_counts_failed_steps_and_calibration_falls_back(tmp_path):
    """With a Python whose every attncost command fails (exit 3), calibrate and prefill fail (exit
    status 2), the predictions fall back to the built-in profile, and the report, with nothing to
    report, is skipped, not counted."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    fake = bin_dir / "python3"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexit 3\n')
    fake.chmod(0o755)
    r = run_script(tmp_path, "calibrate", "prefill", "report", timeout=60,
                   PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "built-in 'cpu' profile" in r.stderr
    assert "FAILED   calibrate (exit 3)" in r.stdout and "SKIPPED  report" in r.stdout
    calibrate, prefill = calls.read_text().splitlines()
    assert calibrate.startswith("-m attncost calibrate --device cpu --quick")
    assert prefill.startswith("-m attncost profile --device cpu --dtype bf16 --hardware cpu ")


def test_unknown_step_is_refused(tmp_path):
    r = run_script(tmp_path, "benchmark", timeout=60)
    assert r.returncode == 2 and "unknown step" in r.stderr
