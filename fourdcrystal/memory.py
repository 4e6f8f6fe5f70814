"""Memory a run will need, estimated before it allocates: refused in one line instead of dying mid-run.

The estimates are upper-bound sums of the big arrays a stage holds at once (the small ones are
covered by a 25 % margin); what is available is the kernel's MemAvailable.
"""

from __future__ import annotations

import os

from .errors import FourdError

GIB = float(1 << 30)


def available_bytes() -> int:
    """Memory the kernel can give without swapping (``MemAvailable``), or the free pages where that is unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 1 << 62  # unknown: do not refuse


def check_fits(need_bytes: float, what: str, hint: str, available: int | None = None) -> None:
    """One line ``WHAT would need N GiB, M GiB available (HINT)`` when ``need_bytes`` (margin included by the
    caller) exceeds the available memory."""
    have = available_bytes() if available is None else available
    if need_bytes > have:
        raise FourdError(f"{what} would need {need_bytes / GIB:.1f} GiB, {have / GIB:.1f} GiB available; {hint}")
