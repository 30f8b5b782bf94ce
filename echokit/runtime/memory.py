"""
Handing freed memory back to the operating system.

When a burst of connections closes, Python frees their buffers, but the C allocator
(glibc's malloc) keeps most of the freed heap for later instead of returning it: a
server that held 200 MB of echo for 400 slow clients stays at ~200 MB of RSS after they
are gone, although nothing is alive. L{give_back_freed_memory} asks glibc to return
what it can (C{malloc_trim(0)}); elsewhere (musl, macOS) it does nothing.

    >>> give_back_freed_memory() in (True, False)
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's C{malloc_trim}, or C{None} where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def give_back_freed_memory() -> bool:
    """Return freed heap memory to the system if the C library can; C{True} if it did."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
