"""Shared test fixtures, and how the suite is spread over the cores.

pyproject's ``-n auto --dist loadgroup`` (pytest-xdist) runs the whole suite in a worker per core:
the tests of one ``xdist_group`` in one worker, larger groups first, then the other tests, those
marked ``early`` first, so that the rest of the suite runs beside them.
"""

import gc
import os

import pytest

MAX_WORKERS = 4  # each worker imports torch and collects the whole suite; more gain little

# One OpenMP thread per test process (torch reads it when first imported, after this file): the
# tests' CPU kernels are tiny, and with a worker per core more threads only spin against each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The model's programs are not kept on disk (``costmodel.program_store``) by the suite, its processes
# and the commands they run: tests that patch the model's constants must never load programs compiled
# without the patch, and nothing is written outside the tests' folders. tests/test_program_store.py
# turns the store on in a folder of its own.
os.environ["ATTNCOST_CACHE_DIR"] = "off"

# The suite keeps both cores busy, so every CPU timing would wait for a quiet machine
# (profiler.harness.QUIET_WAIT_S): the suite checks what is measured, not how well.
os.environ["ATTNCOST_QUIET_WAIT_S"] = "0"

# Collect the young generation every 10,000 allocations, not 700: building plotly figures allocates
# millions of short-lived objects, and each collection walks the survivors again.
gc.set_threshold(10_000, 10, 10)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: a worker per core (at most MAX_WORKERS) for a run of folders, the whole suite
    by default; none when the command line names test files or tests, which run sooner in one
    process than the workers take to start."""
    here = config.invocation_params.dir
    if any(not (here / arg.split("::")[0]).is_dir() for arg in config.args):
        return 0
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def pytest_collection_modifyitems(items):
    """Tests marked ``early`` first, the others in their order."""
    items.sort(key=lambda item: item.get_closest_marker("early") is None)


@pytest.fixture(scope="module", autouse=True)
def _settled_heap():
    """Collect garbage once, then move what is alive to the collector's permanent generation
    (``gc.freeze``): the modules imported so far (torch, plotly, ...) hold millions of objects that
    every full collection would walk again (a profiling sweep collects after each failed point). Objects
    the tests make later are collected as before."""
    gc.collect()
    gc.freeze()
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread: small CPU kernels lose more to OpenMP contention on a busy 2-core
    machine than they gain from a second thread. Use with ``pytestmark = usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
