"""The result file of ``fourdcrystal predict`` (HDF5): its layout, its write protocol and resume.

* ``/model`` (and ``/baseline``): Bragg vectors of every scan position as flat arrays
  ``qx_invA``, ``qy_invA`` (Å⁻¹ from the zero beam, along detector axes 0 and 1),
  ``intensity`` (model: V_g relative to the zero beam; baseline: correlation value), and for the
  model ``qz_invA`` at the peak; position p's vectors are rows ``offsets[p]:offsets[p+1]``
  (py4DSTEM's ragged layout). ``count`` is the per-position number, ``bragg_vector_map`` the
  intensity-weighted histogram of all vectors on the method's grid, whose pixel size (Å⁻¹) is the
  group's ``k_sampling_invA`` (the baseline runs on the detector's pixels, the model on its own
  grid); optional full ``vg``/``qz`` maps; with ``--tilt``, ``tilt_mrad`` and ``tilt_sigma_mrad``
  (scan_x, scan_y, 2): the crystal tilt fitted to the method's vectors and its standard error
  (:mod:`fourdcrystal.detection.tilt`; units and convention in their attributes);
* ``/virtual_bf`` (scan_x, scan_y), ``/mean_pattern`` (the mean resampled input), ``/usable_mask``;
* attributes: calibration, centre, probe source, model card sha256, config, software, timings.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import FourdError
from .readers import row_segments

log = logging.getLogger("fourdcrystal")
SCHEMA = "fourdcrystal.predictions/1"

VECTOR_FIELDS = {"model": ("qx_invA", "qy_invA", "intensity", "qz_invA"),
                  "baseline": ("qx_invA", "qy_invA", "intensity")}


def write_error(exc: BaseException) -> str | None:
    """The errno text of a failed write (h5py puts the errno in its message), or None for other errors."""
    import errno as errno_mod
    import re

    code = getattr(exc, "errno", None)
    if code is None:
        m = re.search(r"errno = (\d+)", str(exc))
        code = int(m.group(1)) if m else None
    if code in (errno_mod.ENOSPC, errno_mod.EDQUOT, errno_mod.EROFS, errno_mod.EACCES, errno_mod.EPERM, errno_mod.EIO,
                errno_mod.EFBIG):
        return f"{os.strerror(code)} (errno {code})"
    return None


def estimate_output_bytes(positions: int, grid_shape, methods, save_maps: bool, vectors_per_position: int = 200) -> int:
    """A generous estimate of the result file's size, for the free-space check before any work."""
    hw = int(np.prod(grid_shape))
    size = positions * 4 + hw + 2 * hw * 8 + hw * 4 + 1_000_000  # bf, mask, running sums, mean, HDF5 + PNG
    for m in methods:
        chunks = -(-positions * vectors_per_position // VECTOR_CHUNK)  # vectors are stored in whole chunks
        size += (positions + 1) * 8 + positions * 4 + 2 * hw * 8 + hw * 4
        size += len(VECTOR_FIELDS[m]) * chunks * VECTOR_CHUNK * 4
    if save_maps:
        size += positions * hw * 2 * 2
    return size


_BROKEN_FILES: list = []
VECTOR_CHUNK = 65536  # elements per HDF5 storage chunk of a vector field


def _exit_without_hdf5_cleanup() -> None:
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)


