"""Time and peak memory of one call on the CPU, measured in this process, for costs versus length.

The peak memory of a call is how far the process's resident set size rose above its value before the
call. Linux lets a process reset its recorded peak (``VmHWM``) to the current size by writing ``5`` to
``/proc/self/clear_refs``, so successive calls are measured one by one without a fresh process each;
where that is not possible (other systems, restricted ``/proc``) the peak is NaN and only time is given.

Memory freed before the call must leave the resident set first, or the call reuses it without the size
rising: glibc keeps freed blocks for reuse, so `reset_peak_memory` hands them back (``malloc_trim``)
before resetting the peak. glibc also serves large blocks from such freed memory once its adaptive mmap
threshold has risen, which made the same call's peak vary by a third from one measurement to the next.
`measure_call` therefore fixes the threshold at 256 KiB for the rest of the process before its first
call: every large block is then mapped when allocated and unmapped when freed, the peak repeats to
0.1 MiB, and every call timed in the process pays for that mapping alike, so their times still compare.
torch's CPU tensors come from malloc, so they are measured like the rest. The resident set is the
whole process's: memory that other threads allocate during the call counts too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path

PROC_STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h): the size from which blocks are mmapped


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` size field (``VmRSS``, ``VmHWM``) in KiB."""
    for line in PROC_STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(f"{field} is not in {PROC_STATUS}")


@functools.cache
def _c_library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def reset_peak_memory() -> bool:
    """Reset the process's recorded peak resident set size to its current size; whether that worked."""
    library = _c_library()
    if library is not None and hasattr(library, "malloc_trim"):
        library.malloc_trim(0)  # return the allocator's freed but kept memory to the system first
    try:
        CLEAR_REFS.write_text("5")
        _status_kib("VmHWM")
    except (OSError, KeyError):
        return False
    return True


def measure_call(function: Callable[[], object], repeats: int = 1, warmup: bool = True) -> dict[str, float]:
    """Run ``function`` ``repeats`` times; its mean ``seconds`` per call, and the ``peak_mib`` of one more
    (so it runs ``repeats`` + 1 times, + 1 with ``warmup``; `measure_once` for work that runs once).

    ``warmup`` first calls ``function`` once, unmeasured, so that one-off costs (kernel selection, lazy
    allocations that stay) are charged to neither figure. ``peak_mib`` is how far one further call raised
    the resident set size above its level before, in MiB (NaN where it cannot be measured); it is measured
    apart from the timed calls because resetting the peak frees the allocator's cache, which they reuse.
    """
    fix_mmap_threshold()
    if warmup:
        function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    seconds = (time.perf_counter() - start) / repeats
    return {"seconds": seconds, "peak_mib": peak_memory_of(function)}


def measure_once(function: Callable[[], object]) -> dict[str, float]:
    """The ``seconds`` and ``peak_mib`` (as `measure_call`'s) of a single call, for work that cannot run
    twice, such as a ``trainer.fit``: a second call would fit no more and measure nothing."""
    fix_mmap_threshold()
    measurable = reset_peak_memory()
    before = _status_kib("VmRSS") if measurable else 0
    start = time.perf_counter()
    function()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_mib": (_status_kib("VmHWM") - before) / 1024 if measurable else math.nan,
    }


def peak_memory_of(function: Callable[[], object]) -> float:
    """How far one call of ``function`` raised the resident set size above its level before, in MiB."""
    if not reset_peak_memory():
        return math.nan
    before = _status_kib("VmRSS")
    function()
    return (_status_kib("VmHWM") - before) / 1024


@functools.cache
def fix_mmap_threshold(size: int = 256 << 10) -> bool:
    """Map every block of ``size`` bytes and more on its own, for the rest of the process (glibc's
    ``mallopt``), so that peaks repeat; whether the allocator accepted it (other C libraries do not)."""
    library = _c_library()
    if library is None or not hasattr(library, "mallopt"):
        return False
    return library.mallopt(M_MMAP_THRESHOLD, size) == 1
