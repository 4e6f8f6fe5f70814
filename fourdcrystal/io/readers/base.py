"""What every reader gives: :class:`Scan4D`, read in chunks of scan positions, and raw frames read with ``os.pread``."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import FourdError

INV_ANGSTROM = {"A^-1": 1.0, "Å^-1": 1.0, "1/A": 1.0, "1/Å": 1.0, "nm^-1": 0.1, "1/nm": 0.1}  # → Å⁻¹

def row_segments(start: int, n: int, columns: int):
    """Flat scan positions start…start+n−1 as contiguous pieces of scan rows: (row, column, k, m).

    Piece k…k+m−1 of the flat range is ``[row, column:column+m]`` of a (rows, columns, …) array.
    """
    k = 0
    while k < n:
        i, j = divmod(start + k, columns)
        m = min(columns - j, n - k)
        yield i, j, k, m
        k += m


@dataclass
class Scan4D:
    """A 4D-STEM data set read lazily: ``read(a, b)`` gives patterns a…b−1 as (n, k_x, k_y) float32."""

    spec: str
    shape: tuple[int, int, int, int]
    dtype: np.dtype
    calibration: dict = field(default_factory=dict)  # k_pixel_invA, energy_eV, semiangle_mrad when known
    format: str = ""
    _array: object = None  # anything sliced as [i, j0:j1] giving (m, k_x, k_y): memmap, h5py, dask
    _file: object = None
    notes: list = field(default_factory=list)  # what the reader found in the file but could not use, in words

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
        out = np.empty((max(stop - start, 0), *self.pattern_shape), np.float32)
        for i, j, k, m in row_segments(start, stop - start, self.shape[1]):  # slicing stays lazy
            out[k:k + m] = np.asarray(self._array[i, j:j + m])
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "Scan4D":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def file_fingerprint(path: str | Path, blocks: int = 16, block_size: int = 65536) -> dict:
    """Size, modification time and a sha256 of ``blocks`` evenly spaced blocks of a file.

    A resumed run compares it with the one it started with, so data changed in between (even by
    one pixel, where it falls in a sampled block; always when the size or the time stamp moved)
    is refused instead of mixed with the old results. Reading 1 MB costs milliseconds on a
    file of any size.
    """
    p = Path(path)
    st = p.stat()
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        if st.st_size <= blocks * block_size:
            h.update(fh.read())
        else:
            step = (st.st_size - block_size) // (blocks - 1)
            for k in range(blocks):
                fh.seek(k * step)
                h.update(fh.read(block_size))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_sampled": h.hexdigest()}


def check_4d(shape, where: str) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise FourdError(f"{where}: expected 4D data (scan_x, scan_y, k_x, k_y), got shape {tuple(shape)}")
    return tuple(int(s) for s in shape)


def split_spec(spec: str | Path) -> tuple[Path, str]:
    """``FILE.h5:/inner/path`` → (FILE.h5, "/inner/path"); a plain path → (path, "")."""
    spec = str(spec)
    m = re.match(r"^(.*?\.(?:h5|hdf5|hdf|emd)):(/.*)$", spec, flags=re.IGNORECASE)
    return (Path(m.group(1)), m.group(2)) if m else (Path(spec), "")


class RawFrames:
    """Frames stored back to back in a file (.npy payload, .mib), read with ``os.pread``.

    Unlike a memory map, nothing read stays mapped into the process, so its resident memory does
    not grow with the file; ``pread`` is safe from a read-ahead thread.
    """

    def __init__(self, path: Path, offset: int, frame: np.dtype, scan_shape, field: str | None = None,
                 flip_rows: bool = False):
        self.fd = os.open(path, os.O_RDONLY)
        self.offset, self.frame, self.cols = int(offset), frame, int(scan_shape[1])
        self.field, self.flip_rows = field, flip_rows

    def __getitem__(self, key) -> np.ndarray:
        i, js = key
        first, n = i * self.cols + js.start, js.stop - js.start
        buf = os.pread(self.fd, n * self.frame.itemsize, self.offset + first * self.frame.itemsize)
        arr = np.frombuffer(buf, dtype=self.frame, count=n)
        arr = arr[self.field] if self.field else arr
        return arr[..., ::-1, :] if self.flip_rows else arr

    def close(self) -> None:
        os.close(self.fd)
