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

import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import FourdError

FORMATS = {
    ".npy": "NumPy array (scan_x, scan_y, k_x, k_y)",
    ".h5": "HDF5 (FILE.h5:/path/to/4d/dataset) or EMD 1.0", ".hdf5": "HDF5 or EMD 1.0", ".hdf": "HDF5",
    ".emd": "EMD 1.0 (py4DSTEM)",
    ".mib": "Quantum Detectors Merlin",
}
# detector formats read through RosettaSciIO (optional): suffix → plugin module
RSCIIO = {".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".xml": "empad", ".blo": "blockfile",
          ".hspy": "hspy", ".tvips": "tvips", ".mrc": "mrc", ".ser": "tia"}
STACKED = ("tvips", "mrc")  # plugins that give a scan as a stack of frames: the scan shape comes from the caller
# formats RosettaSciIO has a reader for that cannot work beside abTEM, and why
UNREADABLE = {".zspy": "RosettaSciIO reads .zspy with zarr < 3, which abTEM 1.0.11 (zarr >= 3.1) rules out; "
                       "save the signal as .hspy"}
_HDF5 = (".h5", ".hdf5", ".hdf", ".emd")


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


def supported() -> str:
    """The file types :func:`open_4d` reads, for error messages and --help."""
    return ", ".join(sorted(FORMATS) + sorted(RSCIIO) + ["*_master.h5 (Arina)"])


def _check_4d(shape, where: str) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise FourdError(f"{where}: expected 4D data (scan_x, scan_y, k_x, k_y), got shape {tuple(shape)}")
    return tuple(int(s) for s in shape)


def split_spec(spec: str | Path) -> tuple[Path, str]:
    """``FILE.h5:/inner/path`` → (FILE.h5, "/inner/path"); a plain path → (path, "")."""
    spec = str(spec)
    m = re.match(r"^(.*?\.(?:h5|hdf5|hdf|emd)):(/.*)$", spec, flags=re.IGNORECASE)
    return (Path(m.group(1)), m.group(2)) if m else (Path(spec), "")


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
        raise FourdError(f"--scan-shape {scan_shape[0]}x{scan_shape[1]} contradicts {p}, whose scan is "
                         f"{shape[0]}x{shape[1]}; leave the option out for this file")
    return scan


