"""Hand the pages behind a memory-mapped tensor back to the kernel once it has been copied.

Mapped file pages count towards a process's resident set as soon as they are read. Converting
a model reads every byte once, so without this the input mapping and the output arrays would
both be resident at the end: two copies. `madvise(MADV_DONTNEED)` on a read-only (or private,
never written) file mapping only drops the page-table entries; a later read faults the bytes in
again from the file, so releasing is always safe. Elsewhere than Linux this is a no-op.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np
from numpy.lib.array_utils import byte_bounds

_MADV_DONTNEED = 4
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def release(array: np.ndarray) -> None:
    """Drop the whole pages spanned by `array`'s buffer from this process's resident set.

    Only call this on views of a file mapping opened read-only or copy-on-write.
    """
    if _libc is None or array.size == 0:
        return
    start, end = byte_bounds(array)
    lo = start - start % mmap.PAGESIZE
    _libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(end - lo), _MADV_DONTNEED)
