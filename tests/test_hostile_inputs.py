"""Random flags and random JSON files, fed to every command (hypothesis): each run ends with exit
code 0 or 2 (1 only where a command documents it), never with a traceback, and every JSON it
prints is strict JSON (no NaN, no Infinity).

The files are valid documents with one part made hostile (a number made NaN, Infinity, negative
or huge, a field removed or of the wrong type) or no document at all. `profile` gets random flags
and an --out no file can be written to, so it stops at its flag checks and never measures.
"""

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from attncost.cli.main import app
from attncost.costmodel.hardware import get_hardware
from attncost.costmodel.model_presets import get_model
from attncost.costmodel.results import Environment, Point, Run, Timing
from attncost.costmodel.shape import Shape

runner = CliRunner()
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# -- hostile values ---------------------------------------------------------------------------------
NUMBERS = [math.nan, math.inf, -math.inf, -1, 0, 1e308, -1e308, 1e-300, 2**64, 0.5]
WRONG_TYPES = ["12", "abc", "", None, True, [], {}, [1, 2], {"a": 1}]
WORDS = ["", " ", ",", "abc", "all", "-1", "0", "1", "inf", "nan", "-inf", "1e309", "3.5", "0x10", "１２",
         "\u00e9t\u00e9", "../x", "*", "--T", "512,,1024", "512,", ",512", "1:0", "512:1024", "4194305",
         "99999999999999999999", "mha", "flash,gqa", "mha,,flash", "bogus", "linformer.k=abc", "topk.k=100000",
         "linformer.k=64", "gqa.kv_heads=3", "msla.k=100", "nystrom.landmarks=0", "x.y=1", "linformer.k="]
flag_value = st.one_of(st.sampled_from(WORDS), st.integers(-10, 5000).map(str),
                       st.text(alphabet="0123456789,:.-e", max_size=8))


def strict_json(text: str):
    def no_constant(name):
        raise ValueError(f"{name} in JSON output")
    return json.loads(text, parse_constant=no_constant)


def check(args: list, allowed=(0, 2)) -> None:
    """Run ``attncost args``: an allowed exit code, no traceback, and strict JSON where --json printed."""
    res = runner.invoke(app, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, repr(res.exception))
    assert res.exit_code in allowed, (args, res.exit_code, res.output)
    assert "Traceback" not in res.output, (args, res.output)
    if "--json" in args and "--help" not in args and res.exit_code in (0, 1) and res.stdout.strip():
        strict_json(res.stdout)


# -- hostile files ----------------------------------------------------------------------------------
def _leaves(doc, path=()):
    """Paths to every value of a JSON document, containers included."""
    yield path
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        yield from _leaves(v, path + (k,))


def _mutated(doc, path, action, value):
    doc = json.loads(json.dumps(doc))
    if not path:
        return value
    node = doc
    for k in path[:-1]:
        node = node[k]
    if action == "delete":
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def hostile(doc) -> st.SearchStrategy:
    """``doc`` with one value (or the whole document) replaced by a hostile one, or removed; most
    often a number made non-finite, negative, tiny or huge."""
    paths = list(_leaves(doc))
    numbers = [p for p in paths if p and _at(doc, p) is not True and isinstance(_at(doc, p), (int, float))]
    a_number = st.builds(_mutated, st.just(doc), st.sampled_from(numbers), st.just("set"), st.sampled_from(NUMBERS))
    anything = st.builds(_mutated, st.just(doc), st.sampled_from(paths), st.sampled_from(["set", "delete"]),
                         st.sampled_from(NUMBERS + WRONG_TYPES))
    return st.one_of(a_number, a_number, anything)


def _at(doc, path):
    for k in path:
        doc = doc[k]
    return doc


def small_run() -> dict:
    s = Shape(T=256, d=256, heads=4)
    pts = [Point(variant=v, params=p, shape=s, predicted_time_s=t,
                 timing=Timing(median_s=t, p10_s=t, p90_s=t, repetitions=5))
           for v, p, t in (("flash", {}, 1e-3), ("mha", {}, 2e-3), ("linformer", {"k": 64}, 1.5e-3))]
    return json.loads(Run(environment=Environment(device="cpu"), dtype="fp32", hardware=get_hardware("cpu"),
                          points=pts).model_dump_json())


