"""Files a command reads and writes: two runs never share a results file, no output replaces an input
or a file of another kind, a bad output path is one sentence (exit 2) before anything is measured,
and only regular files of bounded size are read."""

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from attncost.cli import options
from attncost.cli.main import app
from attncost.costmodel.hardware import get_hardware
from attncost.costmodel.results import Environment, Point, Run, Timing
from attncost.costmodel.shape import Shape

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = ["--device", "cpu", "--variants", "flash", "--d", "32", "--heads", "2", "--T", "16", "--budget", "0.01"]
PREDICT = ["predict", "--d", "64", "--T", "64", "--variants", "flash"]
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error(result, *words) -> str:
    """The one error sentence of a command that must exit 2, holding each of ``words``."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and lines[0].endswith("."), result.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_device(monkeypatch):
    """A command that reaches the device start-up fails the test: its flags must fail first."""
    from attncost.profiler import device

    def started(*args, **kwargs):
        raise AssertionError("the device was started before --out was checked")

    monkeypatch.setattr(device, "resolve_device", started)


@pytest.fixture
def results(tmp_path) -> Path:
    """A results file of one point: its reports are quick to build."""
    path = tmp_path / "run.json"
    point = Point(variant="flash", shape=Shape(T=16, d=32, heads=2, dtype="fp32"), predicted_time_s=1e-5,
                  timing=Timing(median_s=2e-5, p10_s=1.9e-5, p90_s=2.1e-5, repetitions=9))
    Run(environment=Environment(device="cpu", device_name="test"), dtype="fp32", points=[point]).save(path)
    return path


@pytest.fixture
def rows(tmp_path) -> Path:
    path = tmp_path / "cal.microbench.json"
    shutil.copy(EXAMPLES / "cpu-calibrated.microbench.json", path)
    return path


@pytest.fixture
def fed_pipe(tmp_path):
    """A named pipe with a writer waiting, so that a reader that opens it (and should not) ends."""
    path = tmp_path / "pipe.json"
    os.mkfifo(path)

    def feed():
        try:
            with open(path, "w") as f:
                f.write("{}")
        except OSError:  # the reader went away
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    yield path
    os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))  # lets the writer go if nobody read
    writer.join(2)


# -- two runs, one results file -------------------------------------------------------------------
@pytest.mark.parametrize("flags", [["--resume"], [], ["--overwrite"]])
def test_a_second_profile_on_the_same_out_stops_at_once(tmp_path, no_device, flags):
    from filelock import FileLock

    from attncost.profiler.runner import lock_path

    out = tmp_path / "r.json"
    with FileLock(lock_path(out)):  # another run writing it
        r = invoke(["profile", *TINY, "--out", out, *flags])
    one_error(r, f"--out {out}", "another attncost run")
    assert not out.exists()


def _run_in_memory(path: Path, resume: bool = False) -> Run:
    from attncost.profiler.runner import open_run

    return open_run(path, resume, "cpu", "fp32", env=Environment(device="cpu", device_name="test"))


def _probes(n: int) -> list:
    return [Point(variant="flash", shape=Shape(T=16 * (i + 1), d=32, heads=2, dtype="fp32")) for i in range(n)]


def test_the_runner_holds_the_lock_from_open_to_the_end(tmp_path):
    from attncost.profiler.runner import RunBusy, check_free, lock_path, run_points

    path = tmp_path / "r.json"
    run = _run_in_memory(path)
    with pytest.raises(RunBusy, match="another attncost run"):
        _run_in_memory(path)
    probes = _probes(3)
    seen = []

    def measure(i):
        with pytest.raises(RunBusy):  # held while it measures
            check_free(path)
        other = []
        t = threading.Thread(target=lambda: other.append(_busy(path)))
        t.start()
        t.join()
        seen.append(other[0])
        return probes[i]

    done = run_points(path, run, probes, measure)
    assert seen == [True] * 3  # another thread is refused too
    check_free(path)  # let go at the end
    assert [p.key for p in Run.load(path).points] == [p.key for p in done.points]  # what it reports is in the file
    assert lock_path(path).name == ".r.json.lock" and lock_path(path).stat().st_size == 0
    again = run_points(path, _run_in_memory(path, resume=True), probes, measure)  # the lock file left stops nobody
    assert again.points == done.points


def _busy(path) -> bool:
    from attncost.profiler.runner import RunBusy, check_free

    try:
        check_free(path)
    except RunBusy:
        return True
    return False


def test_a_run_dropped_before_its_points_lets_the_file_go(tmp_path):
    import gc

    path = tmp_path / "r.json"
    run = _run_in_memory(path)
    assert _busy(path)
    del run
    gc.collect()
    assert not _busy(path)


def test_a_lock_held_by_another_process_stops_the_run_until_that_process_ends(tmp_path):
    from attncost.profiler.runner import RunBusy, lock_path, run_points

    path = tmp_path / "r.json"
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from filelock import FileLock; "
                               f"lock = FileLock({str(lock_path(path))!r}); lock.acquire(); print('held', flush=True); "
                               "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusy):
            _run_in_memory(path)
    finally:
        holder.kill()  # killed, it lets go all the same
        holder.wait()
    probes = _probes(1)
    run_points(path, _run_in_memory(path), probes, lambda i: probes[i])
    assert len(Run.load(path).points) == 1


# -- outputs over inputs, and over files of another kind ---------------------------------------------
def test_report_refuses_to_write_over_its_input(results):
    before = results.read_bytes()
    one_error(invoke(["report", results, "-o", results]), "-o", "also an input")
    assert results.read_bytes() == before


def test_report_replaces_its_own_reports_and_others_only_with_overwrite(tmp_path, results):
    page = tmp_path / "notes.html"
    page.write_text("<html>my notes</html>")
    one_error(invoke(["report", results, "-o", page]), "-o", "not an HTML report of attncost", "--overwrite")
    assert page.read_text() == "<html>my notes</html>"
    from attncost.reports.page import GENERATOR_TAG

    assert invoke(["report", results, "-o", page, "--overwrite"]).exit_code == 0
    assert GENERATOR_TAG in page.read_text()[:2000]
    assert invoke(["report", results, "-o", page]).exit_code == 0  # its own report: no --overwrite needed


def test_profile_resume_refuses_a_file_that_is_not_a_results_file(rows, no_device):
    before = rows.read_bytes()
    r = invoke(["profile", *TINY, "--dtype", "bf16", "--resume", "--out", rows])
    one_error(r, f"--out {rows}", "not an attncost results file")
    assert rows.read_bytes() == before


def test_profile_refuses_to_write_over_its_hardware_file(tmp_path, no_device):
    hw = tmp_path / "hw.json"
    hw.write_text(get_hardware("cpu").model_dump_json())
    one_error(invoke(["profile", *TINY, "--hardware", hw, "--out", hw, "--overwrite"]), "--out", "also an input")


def test_calibrate_refuses_to_write_over_a_results_file(tmp_path, results, no_device):
    before = results.read_bytes()
    one_error(invoke(["calibrate", "--device", "cpu", "--out", results]), "--out", "not a hardware profile")
    assert results.read_bytes() == before
    beside = tmp_path / "p.microbench.json"  # the rows file calibrate writes beside p.json
    shutil.copy(results, beside)
    one_error(invoke(["calibrate", "--device", "cpu", "--out", tmp_path / "p.json"]), "rows file",
              "not a file of calibration rows")


@needs_fifo
def test_predict_html_leaves_a_pipe_alone(tmp_path):
    pipe = tmp_path / "pipe.html"
    os.mkfifo(pipe)
    one_error(invoke([*PREDICT, "--html", pipe]), "--html", "not a regular file")
    assert pipe.is_fifo()


def test_check_output_refuses_devices_and_replaces_empty_files_and_its_own_kind(capsys, tmp_path, results):
    with pytest.raises(typer.Exit) as err:
        options.check_output("/dev/null", "--html", "report.html")
    assert err.value.exit_code == 2
    assert "not a regular file" in capsys.readouterr().err
    empty = tmp_path / "empty.html"
    empty.touch()
    assert options.check_output(empty, "--html", "r.html", kind=options.REPORT_FILE) == empty
    assert options.check_output(results, "--out", "r.json", kind=options.RESULTS_FILE, inputs=["h100", None]) == results


# -- bad output paths: one sentence, before anything is measured -------------------------------------
def _commands(results: Path) -> dict:
    return {"predict": lambda x: [*PREDICT, "--html", x],
            "report": lambda x: ["report", results, "-o", x],
            "fidelity": lambda x: ["fidelity", "--variants", "flash", "--T", "16", "--d", "32", "--heads", "2",
                                   "--html", x],
            "calibrate": lambda x: ["calibrate", "--device", "cpu", "--out", x],
            "profile": lambda x: ["profile", *TINY, "--out", x]}


def _bad_paths(tmp_path: Path) -> dict:
    (tmp_path / "folder").mkdir()
    (tmp_path / "plain").write_text("x")
    return {"a directory": (tmp_path / "folder", "is a directory"),
            "a long name": (tmp_path / ("a" * 260 + ".json"), "more than the 255"),
            "bytes that are not UTF-8": (str(tmp_path) + "/\udcff\udcfe.json", "not UTF-8"),
            "a file as a folder": (tmp_path / "plain" / "x.json", "is a file, not a folder")}


@pytest.mark.parametrize("command", ["predict", "report", "fidelity", "calibrate", "profile"])
def test_a_bad_output_path_is_one_sentence_before_the_device_starts(tmp_path, results, no_device, command):
    make = _commands(results)[command]
    for path, words in _bad_paths(tmp_path).values():
        one_error(invoke(make(path)), words)


@pytest.mark.parametrize("command", ["predict", "report", "profile"])
def test_a_read_only_folder_is_one_sentence(tmp_path, results, no_device, monkeypatch, command):
    folder = tmp_path / "ro"
    folder.mkdir()

    class ReadOnly:
        f_flag = getattr(os, "ST_RDONLY", 1)

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder else real_access(p, mode, **kw))
    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(), raising=False)
    one_error(invoke(_commands(results)[command](folder / "out.json")), "read-only file system")
    assert list(folder.iterdir()) == []


def test_a_write_that_fails_is_one_sentence(tmp_path, monkeypatch):
    import tempfile

    def refused(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    one_error(invoke([*PREDICT, "--html", tmp_path / "r.html"]), "--html", "Read-only file system")


def test_a_name_of_250_characters_is_written(tmp_path):
    page = tmp_path / ("a" * 245 + ".html")
    r = invoke([*PREDICT, "--html", page])
    assert r.exit_code == 0, r.output
    assert page.is_file() and [p.name for p in tmp_path.iterdir()] == [page.name]  # no temporary file left


def test_profile_checks_an_existing_out_before_the_device_starts(results, no_device):
    one_error(invoke(["profile", *TINY, "--out", results]), "already exists", "--resume")


# -- reading user files ------------------------------------------------------------------------------
def _big(tmp_path) -> Path:
    path = tmp_path / "big.json"
    with open(path, "wb") as f:
        f.truncate(65 * 2**20)  # sparse: no disk used
    return path


def _readers(path) -> list:
    return [[*PREDICT, "--hardware", path], ["report", path], ["report", "--fidelity", path],
            ["predict", "--model", str(path), "--T", "64"]]


@needs_fifo
def test_a_pipe_is_not_read(fed_pipe):
    for args in _readers(fed_pipe):
        one_error(invoke(args), "not a regular file")


def test_a_device_is_not_read():
    for args in _readers("/dev/null"):
        one_error(invoke(args), "not a regular file")


def test_a_file_over_the_size_cap_is_not_read(tmp_path):
    big = _big(tmp_path)
    for args in _readers(big):
        one_error(invoke(args), "64 MiB")


def test_read_text_reads_a_regular_file_and_names_what_it_refuses(tmp_path):
    from attncost.costmodel.jsonfile import read_text

    path = tmp_path / "x.json"
    path.write_text(json.dumps({"a": "é"}), encoding="utf-8")
    assert json.loads(read_text(path)) == {"a": "é"}
    with pytest.raises(IsADirectoryError):
        read_text(tmp_path)
    with pytest.raises(OSError, match="not a regular file"):
        read_text("/dev/zero")
    with pytest.raises(OSError, match="more than 64 MiB"):
        read_text(_big(tmp_path))
