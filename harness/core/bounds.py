"""Memory a command is about to ask for, checked against what the machine has before allocating.

A batch size of 100000 used to allocate 114 GiB and end in a traceback, or get the process killed
for memory at 22 GB. Every place that sizes batches asks `check_batch_memory` first: the bytes of
one batch's input, and of its outputs where the model declares them, times the batches that will be in
flight at once, against the memory available now (the kernel's MemAvailable, or a cgroup limit when
lower). Refused with the figures.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

from harness.core.errors import HarnessError

#: the share of available memory the batches in flight may take (outputs, the runtime's own
#: buffers and the decoded images need the rest)
SHARE = 0.5


def available_bytes() -> int | None:
    """Memory available to this process now, or None where it cannot be told."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            found.append(max(0, int(limit) - int(used)))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            return None
    return min(found)


def human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"


def check_batch_memory(shape, itemsize: int, in_flight: int, what: str, available: int | None = None,
                       output_bytes_per_image: int = 0, outputs_in_flight: int | None = None) -> int:
    """Refuse (one line, with the figures) when the batches in flight would take more than SHARE of
    the available memory; returns the bytes of one batch's input.

    What it counts: `in_flight` input batches of `shape` x `itemsize` bytes, plus `outputs_in_flight`
    (default: as many) batches of outputs at `output_bytes_per_image` x the batch (the model's declared
    output shapes, where the caller knows them: OnnxModelInfo.output_bytes_per_image). Not counted: the
    runtime's weights, activations and its own copies, the decoded images and the canvas cache; that is
    why only SHARE of the available memory may go to the batches."""
    shape = tuple(int(d) for d in shape)
    per_batch = int(math.prod(shape)) * int(itemsize)
    outputs = int(output_bytes_per_image) * (shape[0] if shape else 1)
    in_flight = max(1, in_flight)
    outputs_in_flight = in_flight if outputs_in_flight is None else max(1, outputs_in_flight)
    available = available_bytes() if available is None else available
    need = per_batch * in_flight + outputs * outputs_in_flight
    if available is not None and need > SHARE * available:
        said = f"one batch of input {shape} is {human(per_batch)}, x {in_flight} in flight"
        if outputs:
            said += (f", and its outputs (the model's declared shapes) {human(outputs)}, x {outputs_in_flight} "
                     "in flight")
        raise HarnessError(f"{what}: {said} = {human(need)}, more than half the {human(available)} of memory "
                           "available; use a smaller batch size")
    return per_batch


def release_freed_memory() -> None:
    """Give memory that was freed back to the system (glibc's malloc_trim), so that a loop whose every
    pass allocates and frees much (COCOeval per chunk of categories) peaks at one pass, not at what the
    allocator kept from the earlier ones. A no-op where the C library has no malloc_trim."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