class ResultFile:
    """The partial HDF5 result: created or reopened for resume, appended chunk by chunk.

    Commit protocol: a chunk's rows are written first, its running sums into the spare of two
    slots, then one attribute ``state`` = {positions_done, slot} marks it done. A kill before
    that attribute leaves the previous state intact; a resume truncates what lies beyond it.
    """

    def __init__(self, path: Path, fingerprint: str, attrs: dict, scan_shape, model_shape, methods, save_maps: bool,
                 usable: np.ndarray, tilt: tuple = (), qz: bool = True, grids: dict | None = None,
                 tilt_model: str | None = None):
        """``grids``: per method, ``(shape, k_sampling_invA)`` of the grid its vectors were found on (the
        Bragg vector map's shape); a method not in it uses the model's grid, ``model_shape``."""
        import h5py

        self.path = path
        self.scan_shape = tuple(scan_shape)
        self.n = int(np.prod(scan_shape))
        self.methods = methods
        # the model's q_z per vector only when asked for (a model without q_z skill writes none)
        self.fields = {m: tuple(n for n in VECTOR_FIELDS[m] if qz or n != "qz_invA") for m in methods}
        self.f = None
        if path.exists():
            try:
                f = h5py.File(path, "r+")
            except OSError:
                log.warning("%s is damaged (the run was killed while writing); starting again", path)
                path.unlink()
            else:
                found = f.attrs.get("fingerprint")
                if found == fingerprint and "state" in f.attrs:
                    self.f = f
                    self._truncate()
                    return
                f.close()
                if found is not None and found != fingerprint:
                    raise FourdError(f"{path} holds an unfinished run with other settings (data, model, calibration "
                                     f"or options differ); set `overwrite` to start again")
                log.warning("%s was never finished being set up (the run was stopped); starting again", path)
                path.unlink()
        self.f = f = h5py.File(path, "w")
        try:
            for k, v in attrs.items():
                f.attrs[k] = v
            # fixed-size datasets written in full now (HDF5 would allocate them at their first write): a run
            # that passed the free-space check grows only by its vectors afterwards
            f.create_dataset("virtual_bf", data=np.zeros(self.scan_shape, "f4"))
            f.create_dataset("usable_mask", data=usable.astype(np.uint8))
            f.create_dataset("sum_pattern", data=np.zeros((2, *model_shape), "f8"))
            for m in methods:
                g = f.create_group(m)
                g.create_dataset("offsets", data=np.zeros(self.n + 1, "i8"))
                g.create_dataset("count", data=np.zeros(self.scan_shape, "i4"))
                for name in self.fields[m]:
                    g.create_dataset(name, shape=(0,), maxshape=(None,), dtype="f4", chunks=(VECTOR_CHUNK,))
                shape, dk = (grids or {}).get(m, (model_shape, attrs.get("model_k_sampling_invA")))
                g.create_dataset("bragg_vector_map_slots", data=np.zeros((2, *shape), "f8"))
                if dk is not None:
                    g.attrs["k_sampling_invA"] = list(dk)
            if tilt:  # the crystal tilt (θx, θy) per position and its standard error of the methods in ``tilt``, mrad
                from ..detection.tilt import TILT_CONVENTION

                for m in tilt:
                    laue = ("Laue-circle fit to the Friedel pairs of this method's vectors (fourdcrystal.detection."
                            "tilt.laue_tilt); standard error: the fit's own and the tuned floor")
                    how = ("the model's q_z at its vectors, fitted per position (q_z = −θ·g, lattice.fit_tilt); "
                           "standard error: the card's test rms error per component at the nearest dose"
                           if m == "model" and tilt_model == "qz" else
                           "the inverse-variance mean (tilt.combine_tilts) of the model's q_z tilt (standard error: "
                           "TiltSettings.qz_sigma_mrad) and the " + laue
                           if m == "model" and tilt_model == "combined" else
                           "the learned tilt read (tilt.learned_tilt, weights data/tilt-read.json) of the Friedel pairs "
                           "of this method's vectors; standard error: the reader's least-squares error, scaled to 68 % "
                           "coverage on its validation split" if m == "model" and tilt_model == "learned" else laue)
                    for name, what in (("tilt_mrad", "crystal tilt (θx, θy)"),
                                       ("tilt_sigma_mrad", "standard error of the crystal tilt (σx, σy)")):
                        d = f[m].create_dataset(name, data=np.full((*self.scan_shape, 2), np.nan, "f4"))
                        d.attrs.update(units="mrad", quantity=what, convention=TILT_CONVENTION,
                                       method=how + "; NaN: the fit failed")
            if save_maps:
                for name in ("vg", "qz"):
                    f["model"].create_dataset(name, shape=(*self.scan_shape, *model_shape), dtype="f2",
                                              chunks=(1, 1, *model_shape), compression="gzip", compression_opts=1)
            self._set_state(0, 0)
            f.attrs["fingerprint"] = fingerprint  # last: a partial with a fingerprint is a complete set-up
            f.flush()
        except (OSError, RuntimeError):
            self.broken = True
            self.close()
            raise

    @property
    def state(self) -> dict:
        return json.loads(self.f.attrs["state"])

    def _set_state(self, done: int, slot: int) -> None:
        self.f.attrs["state"] = json.dumps({"positions_done": int(done), "slot": int(slot)})
        self.f.flush()

    def _truncate(self) -> None:
        done = self.state["positions_done"]
        for m in self.methods:
            end = int(self.f[m]["offsets"][done])
            for name in self.fields[m]:
                self.f[m][name].resize((end,))

    def _rows(self, ds, start: int, values: np.ndarray) -> None:
        """Write per-position ``values`` (n, …) at flat positions start… of a (scan_x, scan_y, …) dataset."""
        for i, j, k, m in row_segments(start, len(values), self.scan_shape[1]):
            ds[i, j:j + m] = values[k:k + m]

    def append(self, start: int, chunk: dict) -> None:
        f, st = self.f, self.state
        if start != st["positions_done"]:
            raise RuntimeError(f"chunk at {start} written out of order (done: {st['positions_done']})")
        n, new = chunk["n"], 1 - st["slot"]
        self._rows(f["virtual_bf"], start, chunk["virtual_bf"])
        f["sum_pattern"][new] = f["sum_pattern"][st["slot"]] + chunk["sum_pattern"]
        for m in self.methods:
            g, res = f[m], chunk[m]
            end = int(g["offsets"][start])
            total = int(res["count"].sum())
            for name in self.fields[m]:
                g[name].resize((end + total,))
                g[name][end:end + total] = res[name]
            g["offsets"][start + 1:start + n + 1] = end + np.cumsum(res["count"])
            self._rows(g["count"], start, res["count"])
            g["bragg_vector_map_slots"][new] = g["bragg_vector_map_slots"][st["slot"]] + res["bragg_vector_map"]
        for name, values in chunk.get("maps", {}).items():
            self._rows(f["model"][name], start, values)
        for m in self.methods:
            for name in ("tilt_mrad", "tilt_sigma_mrad"):
                if name in chunk[m] and name in f[m]:
                    self._rows(f[m][name], start, chunk[m][name])
        self._set_state(start + n, new)

    def live(self) -> dict:
        """What the file holds so far, without changing it: positions done, the virtual bright field (NaN where not
        yet processed) and, per method, what :meth:`finish` gives (counts, Bragg vector map so far, vectors)."""
        f, st = self.f, self.state
        done = st["positions_done"]
        vbf = f["virtual_bf"][()].astype(float).ravel()
        vbf[done:] = np.nan
        out = {"positions_done": done, "virtual_bf": vbf.reshape(self.scan_shape)}
        for m in self.methods:
            out[m] = self._method_summary(m, f[m]["bragg_vector_map_slots"][st["slot"]], done)
        return out

    def _method_summary(self, m: str, bragg_vector_map: np.ndarray, done: int) -> dict:
        g = self.f[m]
        out = {"count": g["count"][()], "bragg_vector_map": bragg_vector_map, "vectors": int(g["offsets"][done])}
        if "k_sampling_invA" in g.attrs:
            out["k_sampling_invA"] = [float(v) for v in g.attrs["k_sampling_invA"]]
        return out

    def finish(self, final_attrs: dict) -> dict:
        """Means and maps from the running sums; returns arrays for the summary figure."""
        f, slot = self.f, self.state["slot"]
        f.create_dataset("mean_pattern", data=(f["sum_pattern"][slot] / max(self.n, 1)).astype("f4"))
        del f["sum_pattern"]
        summary = {"virtual_bf": f["virtual_bf"][()], "mean_pattern": f["mean_pattern"][()]}
        for m in self.methods:
            g = f[m]
            g.create_dataset("bragg_vector_map", data=g["bragg_vector_map_slots"][slot].astype("f4"))
            del g["bragg_vector_map_slots"]
            summary[m] = self._method_summary(m, g["bragg_vector_map"][()], self.n)
        for k, v in final_attrs.items():
            f.attrs[k] = v
        f.attrs["complete"] = True
        return summary

    broken = False  # a write failed (disk full, ...): HDF5 must not be asked to flush or close this file

    def close(self) -> None:
        if self.f is not None:
            f, self.f = self.f, None
            if self.broken:
                # h5py's close() after a failed write segfaults inside HDF5, and so does HDF5's own clean-up
                # at exit; the handle is left open and the process leaves by os._exit (after its one-line
                # error and the lock's release): exit code 2, as for any error
                if not _BROKEN_FILES:
                    import atexit

                    atexit.register(_exit_without_hdf5_cleanup)
                _BROKEN_FILES.append(f)
                return
            f.close()
