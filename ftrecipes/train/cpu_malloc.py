"""glibc malloc settings for CPU training: each step reuses the memory the previous step freed.

A training step on the CPU allocates and frees the same activation, logit and gradient buffers
every step. glibc serves each block above its mmap threshold (128 KiB at start, raised as such
blocks are freed, up to 32 MiB) with a fresh `mmap`, and hands heap memory above its trim
threshold back to the kernel, so the next step pays page faults and the kernel's zeroing of new
pages again: in the torch profile of a packed step of the benchmark's model, the LM head's
[2048, 64] x [64, 1024] matmul took 8.8 ms inside training against 4.5 ms on a warm buffer, and
every `zeros` paid the same.

`reuse_freed_memory(recipe)` sets, with `mallopt`, the mmap threshold to glibc's maximum (32 MiB)
and the trim threshold to 1 GiB, so freed blocks stay in the heap for the next step. Measured on
that packed step, one thread, three alternating runs each: 76-82 ms against 80-105 ms. Peak
memory stays about the same: a step's buffers are reused, not added to. Setting the trim
threshold alone would be worse than nothing: it freezes the mmap threshold at 128 KiB (190 ms).

It acts in a process of our own only (`lean_imports.OWNS_PROCESS`: the launch command with one
job, each rank's worker), with `hardware.accelerator=cpu`, on Linux with glibc. Recipe key:
`train.cpu_reuse_freed_memory` (default true).
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc refuses more on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**30


def reuse_freed_memory(recipe) -> bool:
    """Sets glibc's thresholds (see the module docstring); True when both settings took."""
    from ftrecipes.train import lean_imports

    if (not lean_imports.OWNS_PROCESS or not recipe.train.cpu_reuse_freed_memory
            or recipe.hardware.accelerator != "cpu" or not sys.platform.startswith("linux")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, a static build): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the mmap threshold first: setting either one stops glibc's own adjustment of both
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
