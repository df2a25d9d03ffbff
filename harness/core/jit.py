"""One decorator for the few loops compiled with numba (NMS, candidate scan, GFL boxes, normalisation).

nogil, so the preprocessing and decode threads really run in parallel; cached on disk next to the
package (or in the user's cache folder), so only the first run pays for compiling. Where no cache
folder can be written at all (read-only install, no writable home), numba refuses `cache=True`;
then the kernels compile in memory on every run instead of failing. numba itself is imported on a
kernel's first call, not when its module is imported: commands that never decode (`harness --help`,
`harness targets`) do not pay numba's half-second import.
"""

from __future__ import annotations

import functools
import threading

_COMPILE_LOCK = threading.Lock()


def _compile(fn):
    import numba

    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(fn)


def compiled(fn):
    """fn compiled by numba on its first call (kernels call no other kernel, so a plain wrapper works)."""
    kernel = None

    @functools.wraps(fn)
    def call(*args):
        nonlocal kernel
        if kernel is None:
            with _COMPILE_LOCK:
                if kernel is None:
                    kernel = _compile(fn)
        return kernel(*args)

    return call
