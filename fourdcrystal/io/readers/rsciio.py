"""Detector formats read through RosettaSciIO (optional)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ...errors import FourdError
from .base import INV_ANGSTROM, Scan4D, check_4d

# detector formats read through RosettaSciIO (optional): suffix → plugin module
RSCIIO = {".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".xml": "empad", ".blo": "blockfile",
          ".hspy": "hspy", ".tvips": "tvips", ".mrc": "mrc", ".ser": "tia"}
STACKED = ("tvips", "mrc")  # plugins that give a scan as a stack of frames: the scan shape comes from the caller
# formats RosettaSciIO has a reader for that cannot work beside abTEM, and why
UNREADABLE = {".zspy": "RosettaSciIO reads .zspy with zarr < 3, which abTEM 1.0.11 (zarr >= 3.1) rules out; "
                       "save the signal as .hspy"}


# -- RosettaSciIO -----------------------------------------------------------------------------

def _stack_scan_shape(p: Path, frames: int, scan_shape) -> tuple[tuple[int, int], list[str]]:
    """(rows, cols) of a file that stores its patterns as a stack of frames (TVIPS, MRC), and the note that says
    so where the shape is a guess: ``scan_shape`` where given, else a square frame count."""
    if scan_shape is not None:
        rows, cols = (int(v) for v in scan_shape)
        if rows * cols > frames:
            raise FourdError(f"{p}: scan shape {rows}x{cols} needs {rows * cols} frames, the file holds {frames}")
        return (rows, cols), []
    side = math.isqrt(frames)
    if side * side != frames:
        raise FourdError(f"{p}: a stack of {frames} frames with no scan shape; give it as `scan_shape` ROWSxCOLS")
    return (side, side), [f"{p.suffix} files store a stack of frames: the scan shape {side}x{side} is a guess from "
                          f"the {frames} frames (square); give `scan_shape` if the scan was not square"]


def open_rsciio(p: Path, plugin: str, scan_shape=None) -> Scan4D:
    import importlib

    try:
        module = importlib.import_module(f"rsciio.{plugin}")
    except ImportError:
        raise FourdError(f"{p}: reading {p.suffix} files needs RosettaSciIO; install it with "
                         f"pip install rosettasciio") from None
    try:
        signals = module.file_reader(str(p), lazy=True)
    except Exception as exc:  # a third-party reader: any failure is the file's
        raise FourdError(f"{p}: RosettaSciIO ({plugin}) could not read it ({type(exc).__name__}: {exc})") from None
    four = [s for s in signals if len(s["data"].shape) == 4]
    stacks = [s for s in signals if len(s["data"].shape) == 3 and plugin in STACKED]
    if not four and not stacks:
        shapes = ", ".join(str(tuple(s["data"].shape)) for s in signals)
        raise FourdError(f"{p}: expected 4D data (scan_x, scan_y, k_x, k_y), got shape {shapes}")
    sig = four[0] if four else stacks[0]
    data, notes = sig["data"], []
    if data.ndim == 3:  # frames in acquisition order, row by row
        (rows, cols), notes = _stack_scan_shape(p, data.shape[0], scan_shape)
        data = data[: rows * cols].reshape(rows, cols, *data.shape[1:])
    cal: dict = {}
    axes = sig.get("axes", [])
    signal_axes = [a for a in axes if not a.get("navigate", False)]
    if signal_axes:
        factor = INV_ANGSTROM.get(str(signal_axes[0].get("units", "")).strip())
        if factor:
            cal["k_pixel_invA"] = float(signal_axes[0]["scale"]) * factor
    tem = sig.get("metadata", {}).get("Acquisition_instrument", {}).get("TEM", {})
    if "beam_energy" in tem:  # keV in HyperSpy's metadata convention
        cal["energy_eV"] = float(tem["beam_energy"]) * 1e3
    if "convergence_angle" in tem:  # mrad
        cal["semiangle_mrad"] = float(tem["convergence_angle"])
    return Scan4D(str(p), check_4d(data.shape, str(p)), np.dtype(data.dtype), cal, f"rsciio:{plugin}", data,
                  notes=notes)
