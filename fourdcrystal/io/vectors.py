"""Bragg vector files: read ours (``predict``'s HDF5) and py4DSTEM's; write py4DSTEM's.

py4DSTEM's BraggVectors on disk (EMD 1.0, as ``py4DSTEM.save`` 0.14 writes it and
``py4DSTEM.read`` loads it; layout checked against a file py4DSTEM wrote,
``tests/data/py4dstem_braggvectors.h5``):

* root group ``<name>_root`` (``emd_group_type='root'``) in a file whose root attributes say
  ``emd_group_type='file'``, ``version_major=1``, ``version_minor=0``;
* ``<name>_root/<name>``: ``emd_group_type='custom'``, ``python_class='BraggVectors'``, holding
  ``_v_uncal`` (``emd_group_type='custom_pointlistarray'``), whose ``data`` is a scan-shaped
  dataset of variable-length records (qx, qy, intensity) as float64, in *detector pixels*,
  qx along detector axis 0, and ``metadatabundle/_braggvectors_shape`` with ``Qshape`` and
  ``Rshape``;
* ``<name>_root/metadatabundle/calibration`` (``python_class='Calibration'``): ``Q_pixel_size``,
  ``Q_pixel_units``, ``R_pixel_size``, ``R_pixel_units``, ``QR_flip`` and the origin
  ``qx0``/``qy0`` (scalars or scan-shaped arrays; the export writes arrays, as py4DSTEM's origin steps
  do), each a dataset with a ``type`` attribute.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FourdError
from .readers import INV_ANGSTROM

PREDICTIONS_SCHEMA = "fourdcrystal.predictions/1"


@dataclass
class VectorSet:
    """Bragg vectors of a scan: position p's vectors are rows ``offsets[p]:offsets[p+1]``.

    ``q`` (n, 2) from the zero beam along detector axes 0 and 1, in ``units`` ("Å⁻¹" or
    "px"); ``intensity`` (n,); ``bin_width`` a natural histogram bin (the grid's pixel size).
    """

    scan_shape: tuple[int, int]
    offsets: np.ndarray
    q: np.ndarray
    intensity: np.ndarray
    units: str
    bin_width: float
    source: str
    method: str
    attrs: dict = field(default_factory=dict)
    tilt_mrad: np.ndarray | None = None  # (scan_x, scan_y, 2) crystal tilt per position (predict --tilt), mrad
    tilt_sigma_mrad: np.ndarray | None = None  # its standard error, mrad

    def position(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.offsets[p]), int(self.offsets[p + 1])
        return self.q[a:b], self.intensity[a:b]

    @property
    def positions(self) -> int:
        return int(self.scan_shape[0] * self.scan_shape[1])


def read_vectors(path: str | Path, method: str | None = None) -> VectorSet:
    """Read a ``predict`` result (``method`` model | baseline; auto or None: the method predict chose, its
    ``method`` attribute, else model) or a py4DSTEM BraggVectors file."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise FourdError(f"vector file {p} not found")
    try:
        f = h5py.File(p, "r")
    except OSError:
        raise FourdError(f"{p}: not an HDF5 file; expected Bragg vectors from fourdcrystal predict or a "
                         f"py4DSTEM BraggVectors file") from None
    with f:
        if f.attrs.get("schema") == PREDICTIONS_SCHEMA:
            if method in (None, "auto"):
                method = str(f.attrs.get("method", "model"))
            return _read_ours(p, f, method)
        found = []
        f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Group)
                     and o.attrs.get("python_class") in ("BraggVectors", b"BraggVectors") else None)
        if found:
            if method not in (None, "auto", "model"):
                raise FourdError(f"{p}: a py4DSTEM BraggVectors file holds one set of vectors; "
                                 f"`method` {method} applies to fourdcrystal predict results only")
            if len(found) > 1:
                raise FourdError(f"{p}: several BraggVectors groups ({', '.join(found[:4])})")
            return _read_py4dstem(p, f, found[0])
    raise FourdError(f"{p}: no Bragg vectors in it; expected the output of fourdcrystal predict or a py4DSTEM "
                     f"BraggVectors file")


