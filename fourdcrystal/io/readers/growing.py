"""Files still being written (``predict --follow``): Merlin ``.mib`` and HDF5 in SWMR mode."""

from __future__ import annotations

from pathlib import Path
from typing import Callable


from ...errors import FourdError
from .base import Scan4D, split_spec
from .hdf5 import find_objects, single
from .mib import open_mib

FOLLOW_SUFFIXES = (".mib", ".h5", ".hdf5", ".hdf")  # what open_growing reads


def check_followable(path: Path) -> None:
    """One line unless ``path`` is a format :func:`open_growing` reads (decided by its name, before it exists)."""
    if path.suffix.lower() not in FOLLOW_SUFFIXES:
        raise FourdError(f"{path}: `follow` reads Merlin .mib and HDF5 written in SWMR mode, not "
                         f"{path.suffix or 'a file without an extension'}")


def open_growing(spec: str | Path, scan_shape: tuple[int, int] | None = None) -> tuple[Scan4D, Callable[[], int]]:
    """Open a 4D-STEM file that a detector is still writing: (the scan of the whole acquisition, a function that
    gives how many scan positions are in the file now, whole frames only).

    * Merlin ``.mib``: the scan shape from the ``.hdr`` (written when the acquisition starts) or ``scan_shape``;
      frames are counted from the file's size. A frame count read off a half-written file is never guessed
      into a square scan.
    * HDF5 written in SWMR mode: a 4D dataset (rows, columns, detector, detector) that grows along its first
      axis, whose final number of rows is its ``maxshape`` (or ``scan_shape``); positions are counted by the
      rows written (``Dataset.refresh``).
    """
    p, inner = split_spec(spec)
    check_followable(p)
    if not p.exists():
        raise FourdError(f"{p} not found")
    if p.suffix.lower() == ".mib":
        scan = open_mib(p, scan_shape, growing=True)
        frame_bytes = scan._array.frame.itemsize
        return scan, lambda: min(p.stat().st_size // frame_bytes, len(scan))
    return _open_swmr(p, inner, scan_shape)


def _open_swmr(p: Path, inner: str, scan_shape) -> tuple[Scan4D, Callable[[], int]]:
    import h5py

    try:
        f = h5py.File(p, "r", libver="latest", swmr=True)
    except OSError as exc:
        raise FourdError(f"{p}: not an HDF5 file open for SWMR reading ({exc}); `follow` needs the writer to use "
                         f"SWMR mode (h5py: File(..., libver='latest'), then f.swmr_mode = True)") from None
    try:
        def growing(o) -> bool:
            return (isinstance(o, h5py.Dataset) and len(o.shape) == 4 and o.maxshape is not None
                    and min(o.shape[-2:]) >= 16)

        if inner:
            if inner not in f or not isinstance(f[inner], h5py.Dataset):
                raise FourdError(f"{p}: no dataset {inner!r} in the file")
            ds = f[inner]
        else:
            ds = f[single(p, find_objects(f, growing), "4D dataset (rows, columns, detector, detector) for `follow`")]
        if len(ds.shape) != 4:
            raise FourdError(f"{p}:{ds.name}: shape {tuple(ds.shape)}; `follow` needs a 4D dataset (rows, columns, "
                             f"detector, detector) that grows along its rows")
        rows = ds.maxshape[0] if scan_shape is None else int(scan_shape[0])
        if rows is None:
            raise FourdError(f"{p}:{ds.name}: its rows are unlimited (maxshape None), so the scan's size is not in "
                             f"the file; give it as `scan_shape` ROWSxCOLS")
        cols = int(ds.shape[1])
        if scan_shape is not None and int(scan_shape[1]) != cols:
            raise FourdError(f"`scan_shape` {scan_shape[0]}x{scan_shape[1]} contradicts {p}:{ds.name}, whose rows "
                             f"hold {cols} positions")
        shape = (int(rows), cols, int(ds.shape[2]), int(ds.shape[3]))
        cal = {k: float(ds.attrs[k]) for k in ("k_pixel_invA", "energy_eV", "semiangle_mrad") if k in ds.attrs}

        def available() -> int:
            ds.refresh()
            return min(int(ds.shape[0]), shape[0]) * cols

        return Scan4D(f"{p}:{ds.name}", shape, ds.dtype, cal, "hdf5-swmr", ds, f), available
    except BaseException:
        f.close()
        raise
