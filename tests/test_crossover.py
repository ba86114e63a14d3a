"""The crossover search finds where a variant starts (and stops) being cheaper than the baseline."""

import pytest

from attncost.costmodel.crossover import REL_TOL, crossovers, metric_values
from attncost.costmodel.estimate import estimate
from attncost.costmodel.hardware import get_hardware
from attncost.costmodel.shape import Shape

S = Shape(T=4096, d=1024, heads=16)
HW = get_hardware("h100")


def cheaper(variant, T, metric, base="flash", axis="T", shape=S):
    s = shape.model_copy(update={axis: T})
    v, b = metric_values(estimate(variant, s, None, HW)), metric_values(estimate(base, s, None, HW))
    return v[metric] is not None and b[metric] is not None and v[metric] < b[metric]


@pytest.mark.parametrize("variant", ["linformer", "nystrom", "performer", "sliding_window"])
@pytest.mark.parametrize("metric", ["flops", "time"])
def test_crossover_is_where_it_flips(variant, metric):
    start, end = crossovers(variant, "flash", S, hardware=HW)
    T = start[metric]
    assert T is not None
    assert cheaper(variant, T, metric)
    below = int(T - max(1, T * REL_TOL)) - 1
    assert not cheaper(variant, below, metric), (variant, metric, T)


def test_never_means_never_at_any_power_of_two():
    start, end = crossovers("mha", "flash", S, hardware=HW)
    assert start == {"flops": None, "memory": None, "time": None}
    assert not any(cheaper("mha", 2**k, "flops") for k in range(4, 23))


def test_a_range_that_closes():
    """mlp_attention has fewer FLOPs than flash at small T (no Q/K projections) and more at large T."""
    start, end = crossovers("mlp_attention", "flash", S, hardware=HW)
    assert start["flops"] == 16 and end["flops"] is not None
    assert cheaper("mlp_attention", int(end["flops"] - max(1, end["flops"] * REL_TOL)) - 1, "flops")
    assert not cheaper("mlp_attention", end["flops"], "flops")


def test_over_d_moves_in_steps_of_heads():
    start, _ = crossovers("linformer", "flash", S, hardware=HW, axis="d")
    d = start["time"]
    assert d is not None and d % S.heads == 0
    assert cheaper("linformer", d, "time", axis="d")
