"""
Handing freed memory back to the operating system, and keeping large reads' blocks off it.

When a burst of connections closes, Python frees their buffers, but the C allocator
(glibc's malloc) keeps most of the freed heap for later instead of returning it: a
server that held 200 MB of echo for 400 slow clients stays at ~200 MB of RSS after they
are gone, although nothing is alive. L{give_back_freed_memory} asks glibc to return
what it can (C{malloc_trim(0)}); elsewhere (musl, macOS) it does nothing.

    >>> give_back_freed_memory() in (True, False)
    True

The other way round, L{keep_blocks_on_the_heap} keeps glibc from mapping and unmapping a
block for every large read (a 256 KiB C{recv}) in a process that has not yet freed one.
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


@functools.cache
def keep_blocks_on_the_heap(size: int) -> None:
    """
    Let the C allocator serve blocks of C{size} bytes from its heap from now on.

    glibc's malloc maps a block larger than its mmap threshold (128 KiB when a process
    starts) on its own and unmaps it when it is freed; freeing such a mapped block
    raises the threshold to that block's size (mallopt(3), M_MMAP_THRESHOLD: the
    "dynamic threshold"). A server reading with C{recv(size)} allocates a block of
    C{size} bytes for every read and shrinks it to what was read: until the process
    first frees one whole (when a connection closes), every read costs an mmap, an
    mremap, a munmap and a page fault. Allocating and freeing one such block once (the
    first call; later calls do nothing) raises the threshold before the first read.
    With another allocator (musl, jemalloc) it costs one allocation and changes nothing.

        >>> keep_blocks_on_the_heap(256 * 1024)
    """
    block = bytes(size)  # allocated as recv(size) allocates its bytes object
    del block
