"""How much CPU other processes took while this one was timing something (Linux).

On a CPU every other runnable process competes with the timed call for the same cores, and eager
PyTorch suffers more than its share: its intra-op threads meet at a barrier after each parallel op,
so one worker thread descheduled for a time slice stalls the whole call (a 0.2 ms decode step
measured 8 ms while another process ran). ``CpuWatch`` tells such spells apart from a quiet machine:
the busy time of all cores (``/proc/stat``: user, nice, system, irq, softirq, steal), minus this
process's own CPU time (``time.process_time``, all its threads), over the wall time between two
readings, is the number of cores that others used meanwhile (``others_cores``). ``/proc/stat``
counts in clock ticks (10 ms), so a reading is only meaningful over about 0.1 s or more: ``SLICE_S``.
Where ``/proc/stat`` cannot be read (not Linux) the watch reports nothing and every slice is quiet.
"""

import os
import time
from typing import Optional

SLICE_S = 0.1  # shortest wall time over which a reading is trusted
BUSY_CORES = 0.5  # others using this many cores or more: the slice is disturbed
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal
try:
    _TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
except (ValueError, OSError, AttributeError):  # no such sysconf name here
    _TICK_S = 0.01


def machine_busy_s(path: str = "/proc/stat") -> Optional[float]:
    """CPU seconds all cores have been busy since boot, or None where ``path`` cannot be read."""
    try:
        with open(path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    return sum(values[i] for i in _BUSY_FIELDS if i < len(values)) * _TICK_S


class CpuWatch:
    """Readings of busy time, own CPU time and wall time; ``others_cores()`` since the last ``start()``."""

    def __init__(self, read=machine_busy_s) -> None:
        self.read = read
        self.start()

    def start(self) -> None:
        self.busy0, self.own0, self.wall0 = self.read(), time.process_time(), time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.wall0

    def others_cores(self) -> Optional[float]:
        """Cores other processes used since ``start()`` (None: unknown here)."""
        busy = self.read()
        wall = self.elapsed()
        if busy is None or self.busy0 is None or wall <= 0:
            return None
        own = time.process_time() - self.own0
        return max(0.0, (busy - self.busy0) - own) / wall

    def disturbed(self) -> bool:
        """Whether others used ``BUSY_CORES`` or more since ``start()``."""
        others = self.others_cores()
        return others is not None and others >= BUSY_CORES
