"""One decorator for the few loops compiled with numba (NMS, candidate scan, GFL boxes, normalisation).

nogil, so the preprocessing and decode threads really run in parallel; cached on disk next to the
package (or in the user's cache folder), so only the first run pays for compiling. Where no cache
folder can be written at all (read-only install, no writable home), numba refuses `cache=True` at
import time; then the kernels compile in memory on every run instead of failing.
"""

from __future__ import annotations

import numba


def compiled(fn):
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(fn)
