"""Lazy 4D-STEM readers: a file is opened once and read in chunks of scan positions.

Formats:

* NumPy ``.npy`` (memory-mapped), shape (scan_x, scan_y, k_x, k_y);
* HDF5 with a dataset path (``file.h5:/group/data``; without a path the single 4D dataset in
  the file is used). Attributes ``k_pixel_invA``, ``energy_eV``, ``semiangle_mrad`` on the
  dataset are read as calibration;
* EMD 1.0 (py4DSTEM / emdfile; ``.emd`` or any HDF5 whose root says ``emd_group_type='file'``):
  the 4D array group (``FILE.emd:/root/datacube`` picks one of several), its pixel size from the
  py4DSTEM ``calibration`` metadata (``Q_pixel_size`` in ``A^-1``) or from the array's ``dim2``;
* Quantum Detectors Merlin ``.mib`` (frames of an ASCII header + big-endian pixels; the scan
  shape from ``scan_shape``, the acquisition's ``.hdr`` file, or a square frame count);
* other detector formats through RosettaSciIO, when it is installed (``pip install
  'fourdcrystal[formats]'``): HyperSpy ``.hspy``, blockfile ``.blo``, TVIPS ``.tvips`` and MRC
  ``.mrc`` (tested on files RosettaSciIO or mrcfile wrote; TVIPS and MRC store a stack of frames,
  so the scan shape comes from ``scan_shape`` or a square frame count, said in ``notes``), and,
  untested here (no writer and no sample file), Gatan ``.dm3/.dm4``, EMPAD ``.xml``, FEI ``.ser``
  and Dectris Arina ``*_master.h5``. ``.zspy`` is refused: RosettaSciIO reads it with zarr < 3,
  abTEM needs zarr >= 3.1.

Every reader gives a :class:`Scan4D`: shape (scan_x, scan_y, k_x, k_y), the calibration it
found in the file (keys ``k_pixel_invA``, ``energy_eV``, ``semiangle_mrad``; absent where the
file has none), and ``read(start, stop)`` over flattened scan positions, so memory stays flat
whatever the file size. ``spec`` and ``scan_shape`` reopen the same data in another process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import FourdError
from .base import INV_ANGSTROM, RawFrames, Scan4D, check_4d, file_fingerprint, row_segments, split_spec
from .growing import FOLLOW_SUFFIXES, check_followable, open_growing
from .hdf5 import find_objects, metadata_values, open_hdf5, single
from .mib import open_mib
from .rsciio import RSCIIO, STACKED, UNREADABLE, open_rsciio

__all__ = ["Scan4D", "open_4d", "open_growing", "read_2d", "split_spec", "supported", "check_followable",
           "file_fingerprint", "row_segments", "metadata_values", "FORMATS", "RSCIIO", "STACKED", "UNREADABLE",
           "FOLLOW_SUFFIXES", "INV_ANGSTROM", "RawFrames", "check_4d", "find_objects", "single"]

FORMATS = {
    ".npy": "NumPy array (scan_x, scan_y, k_x, k_y)",
    ".h5": "HDF5 (FILE.h5:/path/to/4d/dataset) or EMD 1.0", ".hdf5": "HDF5 or EMD 1.0", ".hdf": "HDF5",
    ".emd": "EMD 1.0 (py4DSTEM)",
    ".mib": "Quantum Detectors Merlin",
}


def supported() -> str:
    """The file types :func:`open_4d` reads, for error messages and --help."""
    return ", ".join(sorted(FORMATS) + sorted(RSCIIO) + ["*_master.h5 (Arina)"])


def open_4d(spec: str | Path, scan_shape: tuple[int, int] | None = None) -> Scan4D:
    """Open a 4D-STEM file (see the module docstring); one clear line for anything else.

    ``scan_shape`` (rows, columns) is needed only where a file does not store it (.mib without
    its .hdr and with a non-square frame count).
    """
    p, inner = split_spec(spec)
    suffix = p.suffix.lower()
    if suffix in UNREADABLE:
        raise FourdError(f"{p}: {UNREADABLE[suffix]}")
    if suffix not in FORMATS and suffix not in RSCIIO:
        raise FourdError(f"{p}: unknown 4D-STEM format {suffix or '(no extension)'!r}; supported: {supported()}")
    if not p.exists():
        raise FourdError(f"{p} not found")
    try:
        scan = _open_any(p, inner, suffix, scan_shape)
    except FourdError:
        raise
    except Exception as exc:  # noqa: BLE001 - a file is never trusted: whatever a damaged one raises is one line
        raise FourdError(f"{p}: not a readable {suffix} 4D-STEM file ({type(exc).__name__}: "
                         f"{str(exc)[:120]})") from None
    if scan_shape is not None and tuple(int(v) for v in scan_shape) != tuple(scan.scan_shape):
        shape = scan.scan_shape
        scan.close()
        raise FourdError(f"`scan_shape` {scan_shape[0]}x{scan_shape[1]} contradicts {p}, whose scan is "
                         f"{shape[0]}x{shape[1]}; leave the option out for this file")
    return scan


def _open_any(p: Path, inner: str, suffix: str, scan_shape) -> Scan4D:
    if suffix == ".npy":
        try:
            arr = np.load(p, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise FourdError(f"{p}: not a readable .npy file ({exc})") from None
        shape = check_4d(arr.shape, str(p))
        if not arr.flags.c_contiguous:  # Fortran order: stay with the memory map
            return Scan4D(str(p), shape, arr.dtype, {}, "npy", arr)
        frames = RawFrames(p, arr.offset, np.dtype((arr.dtype, shape[2:])), shape[:2])
        return Scan4D(str(p), shape, arr.dtype, {}, "npy", frames, frames)
    if suffix == ".mib":
        return open_mib(p, scan_shape)
    if suffix in RSCIIO or p.name.lower().endswith("_master.h5"):
        return open_rsciio(p, "arina" if p.name.lower().endswith("_master.h5") else RSCIIO[suffix], scan_shape)
    return open_hdf5(p, inner)


def read_2d(spec: str | Path) -> np.ndarray:
    """A 2D image (or a 4D scan, to be averaged by the caller) from ``FILE.npy`` or ``FILE.h5[:/path]``."""
    import h5py

    p, inner = split_spec(spec)
    if not p.exists():
        raise FourdError(f"{p} not found")
    try:
        if p.suffix.lower() == ".npy":
            return np.load(p)
        with h5py.File(p, "r") as f:
            if not inner:
                inner = single(p, find_objects(f, lambda o: isinstance(o, h5py.Dataset) and o.ndim == 2), "2D dataset")
            return f[inner][()]
    except (OSError, ValueError, KeyError) as exc:
        raise FourdError(f"{spec}: unreadable ({exc})") from None
