"""Quantum Detectors Merlin ``.mib`` (with its ``.hdr``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import FourdError
from .base import RawFrames, Scan4D

_MIB_DTYPES = {"U01": ">u1", "U08": ">u1", "U16": ">u2", "U32": ">u4"}


def open_mib(p: Path, scan_shape: tuple[int, int] | None, growing: bool = False) -> Scan4D:
    """Frames of ``header_bytes`` ASCII header (MQ1,seq,offset,chips,X,Y,type,…) + Y×X big-endian pixels.

    Frames are stored one scan line after another (one trigger per line); within a frame the
    detector rows run bottom-up. ``growing``: the file is still being written (:func:`open_growing`): a cut-off
    last frame and fewer frames than the scan are expected, and the scan's shape must not be guessed.
    """
    with open(p, "rb") as fh:
        first = fh.read(768)
    fields = first.decode("latin-1").split(",")
    if len(fields) < 7 or fields[0] != "MQ1":
        raise FourdError(f"{p}: not a Merlin .mib file (a frame header starts with 'MQ1,', found {first[:8]!r})")
    try:
        header_bytes, nx, ny = int(fields[2]), int(fields[4]), int(fields[5])
    except ValueError:
        raise FourdError(f"{p}: unreadable .mib frame header {first[:60]!r}") from None
    if fields[6] not in _MIB_DTYPES:
        raise FourdError(f"{p}: .mib pixel type {fields[6]!r} is not supported (raw R64 frames need the Merlin "
                         f"software); expected one of {', '.join(_MIB_DTYPES)}")
    if header_bytes <= 0 or nx < 1 or ny < 1:
        raise FourdError(f"{p}: .mib frame header gives {nx}×{ny} pixels and a {header_bytes}-byte header; "
                         f"expected a positive frame size")
    frame = np.dtype([("header", np.bytes_, header_bytes), ("data", _MIB_DTYPES[fields[6]], (ny, nx))])
    size = p.stat().st_size
    frames = size // frame.itemsize
    if growing:
        shape = _mib_growing_shape(p, scan_shape)
        frames_reader = RawFrames(p, 0, frame, shape, field="data", flip_rows=True)
        return Scan4D(str(p), (*shape, ny, nx), frame["data"].base, {}, "mib", frames_reader, frames_reader, [])
    if size % frame.itemsize and scan_shape is None:
        raise FourdError(f"{p}: {frames} whole frames and a cut-off one: the file is truncated (an interrupted "
                         f"acquisition or copy); give `scan_shape` ROWSxCOLS to read the whole frames")
    shape, from_hdr = _mib_scan_shape(p, frames, scan_shape)
    notes = []
    if scan_shape is None and not from_hdr:
        why = ("no .hdr beside it" if not p.with_suffix(".hdr").exists() else
               "its .hdr gives no scan shape (one frame per trigger)")
        notes.append(f"{why}: the scan shape {shape[0]}x{shape[1]} is a guess from the {frames} frames "
                     f"(square); give `scan_shape` if the acquisition was not square or was cut short")
    # Merlin stores rows bottom-up: flipped like RosettaSciIO does
    frames_reader = RawFrames(p, 0, frame, shape, field="data", flip_rows=True)
    return Scan4D(str(p), (*shape, ny, nx), frame["data"].base, {}, "mib", frames_reader, frames_reader, notes)


def mib_hdr_frames(p: Path) -> tuple[int, int] | None:
    """(frames in the acquisition, frames per trigger) from the .hdr beside a .mib, or None where it has not both."""
    hdr = p.with_suffix(".hdr")
    if not hdr.exists():
        return None
    text = hdr.read_text(errors="replace")
    total = re.search(r"Frames in Acquisition \(Number\):\s*(\d+)", text)
    per_line = re.search(r"Frames per Trigger \(Number\):\s*(\d+)", text)
    return (int(total.group(1)), int(per_line.group(1))) if total and per_line else None


def _mib_growing_shape(p: Path, scan_shape) -> tuple[int, int]:
    """The scan shape of a .mib still being written: ``scan_shape``, else its .hdr's frames per line and in all."""
    if scan_shape is not None:
        return int(scan_shape[0]), int(scan_shape[1])
    frames = mib_hdr_frames(p)
    if frames is None or frames[1] <= 1:
        why = "no .hdr beside it" if not p.with_suffix(".hdr").exists() else "its .hdr gives no frames per line"
        raise FourdError(f"{p}: {why}, so the scan's shape is unknown while it is written; give `scan_shape` "
                         f"ROWSxCOLS with `follow`")
    total, width = frames
    return total // width, width


def _mib_scan_shape(p: Path, frames: int, scan_shape) -> tuple[tuple[int, int], bool]:
    """(rows, cols), and whether the .hdr gave them. A line-triggered acquisition's .hdr gives the frames per
    line ("Frames per Trigger"); one frame per trigger (frame triggering) says nothing of the scan's shape."""
    hint = "give the scan shape as `scan_shape` ROWSxCOLS"
    from_hdr = False
    if scan_shape is None:
        hdr = p.with_suffix(".hdr")
        counted = mib_hdr_frames(p)
        if counted is not None and (counted[1] > 1 or counted[0] == 1):
            total, width = counted
            scan_shape, from_hdr = (total // width, width), True
        if scan_shape is None:
            side = int(round(np.sqrt(frames)))
            if side * side != frames:
                what = "no .hdr file beside it" if not hdr.exists() else "a .hdr that gives no scan shape"
                raise FourdError(f"{p}: {frames} frames and {what}; {hint}")
            scan_shape = (side, side)
    rows, cols = (int(s) for s in scan_shape)
    if rows * cols > frames:
        raise FourdError(f"{p}: scan shape {rows}x{cols} needs {rows * cols} frames, the file holds {frames} "
                         f"(an interrupted acquisition?); {hint}")
    return (rows, cols), from_hdr