def _read_ours(p: Path, f, method: str) -> VectorSet:
    if not f.attrs.get("complete", False):
        raise FourdError(f"{p}: an unfinished predict run; rerun predict to complete it")
    if method not in f:
        have = [m for m in ("model", "baseline") if m in f]
        hint = " (run predict with `baseline` set)" if method == "baseline" else ""
        raise FourdError(f"{p}: no {method!r} vectors{hint}; the file holds {', '.join(have) or 'none'}")
    g = f[method]
    scan = tuple(int(v) for v in f.attrs["scan_shape"])
    offsets = g["offsets"][()]
    q = np.stack([g["qx_invA"][()], g["qy_invA"][()]], axis=1).astype(np.float64)
    # the grid this method's vectors were found on (older files: the model's grid for both methods)
    k = np.asarray(g.attrs.get("k_sampling_invA", f.attrs.get("model_k_sampling_invA", [0.02, 0.02])), float)
    attrs = {"calibration": json.loads(f.attrs.get("calibration", "{}")), "data": str(f.attrs.get("data", "")),
             "centre_px": [float(v) for v in f.attrs.get("centre_px", [np.nan, np.nan])],
             "pattern_shape": [int(v) for v in f.attrs.get("pattern_shape", [0, 0])],
             "file_calibration": json.loads(f.attrs.get("file_calibration", "{}") or "{}")}
    tilt = {name: g[name][()].astype(np.float64) if name in g else None for name in ("tilt_mrad", "tilt_sigma_mrad")}
    return VectorSet(scan, offsets, q, g["intensity"][()].astype(np.float64), "Å⁻¹", float(np.min(k)), str(p),
                     method, attrs, **tilt)


def _scalar(group, name: str, default=None):
    if name not in group:
        return default
    v = group[name][()]
    return v.decode() if isinstance(v, bytes) else v


def _read_py4dstem(p: Path, f, name: str) -> VectorSet:
    g = f[name]
    if "_v_uncal" not in g or "data" not in g["_v_uncal"]:
        raise FourdError(f"{p}:{name}: a BraggVectors group without _v_uncal/data")
    data = g["_v_uncal/data"]
    scan = tuple(int(v) for v in data.shape)
    if len(scan) != 2:
        raise FourdError(f"{p}:{name}: _v_uncal has shape {scan}; expected a 2D scan")
    cal = None
    root = f[name.split("/")[0]]
    if "metadatabundle/calibration" in root:
        cal = root["metadatabundle/calibration"]
    counts = np.zeros(scan[0] * scan[1], np.int64)
    chunks, flat = [], data[()].reshape(-1)
    for i, rec in enumerate(flat):
        counts[i] = len(rec)
        chunks.append(np.stack([rec["qx"], rec["qy"], rec["intensity"]], axis=1) if len(rec) else np.zeros((0, 3)))
    arr = np.concatenate(chunks) if chunks else np.zeros((0, 3))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    qx0 = _scalar(cal, "qx0") if cal is not None else None
    qy0 = _scalar(cal, "qy0") if cal is not None else None
    if qx0 is None or qy0 is None:
        raise FourdError(f"{p}: the BraggVectors calibration has no origin (qx0, qy0); set it in py4DSTEM "
                         f"(calibration.set_origin) and save again")
    # the origin may be one value or one per scan position
    ox = np.broadcast_to(np.asarray(qx0, float), scan).reshape(-1)
    oy = np.broadcast_to(np.asarray(qy0, float), scan).reshape(-1)
    per = np.repeat(np.arange(len(counts)), counts)
    q = arr[:, :2] - np.stack([ox[per], oy[per]], axis=1)
    size = _scalar(cal, "Q_pixel_size", 1.0)
    units = str(_scalar(cal, "Q_pixel_units", "pixels"))
    if units in INV_ANGSTROM and size and np.isfinite(size) and size > 0:
        q = q * float(size) * INV_ANGSTROM[units]
        unit, width = "Å⁻¹", float(size) * INV_ANGSTROM[units]
    else:
        unit, width = "px", 1.0
    attrs = {"py4dstem_group": name, "Q_pixel_size": float(size or 1.0), "Q_pixel_units": units,
             "R_pixel_size": _scalar(cal, "R_pixel_size", None) if cal is not None else None,
             "R_pixel_units": str(_scalar(cal, "R_pixel_units", "pixels")) if cal is not None else "pixels"}
    method = "py4dstem"
    tilt = {}
    if "metadatabundle/fourdcrystal" in g and unit == "Å⁻¹":  # exported by fourdcrystal: its method and grid
        ours = g["metadatabundle/fourdcrystal"]
        made_by, bin_width = _scalar(ours, "method"), _scalar(ours, "bin_width_invA")
        if made_by in ("model", "baseline") and isinstance(bin_width, (float, np.floating)) and bin_width > 0:
            method, width = str(made_by), float(bin_width)
        if all(k in ours for k in ("tilt_x_mrad", "tilt_y_mrad", "tilt_sigma_x_mrad", "tilt_sigma_y_mrad")):
            tilt = {"tilt_mrad": np.stack([ours["tilt_x_mrad"][()], ours["tilt_y_mrad"][()]], -1),
                    "tilt_sigma_mrad": np.stack([ours["tilt_sigma_x_mrad"][()], ours["tilt_sigma_y_mrad"][()]], -1)}
    return VectorSet(scan, offsets, q, arr[:, 2].copy(), unit, width, str(p), method, attrs, **tilt)