def _open_any(p: Path, inner: str, suffix: str, scan_shape) -> Scan4D:
    if suffix == ".npy":
        try:
            arr = np.load(p, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise FourdError(f"{p}: not a readable .npy file ({exc})") from None
        shape = _check_4d(arr.shape, str(p))
        if not arr.flags.c_contiguous:  # Fortran order: stay with the memory map
            return Scan4D(str(p), shape, arr.dtype, {}, "npy", arr)
        frames = _RawFrames(p, arr.offset, np.dtype((arr.dtype, shape[2:])), shape[:2])
        return Scan4D(str(p), shape, arr.dtype, {}, "npy", frames, frames)
    if suffix == ".mib":
        return _open_mib(p, scan_shape)
    if suffix in RSCIIO or p.name.lower().endswith("_master.h5"):
        return _open_rsciio(p, "arina" if p.name.lower().endswith("_master.h5") else RSCIIO[suffix], scan_shape)
    return _open_hdf5(p, inner)


class _RawFrames:
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
                inner = _single(p, _find(f, lambda o: isinstance(o, h5py.Dataset) and o.ndim == 2), "2D dataset")
            return f[inner][()]
    except (OSError, ValueError, KeyError) as exc:
        raise FourdError(f"{spec}: unreadable ({exc})") from None


# -- HDF5 and EMD 1.0 -------------------------------------------------------------------------

def _open_hdf5(p: Path, inner: str) -> Scan4D:
    import h5py

    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise FourdError(f"{p}: not a readable HDF5 file ({exc})") from None
    try:
        if _attr(f.attrs, "emd_group_type") == "file":
            return _open_emd(p, f, inner)
        if p.suffix.lower() == ".emd":
            raise FourdError(f"{p}: not an EMD 1.0 file (no emd_group_type='file' on the root)")
        if inner:
            if inner not in f or not isinstance(f[inner], h5py.Dataset):
                raise FourdError(f"{p}: no dataset {inner!r} in the file")
            ds, fmt = f[inner], "hdf5"
        elif isinstance(f.get(FPD_DATA), h5py.Dataset) and _scan_axes(f[FPD_DATA].shape) is not None:
            ds, fmt = f[FPD_DATA], "fpd"  # the fpd package's Merlin layout, recognised by name
        else:
            found = _find(f, lambda o: isinstance(o, h5py.Dataset) and _scan_axes(o.shape) is not None)
            if len(found) > 1:
                listed = ", ".join(f"{n} {'×'.join(map(str, f[n].shape))}" for n in found[:6])
                raise FourdError(f"{p}: several 4D-STEM datasets ({listed}); name one as {p}:/path/to/it")
            ds, fmt = f[_single(p, found, "4D-STEM dataset (scan × scan × detector ≥ 16×16 px)")], "hdf5"
        axes = _scan_axes(ds.shape)
        if axes is None:
            _check_4d(ds.shape, f"{p}:{ds.name}")  # the one-line shape error
            raise FourdError(f"{p}:{ds.name}: shape {tuple(ds.shape)} is not a scan of detector frames")
        shape = tuple(int(ds.shape[a]) for a in axes)
        cal = {k: float(ds.attrs[k]) for k in ("k_pixel_invA", "energy_eV", "semiangle_mrad") if k in ds.attrs}
        notes: list[str] = []
        if fmt == "fpd":
            cal.update(_fpd_calibration(ds.parent, len(ds.shape), notes))
        array = ds if len(ds.shape) == 4 else _Squeezed(ds, axes)
        return Scan4D(f"{p}:{ds.name}", shape, ds.dtype, cal, fmt, array, f, notes)
    except BaseException:
        f.close()
        raise


FPD_DATA = "/fpd_expt/fpd_data/data"
INV_ANGSTROM = {"A^-1": 1.0, "Å^-1": 1.0, "1/A": 1.0, "1/Å": 1.0, "nm^-1": 0.1, "1/nm": 0.1}  # → Å⁻¹


def _scan_axes(shape) -> tuple[int, int, int, int] | None:
    """The axes (scan, scan, detector, detector) of an array that holds a 4D-STEM scan, or None.

    The last two axes are the detector (each ≥ 16 px, smaller arrays are metadata); singleton
    axes between the scan and the detector are dropped, innermost first, until four remain, so
    fpd's (scan_y, scan_x, 1, 256, 256) is a scan of 256² patterns and (2, 2, 1, 27) is not.
    """
    n = len(shape)
    if n < 4 or shape[-1] < 16 or shape[-2] < 16:
        return None
    keep = list(range(n - 2))
    for a in reversed(range(n - 2)):
        if len(keep) == 2:
            break
        if shape[a] == 1:
            keep.remove(a)
    if len(keep) != 2:
        return None
    return keep[0], keep[1], n - 2, n - 1


class _Squeezed:
    """An HDF5 dataset with singleton axes read as (scan_x, scan_y, k_x, k_y): ``[i, j0:j1]`` → (m, k_x, k_y)."""

    def __init__(self, ds, axes):
        self.ds, self.axes = ds, axes

    def __getitem__(self, key):
        i, js = key
        index = [0] * len(self.ds.shape)
        index[self.axes[0]], index[self.axes[1]] = i, js
        index[self.axes[2]] = index[self.axes[3]] = slice(None)
        return self.ds[tuple(index)]


def _fpd_calibration(group, ndim: int, notes: list) -> dict:
    """Detector pixel size from fpd's last two axis datasets (``dim4``/``dim5`` of 5D data) where they carry
    reciprocal-length units; otherwise a note saying the pixel size must come from the options."""
    cal: dict = {}
    steps = []
    for name in (f"dim{ndim - 1}", f"dim{ndim}"):
        dim = group.get(name)
        units = _attr(dim.attrs, "units") if dim is not None else None
        if dim is not None and units in INV_ANGSTROM and len(dim) >= 2:
            steps.append(float(dim[1] - dim[0]) * INV_ANGSTROM[units])
        elif dim is not None:
            notes.append(f"fpd axis {name} is in {units or 'no units'!s}, not a reciprocal length")
    if len(steps) == 2 and all(s > 0 for s in steps):
        cal["k_pixel_invA"] = float(np.mean(steps))
        if abs(steps[0] - steps[1]) > 1e-3 * steps[0]:
            notes.append(f"fpd detector axes have different pixel sizes {steps[0]:.5g}, {steps[1]:.5g} Å⁻¹; "
                         f"their mean is used")
    return cal


def _attr(attrs, key: str):
    v = attrs.get(key)
    return v.decode() if isinstance(v, bytes) else v


def _find(f, keep) -> list[str]:
    found: list[str] = []
    f.visititems(lambda name, obj: found.append("/" + name) if keep(obj) else None)
    return found


def _single(p: Path, found: list[str], what: str) -> str:
    if len(found) != 1:
        msg = f"no {what}" if not found else f"several {what}s ({', '.join(found[:4])})"
        raise FourdError(f"{p}: {msg}; name one as {p}:/path/to/it")
    return found[0]


def _open_emd(p: Path, f, inner: str) -> Scan4D:
    """EMD 1.0: array groups hold ``data`` and ``dim0…dimN``; py4DSTEM puts calibration in metadata."""
    import h5py

    major = int(np.asarray(f.attrs.get("version_major", -1)))
    if major != 1:
        raise FourdError(f"{p}: EMD version_major {major}, expected 1")

    def is_4d_array(obj) -> bool:
        return (isinstance(obj, h5py.Group) and _attr(obj.attrs, "emd_group_type") == "array"
                and "data" in obj and obj["data"].ndim == 4)

    if inner:
        if inner not in f or not is_4d_array(f[inner]):
            raise FourdError(f"{p}: {inner!r} is not a 4D EMD array group")
        group = f[inner]
    else:
        groups = _find(f, is_4d_array)
        cubes = [g for g in groups if _attr(f[g].attrs, "python_class") == "DataCube"]
        group = f[_single(p, cubes if len(cubes) == 1 else groups, "4D EMD array")]
    ds = group["data"]
    notes: list[str] = []
    cal = _emd_calibration(f, group, notes)
    return Scan4D(f"{p}:{group.name}", _check_4d(ds.shape, f"{p}:{group.name}"), ds.dtype, cal, "emd", ds, f, notes)


# py4DSTEM calibration fields that this reader reads, and ones it knows it does not need
_EMD_USED = {"Q_pixel_size", "Q_pixel_units", "R_pixel_size", "R_pixel_units", "QR_flip", "QR_rotation_degrees",
             "QR_rotation", "energy_eV", "semiangle_mrad", "_root_treepath", "_target_paths"}


def metadata_values(meta) -> dict:
    """The items of an emdfile ``Metadata`` group as Python values.

    emdfile writes numbers and booleans as scalar datasets, strings as variable-length strings,
    arrays as datasets, and lists of strings as a group (``type='list_of_strings'``) of
    numbered string datasets; other groups (nested metadata) are skipped.
    """
    import h5py

    out: dict = {}
    for key, item in meta.items():
        if isinstance(item, h5py.Dataset):
            v = item[()]
            if isinstance(v, bytes):
                v = v.decode()
            elif isinstance(v, np.ndarray) and v.ndim == 0:
                v = v.item()
            elif isinstance(v, np.generic):
                v = v.item()
            out[key] = v
        elif _attr(item.attrs, "type") == "list_of_strings":
            vals = [item[k][()] for k in sorted(item.keys(), key=lambda k: int(k) if k.isdigit() else k)]
            out[key] = [v.decode() if isinstance(v, bytes) else str(v) for v in vals]
    return out


def _emd_calibration(f, group, notes: list) -> dict:
    """Calibration of an EMD array group: pixel size in Å⁻¹ (and energy, semi-angle where a writer left
    them), from py4DSTEM's ``calibration`` metadata (the array's own first, then its root's), else from the
    array's ``dim2``. Real-space pixel size, ``QR_flip`` and the QR rotation are kept for the record (Bragg
    vectors stay in the detector frame); what cannot be used is said in ``notes``."""
    cal: dict = {}
    bundles = [group.get("metadatabundle")]
    root = group.file[group.name.split("/")[1]]
    bundles.append(root.get("metadatabundle"))
    unused: set = set()
    for bundle in bundles:
        meta = bundle.get("calibration") if bundle is not None else None
        if meta is None:
            continue
        values = metadata_values(meta)
        units = values.get("Q_pixel_units")
        if "k_pixel_invA" not in cal and "Q_pixel_size" in values:
            if units in INV_ANGSTROM and float(values["Q_pixel_size"]) > 0:
                cal["k_pixel_invA"] = float(values["Q_pixel_size"]) * INV_ANGSTROM[units]
            else:
                notes.append(f"calibration Q_pixel_size {values['Q_pixel_size']!r} in {units!r} is not a "
                             f"reciprocal length; give --k-pixel")
        for key, name in (("R_pixel_size", "r_pixel_size"), ("R_pixel_units", "r_pixel_units"),
                          ("QR_flip", "qr_flip"), ("QR_rotation_degrees", "qr_rotation_deg"),
                          ("energy_eV", "energy_eV"), ("semiangle_mrad", "semiangle_mrad")):
            if key in values and name not in cal:
                v = values[key]
                cal[name] = v if isinstance(v, (str, bool)) else float(v)
        unused |= set(values) - _EMD_USED
    if "k_pixel_invA" not in cal and "dim2" in group:
        dim = group["dim2"]
        units = _attr(dim.attrs, "units")
        if units in INV_ANGSTROM and len(dim) >= 2 and float(dim[1] - dim[0]) > 0:
            cal["k_pixel_invA"] = float(dim[1] - dim[0]) * INV_ANGSTROM[units]
    if unused:
        notes.append(f"calibration fields not used: {', '.join(sorted(unused))} (Bragg vectors are given in the "
                     f"detector frame, from the zero beam found in the data; distortions are not corrected)")
    if cal.get("qr_flip") or cal.get("qr_rotation_deg"):
        notes.append(f"QR_flip {cal.get('qr_flip', False)}, QR rotation {cal.get('qr_rotation_deg', 0):g}°: recorded "
                     f"in the output; vectors are in the detector frame")
    return cal


# -- Quantum Detectors Merlin .mib ------------------------------------------------------------

_MIB_DTYPES = {"U01": ">u1", "U08": ">u1", "U16": ">u2", "U32": ">u4"}


def _open_mib(p: Path, scan_shape: tuple[int, int] | None, growing: bool = False) -> Scan4D:
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
        frames_reader = _RawFrames(p, 0, frame, shape, field="data", flip_rows=True)
        return Scan4D(str(p), (*shape, ny, nx), frame["data"].base, {}, "mib", frames_reader, frames_reader, [])
    if size % frame.itemsize and scan_shape is None:
        raise FourdError(f"{p}: {frames} whole frames and a cut-off one: the file is truncated (an interrupted "
                         f"acquisition or copy); give --scan-shape ROWSxCOLS to read the whole frames")
    shape, from_hdr = _mib_scan_shape(p, frames, scan_shape)
    notes = []
    if scan_shape is None and not from_hdr:
        why = ("no .hdr beside it" if not p.with_suffix(".hdr").exists() else
               "its .hdr gives no scan shape (one frame per trigger)")
        notes.append(f"{why}: the scan shape {shape[0]}x{shape[1]} is a guess from the {frames} frames "
                     f"(square); give --scan-shape if the acquisition was not square or was cut short")
    # Merlin stores rows bottom-up: flipped like RosettaSciIO does
    frames_reader = _RawFrames(p, 0, frame, shape, field="data", flip_rows=True)
    return Scan4D(str(p), (*shape, ny, nx), frame["data"].base, {}, "mib", frames_reader, frames_reader, notes)


def _mib_hdr_frames(p: Path) -> tuple[int, int] | None:
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
    frames = _mib_hdr_frames(p)
    if frames is None or frames[1] <= 1:
        why = "no .hdr beside it" if not p.with_suffix(".hdr").exists() else "its .hdr gives no frames per line"
        raise FourdError(f"{p}: {why}, so the scan's shape is unknown while it is written; give --scan-shape "
                         f"ROWSxCOLS with --follow")
    total, width = frames
    return total // width, width


def _mib_scan_shape(p: Path, frames: int, scan_shape) -> tuple[tuple[int, int], bool]:
    """(rows, cols), and whether the .hdr gave them. A line-triggered acquisition's .hdr gives the frames per
    line ("Frames per Trigger"); one frame per trigger (frame triggering) says nothing of the scan's shape."""
    hint = "give the scan shape as --scan-shape ROWSxCOLS"
    from_hdr = False
    if scan_shape is None:
        hdr = p.with_suffix(".hdr")
        counted = _mib_hdr_frames(p)
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
        raise FourdError(f"{p}: a stack of {frames} frames with no scan shape; give it as --scan-shape ROWSxCOLS")
    return (side, side), [f"{p.suffix} files store a stack of frames: the scan shape {side}x{side} is a guess from "
                          f"the {frames} frames (square); give --scan-shape if the scan was not square"]


def _open_rsciio(p: Path, plugin: str, scan_shape=None) -> Scan4D:
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
    return Scan4D(str(p), _check_4d(data.shape, str(p)), np.dtype(data.dtype), cal, f"rsciio:{plugin}", data,
                  notes=notes)


# -- files still being written (predict --follow) ---------------------------------------------------------------

FOLLOW_SUFFIXES = (".mib", ".h5", ".hdf5", ".hdf")  # what open_growing reads


def check_followable(path: Path) -> None:
    """One line unless ``path`` is a format :func:`open_growing` reads (decided by its name, before it exists)."""
    if path.suffix.lower() not in FOLLOW_SUFFIXES:
        raise FourdError(f"{path}: --follow reads Merlin .mib and HDF5 written in SWMR mode, not "
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
        scan = _open_mib(p, scan_shape, growing=True)
        frame_bytes = scan._array.frame.itemsize
        return scan, lambda: min(p.stat().st_size // frame_bytes, len(scan))
    return _open_swmr(p, inner, scan_shape)


def _open_swmr(p: Path, inner: str, scan_shape) -> tuple[Scan4D, Callable[[], int]]:
    import h5py

    try:
        f = h5py.File(p, "r", libver="latest", swmr=True)
    except OSError as exc:
        raise FourdError(f"{p}: not an HDF5 file open for SWMR reading ({exc}); --follow needs the writer to use "
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
            ds = f[_single(p, _find(f, growing), "4D dataset (rows, columns, detector, detector) for --follow")]
        if len(ds.shape) != 4:
            raise FourdError(f"{p}:{ds.name}: shape {tuple(ds.shape)}; --follow needs a 4D dataset (rows, columns, "
                             f"detector, detector) that grows along its rows")
        rows = ds.maxshape[0] if scan_shape is None else int(scan_shape[0])
        if rows is None:
            raise FourdError(f"{p}:{ds.name}: its rows are unlimited (maxshape None), so the scan's size is not in "
                             f"the file; give it as --scan-shape ROWSxCOLS")
        cols = int(ds.shape[1])
        if scan_shape is not None and int(scan_shape[1]) != cols:
            raise FourdError(f"--scan-shape {scan_shape[0]}x{scan_shape[1]} contradicts {p}:{ds.name}, whose rows "
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
