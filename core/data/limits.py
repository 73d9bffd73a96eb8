"""Bounds checked before data is decoded: only regular files, images of sane size, and memory for the result.

A data file declares how large it will be once decoded (an .npz member's header and zip entry, an image's
header) long before the decoding allocates it. A 3 MB zip bomb declares gigabytes; a 240 kB PNG declares
81 million pixels. Checking those declarations first turns such files into one sentence instead of minutes
of swapping; the decoding itself then runs under the worker process's address-space limit as well.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from slimscope.core.errors import DatasetError

GIB = 1024**3
# Decoded pixels per image. Pillow warns only past 89 million and refuses past 179 million; a 9000x9000
# PNG of 240 kB stays under both and takes 243 MB as RGB. 64 Mpx still reads a 48 Mpx camera photo.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
# An archive member that expands more than this many times, to more than _BOMB_MIN_BYTES, is refused:
# real samples compress at most ~10x (MNIST digits ~5x, photos ~1.5x); deflate's limit is ~1032x.
MAX_EXPANSION = 100
_BOMB_MIN_BYTES = 64 * 1024 * 1024


def refuse_special_file(path: Path, what: str) -> None:
    """Refuse anything but a regular file (a FIFO would block the read forever, a device never ends)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise DatasetError(f"Cannot read {what} '{path}': {exc.strerror or exc}.") from None
    if not stat.S_ISREG(mode):
        raise DatasetError(
            f"{what[:1].upper()}{what[1:]} '{path}' is not a regular file (a pipe, device or socket)."
        )


def check_expansion(declared: int, compressed: int, member: str, path: Path) -> None:
    """Refuse an archive member that would expand like a decompression bomb."""
    if declared > _BOMB_MIN_BYTES and declared > MAX_EXPANSION * max(compressed, 1):
        raise DatasetError(
            f"Array '{member}' in '{path.name}' would expand from {format_bytes(compressed)} to "
            f"{format_bytes(declared)} ({declared // max(compressed, 1)} times); Slimscope does not unpack "
            f"archive members that expand more than {MAX_EXPANSION} times."
        )


def check_image_pixels(width: int, height: int, name: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise DatasetError(
            f"Image '{name}' is {width}x{height} pixels ({width * height / 1e6:.1f} million); Slimscope "
            f"reads images of at most {MAX_IMAGE_PIXELS / 1e6:.1f} million pixels."
        )


def check_memory(needed: int, what: str) -> None:
    """Refuse work whose result would not fit in the memory this process may still use."""
    left, where = memory_left()
    if left is not None and needed > left:
        raise DatasetError(
            f"Reading {what} would take about {format_bytes(needed)} of memory, more than the "
            f"{format_bytes(left)} {where}; use fewer samples or smaller images."
        )


def memory_left() -> tuple[int | None, str]:
    """Bytes this process may still allocate, and where that bound comes from: its address-space limit
    (a worker process) minus what it has reserved, else the memory the computer has available."""
    limit = _address_space_limit()
    if limit is not None:
        reserved = _status_bytes("/proc/self/status", "VmSize:")
        if reserved is not None:
            return max(limit - reserved, 0), "left under the memory limit"
    available = _status_bytes("/proc/meminfo", "MemAvailable:")
    return available, "this computer has available"


def _address_space_limit() -> int | None:
    try:
        import resource
    except ImportError:  # Windows: no limit to read
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def _status_bytes(file: str, key: str) -> int | None:
    """A "<key> <n> kB" line of a /proc file, in bytes (None off Linux)."""
    with contextlib.suppress(OSError, ValueError), open(file, encoding="ascii") as lines:
        for line in lines:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return None


def format_bytes(size: int) -> str:
    if size >= GIB:
        return f"{size / GIB:.1f} GiB" if size < 10**6 * GIB else f"{size / GIB:.2g} GiB"
    if size >= 1024**2:
        return f"{size / 1024**2:.1f} MiB"
    return f"{size / 1024:.1f} kiB"
