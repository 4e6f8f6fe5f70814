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
        raise FourdError(f"{what} would need {_gib(need_bytes)} GiB, {_gib(have)} GiB available; {hint}")


def _gib(n: float) -> str:
    """GiB with one decimal, or two significant digits under 1 GiB (a small machine's numbers are not all 0.0)."""
    return f"{n / GIB:.1f}" if n >= GIB else f"{n / GIB:.2g}"


# Bytes the FCU-Net holds per pattern, per pixel of its grid and per channel of its first level (``width``),
# measured with ``scripts/bench_memory.py`` (peak RSS of one forward pass, and of a forward and backward pass,
# at widths 16 and 32, 128² and 256² grids, batches 4 and 8: 49-62 and 149-181 bytes), rounded up.
INFERENCE_BYTES = 64
TRAINING_BYTES = 192


def network_bytes(batch: int, grid_px: int, width: int, training: bool = False) -> float:
    """The FCU-Net's activations (and, ``training``, what backpropagation keeps) for ``batch`` patterns of
    ``grid_px`` pixels: :data:`TRAINING_BYTES` or :data:`INFERENCE_BYTES` per pixel, channel and pattern."""
    return float(batch) * grid_px * width * (TRAINING_BYTES if training else INFERENCE_BYTES)