FIDELITY = {"schema": "attncost-fidelity", "schema_version": 1, "settings": {"d": 64, "heads": 2},
            "points": [{"variant": "flash", "label": "flash", "kind": "reference", "status": "ok", "params": {},
                        "T": 64, "inputs": "random", "causal": True, "shape": {"T": 64, "d": 64, "heads": 2},
                        "cosine_output": 1.0, "rel_error_output": 0.0}]}
HARDWARE = get_hardware("cpu").model_dump()
MODEL = get_model("gpt2").model_dump()
RUN = small_run()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The folder of this module's files (the same for every example: each writes over the last)."""
    return tmp_path_factory.mktemp("hostile")


def write(work: Path, name: str, doc) -> str:
    path = work / name
    path.write_text(json.dumps(doc))  # NaN and Infinity as a hostile file writes them
    return str(path)


# -- commands ---------------------------------------------------------------------------------------
def value(valid: list, bad: list) -> st.SearchStrategy:
    """A flag's value: three times in four a valid one, else a hostile one."""
    good = st.sampled_from(valid)
    return st.one_of(good, good, good, st.one_of(st.sampled_from(bad), flag_value))


PREDICT_FLAGS = {"--d": value(["64", "256", "1024,2048", "1048576"], ["0", "65", "abc", "64,,128", "1048577"]),
                 "--T": value(["16", "512", "4096", "512,2048", "16:64", "4194304"],
                              ["0", "4194305", "512,,1024", ":", "abc"]),
                 "--heads": value(["1", "4", "16"], ["0", "3", "-1"]), "--kv-heads": value(["1", "2"], ["0", "3"]),
                 "--batch": value(["1", "8", "1048576"], ["0", "1048577", "-2"]),
                 "--dtype": value(["bf16", "fp32"], ["fp8", ""]),
                 "--phase": value(["prefill", "decode", "train"], ["x", ""]),
                 "--variants": value(["all", "mha,flash", "linformer,topk", "dsa,msla"], ["", "mha,,flash", "bogus"]),
                 "--param": value(["linformer.k=64", "gqa.kv_heads=2", "topk.k=8"], WORDS[-9:]),
                 "--baseline": value(["flash", "mha"], ["x", ""]),
                 "--hardware": value(["HARDWARE", "h100"], ["nope", ""])}


def flags_of(table: dict) -> st.SearchStrategy:
    """Up to five of the flags of ``table``, each with a value from its strategy."""
    keys = st.sets(st.sampled_from(sorted(table)), max_size=5)
    return keys.flatmap(lambda ks: st.fixed_dictionaries({k: table[k] for k in sorted(ks)}))


def as_args(flags: dict, hardware_file: str) -> list:
    args = []
    for k, v in flags.items():
        args += [k, hardware_file if v == "HARDWARE" else v]
    return args


@settings(max_examples=40, **SETTINGS)
@given(flags=flags_of(PREDICT_FLAGS), as_json=st.booleans(), extra=st.sampled_from(
    [[], [], [], ["--no-causal"], ["--bogus"], ["--logits", "last"], ["--T"]]))
def test_predict_flags(work, flags, as_json, extra):
    flags.setdefault("--T", "512")
    flags.setdefault("--d", "256")
    flags.setdefault("--variants", "mha,flash,linformer")
    check(["predict", *as_args(flags, write(work, "hw.json", HARDWARE)), *(["--json"] if as_json else []), *extra])


@settings(max_examples=40, **SETTINGS)
@given(hw=hostile(HARDWARE), shape=st.sampled_from([["--d", "256", "--T", "512"], ["--d", "4096", "--T", "16,65536"],
                                                    ["--d", "1048576", "--heads", "1", "--T", "4194304", "--batch",
                                                     "1048576"], ["--d", "1024", "--T", "4096", "--phase", "decode"]]))
def test_predict_hardware_files(work, hw, shape):
    check(["predict", *shape, "--variants", "mha,flash,gqa,linformer,topk", "--hardware", write(work, "hw.json", hw),
           "--json"])


@settings(max_examples=15, **SETTINGS)
@given(model=st.one_of(hostile(MODEL), st.sampled_from(["gpt2", "", "nope", "llama-3-8b"])),
       T=st.sampled_from(["128", "128,1024", "0", "abc", "128,,256"]), batch=st.sampled_from(["1", "0", "-3", "8"]),
       variants=st.sampled_from([None, "mha,gqa", "bogus", ""]), as_json=st.booleans())
