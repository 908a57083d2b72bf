"""Keep freed tensor memory in the process (glibc's malloc), so a training step does not pay the
kernel again for memory the previous step just gave back.

Why: a CPU training step of the ``cpu`` recipe allocates and frees a few hundred tensors, many of
them megabytes (every (slice, prompt) item carries full-resolution maps). glibc serves an
allocation above its mmap threshold (128 KB, rising only to 32 MB) with a fresh ``mmap`` and
returns it with ``munmap`` on free; the next step's tensor then touches brand-new pages, and each
page costs a fault and the kernel zeroing it. Measured on a 2-core CPU (``tgated demo``'s
training): 1.4-1.9 million minor page faults in 25 steps, 17 % of the process's CPU time in the
kernel, and 0.42-0.51 s a step; with the thresholds below, 0.24 million faults (most of them the
start-up), and 0.33-0.35 s a step, the same numbers computed.

What: ``mallopt`` raises the mmap threshold (allocations up to it come from the heap and are
reused when freed) and the trim threshold (freed memory up to it stays with the process instead
of going back to the kernel at once). Peak memory is unchanged; memory freed after the peak is
returned when the work ends (:func:`give_back_freed_memory`, which the trainer calls), or on
exit. PyTorch's own advice for CPU training is to preload jemalloc or tcmalloc; this does the part
of that glibc allows, with nothing to install.

Only where the C library is glibc (Linux); elsewhere, or with ``TGATED_MALLOC=system`` (or when the
user set ``MALLOC_MMAP_THRESHOLD_`` / ``GLIBC_TUNABLES`` themselves), nothing changes. Imports no
torch: the Slicer module's process never calls it (Slicer's own memory is Slicer's business).
"""

from __future__ import annotations

import ctypes
import os

# mallopt parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Allocations up to this size come from the heap (larger ones are rare and big enough to amortise
#: their mmap).
MMAP_THRESHOLD = 256 * 1024 * 1024
#: Free memory at the top of the heap kept for the next allocation before it goes back to the kernel.
TRIM_THRESHOLD = 1024 * 1024 * 1024

#: Set to "system" to leave the C library's allocator as it is.
ENV = "TGATED_MALLOC"

_tuned: bool | None = None
_libc = None


def _user_chose() -> bool:
    """The environment already tells malloc what to do (or tells us not to)."""
    if os.environ.get(ENV, "").strip().lower() == "system":
        return True
    return bool(os.environ.get("MALLOC_MMAP_THRESHOLD_") or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""))


def _glibc():
    """The C library's functions in this process when it is glibc, else None (musl, macOS, Windows).

    Asked of the running C library itself (``confstr``; symbols through ``dlopen(NULL)``), not
    found on disk: ``ctypes.util.find_library`` runs ``ldconfig`` in a subprocess, 13-15 ms added to
    every command's start.
    """
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return None
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), no such name (macOS), no symbol
        return None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds in this process, once; True when they are raised.

    Safe to call from anywhere and any number of times (training, segmenting, the CLI); a no-op
    off glibc, when the user chose otherwise, or when ``mallopt`` refuses.
    """
    global _tuned, _libc
    if _tuned is not None:
        return _tuned
    _tuned = False
    libc = None if _user_chose() else _glibc()
    if libc is None:
        return False
    # the trim threshold first: setting either one stops glibc adjusting the other on its own
    _tuned = bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    _libc = libc if _tuned else None
    return _tuned


def is_tuned() -> bool:
    """Whether :func:`keep_freed_memory` raised the thresholds in this process."""
    return bool(_tuned)


def give_back_freed_memory() -> None:
    """Return the free memory :func:`keep_freed_memory` kept to the kernel (``malloc_trim``): when a
    long piece of work ends in a process that lives on (``train()`` called from a console)."""
    if _libc is not None:
        _libc.malloc_trim(0)