# --- writing py4DSTEM BraggVectors ---------------------------------------------------------------


def write_py4dstem_braggvectors(path: str | Path, vectors: VectorSet, q_shape: tuple[int, int],
                                q_pixel_invA: float, origin_px: tuple[float, float], r_pixel_size: float = 1.0,
                                r_pixel_units: str = "pixels", name: str = "braggvectors") -> Path:
    """Write ``vectors`` (Å⁻¹ from the zero beam) as a py4DSTEM BraggVectors EMD 1.0 file.

    The raw vectors py4DSTEM stores are detector pixels: q / ``q_pixel_invA`` + ``origin_px``;
    the origin and pixel size go to the root calibration, so ``braggvectors.cal`` in py4DSTEM
    gives back the vectors in Å⁻¹.
    """
    import h5py

    if vectors.units != "Å⁻¹":
        raise FourdError("only calibrated vectors (Å⁻¹) can be exported to py4DSTEM")
    import io

    rec = np.dtype([("qx", "<f8"), ("qy", "<f8"), ("intensity", "<f8")])
    vlen = h5py.vlen_dtype(rec)
    path = Path(path)
    # built in memory, then written with plain file I/O: HDF5 on a full disk fails inside h5py's object
    # clean-up and can take the process down (exit 139); a plain write fails with an OSError we can report
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        f.attrs.update({"emd_group_type": "file", "version_major": 1, "version_minor": 0,
                        "UUID": str(uuid.uuid4()), "authoring_program": "fourdcrystal", "authoring_user": ""})
        root = f.create_group(f"{name}_root")
        root.attrs.update({"emd_group_type": "root", "python_class": "Root"})
        g = root.create_group(name)
        g.attrs.update({"emd_group_type": "custom", "python_class": "BraggVectors"})
        pla = g.create_group("_v_uncal")
        pla.attrs.update({"emd_group_type": "custom_pointlistarray", "python_class": "PointListArray"})
        ds = pla.create_dataset("data", shape=vectors.scan_shape, dtype=vlen)
        for p in range(vectors.positions):
            q, inten = vectors.position(p)
            r = np.zeros(len(q), rec)
            r["qx"] = q[:, 0] / q_pixel_invA + origin_px[0]
            r["qy"] = q[:, 1] / q_pixel_invA + origin_px[1]
            r["intensity"] = inten
            ds[np.unravel_index(p, vectors.scan_shape)] = r
        shape_md = g.create_group("metadatabundle")
        shape_md.attrs["emd_group_type"] = "metadatabundle"
        md = shape_md.create_group("_braggvectors_shape")
        md.attrs.update({"emd_group_type": "metadata", "python_class": "Metadata"})
        for key, value in (("Qshape", q_shape), ("Rshape", vectors.scan_shape)):
            md.create_dataset(key, data=np.asarray(value, np.int64)).attrs["type"] = "tuple"
        # which of our methods made the vectors and the grid they were found on, as EMD metadata py4DSTEM keeps
        # beside the vectors: read back, the same vectors get the same strain fit as from the predict result
        ours = shape_md.create_group("fourdcrystal")
        ours.attrs.update({"emd_group_type": "metadata", "python_class": "Metadata"})
        ours.create_dataset("method", data=str(vectors.method), dtype=h5py.string_dtype()).attrs["type"] = "string"
        ours.create_dataset("bin_width_invA", data=float(vectors.bin_width)).attrs["type"] = "number"
        if vectors.tilt_mrad is not None:  # predict --tilt: the crystal tilt per position and its error, mrad
            from ..detection.tilt import TILT_CONVENTION

            for key, arr in (("tilt_x_mrad", vectors.tilt_mrad[..., 0]), ("tilt_y_mrad", vectors.tilt_mrad[..., 1]),
                             ("tilt_sigma_x_mrad", vectors.tilt_sigma_mrad[..., 0]),
                             ("tilt_sigma_y_mrad", vectors.tilt_sigma_mrad[..., 1])):
                ours.create_dataset(key, data=np.asarray(arr, np.float64)).attrs["type"] = "array"
            ours.create_dataset("tilt_convention", data=TILT_CONVENTION, dtype=h5py.string_dtype()).attrs[
                "type"] = "string"
        bundle = root.create_group("metadatabundle")
        bundle.attrs["emd_group_type"] = "metadatabundle"
        cal = bundle.create_group("calibration")
        cal.attrs.update({"emd_group_type": "metadata", "python_class": "Calibration"})
        strings = h5py.string_dtype()
        numbers = {"Q_pixel_size": float(q_pixel_invA), "R_pixel_size": float(r_pixel_size),
                   "qx0_mean": float(origin_px[0]), "qy0_mean": float(origin_px[1])}
        for key, value in numbers.items():
            cal.create_dataset(key, data=value).attrs["type"] = "number"
        # the origin per scan position, as py4DSTEM's own origin steps leave it (scan-shaped arrays): its strain
        # and orientation steps then run on our vectors without measure_origin/fit_origin, which would take the
        # brightest peak for the zero beam (wrong on thick crystals). predict found one zero beam for the scan.
        for key, value in (("qx0", origin_px[0]), ("qy0", origin_px[1]), ("qx0_shift", 0.0), ("qy0_shift", 0.0)):
            cal.create_dataset(key, data=np.full(vectors.scan_shape, float(value))).attrs["type"] = "array"
        for key, value in (("Q_pixel_units", "A^-1"), ("R_pixel_units", r_pixel_units), ("_root_treepath", "")):
            cal.create_dataset(key, data=value, dtype=strings).attrs["type"] = "string"
        cal.create_dataset("QR_flip", data=False).attrs["type"] = "bool"
        tp = cal.create_group("_target_paths")
        tp.attrs.update({"length": 1, "type": "list_of_strings"})
        tp.create_dataset("0", data=f"/{name}", dtype=strings)
    with open(path, "wb") as out:
        out.write(image.getbuffer())
        out.flush()
        os.fsync(out.fileno())
    return path