def test_predict_model(work, model, T, batch, variants, as_json):
    name = model if isinstance(model, str) else write(work, "model.json", model)
    args = ["predict", "--model", name, "--T", T, "--batch", batch, *(["--variants", variants] if variants is not None
                                                                      else [])]
    check(args + (["--json"] if as_json else []))


@settings(max_examples=5, **SETTINGS)
@given(command=st.sampled_from(["variants", "hardware"]), extra=st.sampled_from([[], ["--json"], ["x"], ["--T", "1"]]))
def test_listings(command, extra):
    check([command, *extra])


@settings(max_examples=60, **SETTINGS)
@given(run=hostile(RUN), extra=st.sampled_from([[], [], ["--json"], ["--json"], ["--variants", "mha"], ["--d", "64"],
                                                ["--T", "512"], ["--phase", "decode"], ["--param", "linformer.k=abc"]]))
def test_crosscheck_time(work, run, extra):
    check(["crosscheck", "--time", write(work, "run.json", run), *extra], allowed=(0, 1, 2))  # 1: error above target


@settings(max_examples=20, **SETTINGS)
@given(run=hostile(RUN), fidelity=st.one_of(st.none(), hostile(FIDELITY)),
       hw=st.sampled_from([None, "cpu", "nope", "HARDWARE"]), hw_doc=hostile(HARDWARE))
def test_report(work, run, fidelity, hw, hw_doc):
    args = ["report", write(work, "r.json", run), "-o", str(work / "report.html")]
    if fidelity is not None:
        args += ["--fidelity", write(work, "f.json", fidelity)]
    if hw is not None:
        args += ["--hardware", write(work, "rhw.json", hw_doc) if hw == "HARDWARE" else hw]
    check(args)


PROFILE_FLAGS = {**{k: PREDICT_FLAGS[k] for k in ("--d", "--T", "--heads", "--batch", "--dtype", "--phase",
                                                   "--variants", "--param", "--hardware")},
                 "--budget": st.sampled_from(["inf", "nan", "-1", "0", "1e9", "0.01", "abc"]),
                 "--backend": st.sampled_from(["auto", "math", "flash", "x"]),
                 "--device": st.sampled_from(["cpu", "auto", "tpu", ""]),
                 "--model": st.sampled_from(["gpt2", "nope", ""])}


@settings(max_examples=25, **SETTINGS)
@given(flags=flags_of(PROFILE_FLAGS), hw=hostile(HARDWARE))
def test_profile_flags(work, flags, hw):
    blocker = work / "a-file"
    blocker.write_text("x")
    # --out under a regular file: no results file can be written, so profile stops before measuring
    check(["profile", *as_args(flags, write(work, "phw.json", hw)), "--out", str(blocker / "out.json")], allowed=(2,))


COMMANDS = [["predict"], ["predict", "--json"], ["variants"], ["hardware", "--json"], ["crosscheck", "--time", "RUN"],
            ["profile", "--out", "BLOCKED"]]
TOKENS = WORDS + ["--d", "--T", "--heads", "--batch", "--variants", "--param", "--hardware", "--model", "--json",
                  "--phase", "--no-causal", "--budget", "--device", "--html", "-o", "--help"]


@settings(max_examples=30, **SETTINGS)
@given(command=st.sampled_from(COMMANDS), tokens=st.lists(st.one_of(st.sampled_from(TOKENS), flag_value), max_size=6))
def test_random_argv(work, command, tokens):
    """Any string of tokens after a command: a usage error or a sentence, never a traceback."""
    blocker = work / "a-file"
    blocker.write_text("x")
    tokens = [t for t in tokens if t not in ("--html", "-o")]  # no output file outside ``work``
    run = write(work, "argv-run.json", RUN)
    args = [{"RUN": run, "BLOCKED": str(blocker / "out.json")}.get(a, a) for a in command]
    if command[0] == "profile":  # the blocked --out goes last, where nothing overrides it
        check(["profile", *tokens, *args[1:]], allowed=(0, 2) if "--help" in tokens else (2,))
    else:
        check([*args, *tokens], allowed=(0, 1, 2) if command[0] == "crosscheck" else (0, 2))


def test_hostile_files_exist():
    """The strategies above do produce documents with NaN and Infinity (a guard for the generator)."""
    text = json.dumps(_mutated(HARDWARE, ("mem_bandwidth",), "set", math.nan))
    assert "NaN" in text
    with pytest.raises(ValueError):
        strict_json(text)
