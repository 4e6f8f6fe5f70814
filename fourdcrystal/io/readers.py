"""Lazy 4D-STEM readers: a file is opened once and read in chunks of scan positions.

Supported so far: NumPy ``.npy`` (memory-mapped) and HDF5 with a dataset path
(``file.h5:/group/data``; without a path the single 4D dataset in the file is used). Every
reader gives a :class:`Scan4D`: shape (scan_x, scan_y, k_x, k_y), the calibration it found in
the file (None where the file has none), and ``read(start, stop)`` over flattened scan
positions, so memory stays flat whatever the file size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FourdError

FORMATS = {".npy": "NumPy array (scan_x, scan_y, k_x, k_y)",
           ".h5": "HDF5: FILE.h5:/path/to/4d/dataset", ".hdf5": "HDF5", ".hdf": "HDF5"}


@dataclass
class Scan4D:
    """A 4D-STEM data set read lazily: ``read(a, b)`` gives patterns a…b−1 as (n, k_x, k_y) float32."""

    path: str
    shape: tuple[int, int, int, int]
    dtype: np.dtype
    calibration: dict = field(default_factory=dict)  # k_pixel_invA, energy_eV, semiangle_mrad when known
    _array: object = None
    _file: object = None

    @property
    def scan_shape(self) -> tuple[int, int]:
        return self.shape[:2]

    @property
    def pattern_shape(self) -> tuple[int, int]:
        return self.shape[2:]

    def __len__(self) -> int:
        return self.shape[0] * self.shape[1]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Patterns of flattened scan positions ``start``…``stop−1`` (row-major over the scan)."""
        stop = min(stop, len(self))
        ny = self.shape[1]
        out = np.empty((stop - start, *self.pattern_shape), np.float32)
        n = 0
        while start + n < stop:  # one contiguous row segment at a time: slicing stays lazy
            i, j = divmod(start + n, ny)
            m = min(ny - j, stop - start - n)
            out[n:n + m] = self._array[i, j:j + m]
            n += m
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "Scan4D":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _supported() -> str:
    return ", ".join(sorted({k for k in FORMATS}))


def _check_4d(shape, where: str) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise FourdError(f"{where}: expected 4D data (scan_x, scan_y, k_x, k_y), got shape {tuple(shape)}")
    return tuple(int(s) for s in shape)


def open_4d(spec: str | Path) -> Scan4D:
    """Open ``FILE.npy``, ``FILE.h5[:/dataset/path]``; one clear line for anything else."""
    spec = str(spec)
    path, _, inner = spec.partition(":") if ".h" in spec.split(":")[0].lower() else (spec, "", "")
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise FourdError(f"{p}: unknown 4D-STEM format {suffix or '(no extension)'!r}; supported: {_supported()}")
    if not p.exists():
        raise FourdError(f"{p} not found")
    if suffix == ".npy":
        try:
            arr = np.load(p, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise FourdError(f"{p}: not a readable .npy file ({exc})") from None
        return Scan4D(str(p), _check_4d(arr.shape, str(p)), arr.dtype, {}, arr)
    return _open_hdf5(p, inner)


def _open_hdf5(p: Path, inner: str) -> Scan4D:
    import h5py

    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise FourdError(f"{p}: not a readable HDF5 file ({exc})") from None
    try:
        if inner:
            if inner not in f or not isinstance(f[inner], h5py.Dataset):
                raise FourdError(f"{p}: no dataset {inner!r} in the file")
            ds = f[inner]
        else:
            found = []
            f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim == 4
                         else None)
            if len(found) != 1:
                what = "no 4D dataset" if not found else f"several 4D datasets ({', '.join(found[:4])})"
                raise FourdError(f"{p}: {what}; name one as {p}:/path/to/dataset")
            ds = f[found[0]]
        shape = _check_4d(ds.shape, f"{p}:{ds.name}")
        cal = {k: float(ds.attrs[k]) for k in ("k_pixel_invA", "energy_eV", "semiangle_mrad") if k in ds.attrs}
        return Scan4D(f"{p}:{ds.name}", shape, ds.dtype, cal, ds, f)
    except BaseException:
        f.close()
        raise
