"""The model's compiled programs kept on disk (``costmodel.program_store``): a later process loads
them instead of tracing again and gets exactly the Estimates of estimate(); a file it cannot read
is ignored; the store can be turned off; a folder of other sources is removed."""

import marshal
import random

import pytest

import attncost.costmodel.estimate as E
from attncost.costmodel import program_store
from attncost.costmodel.hardware import get_hardware
from attncost.costmodel.shape import Shape
from attncost.costmodel.tape import Program, choose, trace

from test_estimate_many import _assert_same, _rowwise_cpu


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The store on, in a folder of this test; a fresh process's programs (none in memory); every
    point traced (none priced one by one first)."""
    monkeypatch.setenv(program_store.ENV, str(tmp_path))
    monkeypatch.setattr(E, "_PROGRAMS", {})
    monkeypatch.setattr(program_store, "_DIRTY", {})
    monkeypatch.setattr(E, "STORED_ONE_BY_ONE", 0)
    return tmp_path


def _new_process(monkeypatch) -> None:
    """What a new process sees: the files written at exit, no programs in memory."""
    program_store.flush()
    monkeypatch.setattr(E, "_PROGRAMS", {})


def _no_tracing(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("traced, although the store holds the programs")

    monkeypatch.setattr(E, "trace", refuse)


def _shapes(phase: str, Ts) -> list:
    return [Shape(T=T, d=256, heads=4, phase=phase, batch=1 + T % 3) for T in Ts]


@pytest.mark.parametrize("name, phase, params", [("flash", "train", None), ("dsa", "prefill", None),
                                                 ("performer", "prefill", {"features": 32, "chunk": 24}),
                                                 ("sliding_window", "decode", {"window": 40})])
def test_a_later_process_loads_the_programs_and_gets_the_same_estimates(store, monkeypatch, name, phase, params):
    hw = _rowwise_cpu()
    few, many = _shapes(phase, (100, 200, 300)), _shapes(phase, range(96, 96 + 40 * 7, 7))
    first = E.estimate_many(name, few, params, hw) + E.estimate_many(name, many, params, hw)
    _new_process(monkeypatch)
    assert list(store.glob("programs-*/*.bin"))
    _no_tracing(monkeypatch)
    again = E.estimate_many(name, few, params, hw) + E.estimate_many(name, many, params, hw)
    expected = [E.estimate(name, s, params, hw) for s in few + many]
    _assert_same(first, expected)
    _assert_same(again, expected)


def test_a_few_points_are_priced_one_by_one_and_leave_nothing(store, monkeypatch):
    """Tracing and compiling cost about a hundred estimates: a process that prices a key fewer than
    STORED_ONE_BY_ONE points (``pick``'s grid) prices them one by one, as without the store."""
    monkeypatch.setattr(E, "STORED_ONE_BY_ONE", 16)
    hw = get_hardware("h100")
    shapes = _shapes("prefill", range(100, 116))
    for s in shapes:
        _assert_same(E.estimate_many("mla", [s], None, hw), [E.estimate("mla", s, None, hw)])
    program_store.flush()
    assert not list(store.rglob("*.bin"))
    (more,) = _shapes("prefill", (300,))
    _assert_same(E.estimate_many("mla", [more], None, hw), [E.estimate("mla", more, None, hw)])
    program_store.flush()
    assert len(list(store.rglob("*.bin"))) == 1


def test_a_key_an_earlier_process_traced_is_traced_at_once(store, monkeypatch):
    """Past STORED_ONE_BY_ONE points a key is traced and stored; a later process that loads it traces
    a point of a new structure at once (it will come again), not after STORED_ONE_BY_ONE more."""
    monkeypatch.setattr(E, "STORED_ONE_BY_ONE", 4)
    hw = get_hardware("h100")
    for s in _shapes("prefill", range(100, 106)):
        E.estimate_many("linformer", [s], {"k": 64}, hw)
    _new_process(monkeypatch)
    assert not E._PROGRAMS
    small = _shapes("prefill", (40,))  # T below k: does not apply, another program
    _assert_same(E.estimate_many("linformer", small, {"k": 64}, hw), [E.estimate("linformer", small[0], {"k": 64}, hw)])
    (programs,) = E._PROGRAMS.values()
    assert programs.one_by_one == 0 and len(programs.items) == 2


def test_plans_a_later_process_builds_are_saved_for_the_next(store, monkeypatch):
    """A program saved by a process that replayed it point by point has no plan for arrays; the
    process that first replays it on arrays builds the plans and saves them, and the next loads
    them (building a plan for a long program costs as much as replaying it)."""
    import importlib

    importlib.import_module("numpy")  # loaded: a batch of 40 replays on arrays (``estimate.vector_at``)

    from attncost.costmodel.tape import _Plan

    hw = get_hardware("h100")
    few, many = _shapes("prefill", (100, 200, 300)), _shapes("prefill", range(96, 96 + 40 * 7, 7))
    E.estimate_many("mla", few, None, hw)
    _new_process(monkeypatch)
    (saved,) = store.glob("programs-*/*.bin")
    assert all(data[-1] == [None, None] for data, _, _ in marshal.loads(saved.read_bytes())[1])  # no plans
    E.estimate_many("mla", many, None, hw)
    (programs,) = E._PROGRAMS.values()
    assert any(entry[0].planned == 2 for entry in programs.items)
    _new_process(monkeypatch)
    _no_tracing(monkeypatch)
    monkeypatch.setattr(_Plan, "__init__", lambda *a: (_ for _ in ()).throw(AssertionError("a plan built again")))
    _assert_same(E.estimate_many("mla", many, None, hw), [E.estimate("mla", s, None, hw) for s in many])


def test_programs_of_one_profile_are_not_loaded_for_another(store, monkeypatch):
    shapes = _shapes("prefill", (64, 128))
    E.estimate_many("mha", shapes, None, get_hardware("h100"))
    _new_process(monkeypatch)
    _assert_same(E.estimate_many("mha", shapes, None, get_hardware("a100")),
                 [E.estimate("mha", s, None, get_hardware("a100")) for s in shapes])
    program_store.flush()
    assert len(list(store.glob("programs-*/*.bin"))) == 2


def test_an_unreadable_or_foreign_file_is_ignored_and_replaced(store, monkeypatch):
    hw, shapes = get_hardware("h100"), _shapes("prefill", (64, 128, 256))
    E.estimate_many("gqa", shapes, None, hw)
    _new_process(monkeypatch)
    (path,) = store.glob("programs-*/*.bin")
    for junk in (b"", b"not marshal data", marshal.dumps(("another key", [])), marshal.dumps([1, 2])):
        path.write_bytes(junk)
        monkeypatch.setattr(E, "_PROGRAMS", {})
        _assert_same(E.estimate_many("gqa", shapes, None, hw), [E.estimate("gqa", s, None, hw) for s in shapes])
    _new_process(monkeypatch)
    assert marshal.loads(path.read_bytes())[1]  # written again, whole
    assert not list(store.glob("programs-*/.*.tmp"))


def test_a_folder_that_cannot_be_written_is_skipped(tmp_path, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(program_store.ENV, str(blocker / "store"))
    monkeypatch.setattr(E, "_PROGRAMS", {})
    monkeypatch.setattr(program_store, "_DIRTY", {})
    monkeypatch.setattr(E, "STORED_ONE_BY_ONE", 0)
    shapes = _shapes("prefill", (64, 128))
    _assert_same(E.estimate_many("mqa", shapes, None, None), [E.estimate("mqa", s) for s in shapes])
    program_store.flush()  # no error: the store only ever saves time
    assert blocker.read_text() == "not a folder"


def test_turned_off_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv(program_store.ENV, "off")
    monkeypatch.setattr(E, "_PROGRAMS", {})
    monkeypatch.setattr(program_store, "_DIRTY", {})
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    shapes = _shapes("prefill", (64, 128))
    _assert_same(E.estimate_many("mqa", shapes, None, None), [E.estimate("mqa", s) for s in shapes])
    program_store.flush()
    assert program_store.root() is None and not list(tmp_path.rglob("*"))


def test_the_default_folder_follows_xdg_and_a_new_source_removes_the_old(tmp_path, monkeypatch):
    import os

    monkeypatch.delenv(program_store.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert program_store.root() == tmp_path / "attncost"
    olds = [tmp_path / "attncost" / f"programs-{n}" for n in ("a", "b", "c")]
    for age, old in enumerate(olds):
        old.mkdir(parents=True)
        os.utime(old, (1e9 + age, 1e9 + age))  # a the least recently used
    monkeypatch.setattr(program_store, "_DIRTY", {})
    program_store.save_at_exit(program_store.file_for(("k",), "none"), ("k",), lambda: [])
    program_store.flush()
    assert sorted(p.name for p in (tmp_path / "attncost").iterdir()) == sorted(
        ["programs-b", "programs-c", f"programs-{program_store.source_hash()}"])


def test_a_program_survives_plain_data_on_both_replays():
    def f(a, b):
        return [choose(a > b, a - b, b // 3) * 1.5, 7 if a % 2 else 8, choose(a < 2 * b, "left", "right")]

    tape, out = trace(f, {"a": 10, "b": 4})
    program = tape.program(out)
    data = [program.to_data()]
    assert program.scalar((10, 4)) == [9.0, 8, "right"]
    data.append(program.to_data())
    for compiled, saved in zip((False, True), data):
        loaded = Program.from_data(marshal.loads(marshal.dumps(saved)))
        assert loaded.compiled == compiled
        rng = random.Random(3)
        points = [(2 * rng.randrange(50), rng.randrange(1, 60)) for _ in range(40)]
        assert [loaded.scalar(p) for p in points] == [program.scalar(p) for p in points]
        np = pytest.importorskip("numpy")
        lanes = tuple(np.array(c, dtype=float) for c in zip(*points))
        assert loaded.vector_hold(lanes).tolist() == program.vector_hold(lanes).tolist()
        assert _lists(loaded.vector(lanes)[1]) == _lists(program.vector(lanes)[1])
    planned = Program.from_data(marshal.loads(marshal.dumps(program.to_data())))  # its numpy plans saved too
    assert planned._plan is not None and planned._guard_plan is not None
    assert planned.vector_hold(lanes).tolist() == program.vector_hold(lanes).tolist()
    assert _lists(planned.vector(lanes)[1]) == _lists(program.vector(lanes)[1])


def _lists(values: list) -> list:
    return [x.tolist() if hasattr(x, "tolist") else x for x in values]


def test_a_constant_plain_data_cannot_hold_keeps_the_program_out_of_the_store():
    tape, out = trace(lambda a: [choose(a > 1, a, None)], {"a": 3})
    assert tape.program(out).to_data() is None
