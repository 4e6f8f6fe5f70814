"""HDF5, EMD 1.0 (py4DSTEM / emdfile) and fpd HDF5."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import FourdError
from .base import INV_ANGSTROM, Scan4D, check_4d

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".emd")


# -- HDF5 and EMD 1.0 -------------------------------------------------------------------------

def open_hdf5(p: Path, inner: str) -> Scan4D:
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
            found = find_objects(f, lambda o: isinstance(o, h5py.Dataset) and _scan_axes(o.shape) is not None)
            if len(found) > 1:
                listed = ", ".join(f"{n} {'×'.join(map(str, f[n].shape))}" for n in found[:6])
                raise FourdError(f"{p}: several 4D-STEM datasets ({listed}); name one as {p}:/path/to/it")
            ds, fmt = f[single(p, found, "4D-STEM dataset (scan × scan × detector ≥ 16×16 px)")], "hdf5"
        axes = _scan_axes(ds.shape)
        if axes is None:
            check_4d(ds.shape, f"{p}:{ds.name}")  # the one-line shape error
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


def find_objects(f, keep) -> list[str]:
    found: list[str] = []
    f.visititems(lambda name, obj: found.append("/" + name) if keep(obj) else None)
    return found


def single(p: Path, found: list[str], what: str) -> str:
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
        groups = find_objects(f, is_4d_array)
        cubes = [g for g in groups if _attr(f[g].attrs, "python_class") == "DataCube"]
        group = f[single(p, cubes if len(cubes) == 1 else groups, "4D EMD array")]
    ds = group["data"]
    notes: list[str] = []
    cal = _emd_calibration(f, group, notes)
    return Scan4D(f"{p}:{group.name}", check_4d(ds.shape, f"{p}:{group.name}"), ds.dtype, cal, "emd", ds, f, notes)


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
                             f"reciprocal length; give `k_pixel_invA`")
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
