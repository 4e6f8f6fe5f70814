"""`fourdcrystal predict`: a trained model over a 4D-STEM file, streamed in chunks of scan positions.

For each chunk: read the patterns (:mod:`fourdcrystal.io.readers`), take the virtual
bright-field signal, resample the patterns onto the model's grid (pixel size and q = 0 of the
model card, :mod:`fourdcrystal.calibration`), run the network with the vacuum probe, and find the
Bragg peaks of the predicted V_g. ``baseline=True`` also runs the classical detector
(:mod:`fourdcrystal.baseline`) on the same resampled patterns.

The result is one HDF5 file:

* ``/model`` (and ``/baseline``): Bragg vectors of every scan position as flat arrays
  ``qx_invA``, ``qy_invA`` (Å⁻¹ from the zero beam, along detector axes 0 and 1),
  ``intensity`` (model: V_g relative to the zero beam; baseline: correlation value), and for the
  model ``qz_invA`` at the peak; position p's vectors are rows ``offsets[p]:offsets[p+1]``
  (py4DSTEM's ragged layout). ``count`` is the per-position number, ``bragg_vector_map`` the
  intensity-weighted histogram of all vectors on the model grid; optional full ``vg``/``qz`` maps;
* ``/virtual_bf`` (scan_x, scan_y), ``/mean_pattern`` (the mean resampled input);
* attributes: calibration, centre, probe source, model card sha256, config, software, timings.

Work goes to ``RESULT.partial`` and becomes ``RESULT`` by a rename when every position is
done. A killed run resumes from the partial file: the positions it committed are not redone.
``scheduler`` spreads chunks over a dask.distributed cluster; the client alone writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .atomic import check_writable, output_lock
from .calibration import (Resampler, dead_lines, detector_grid_shape, disk_centre, disk_radius_px,
                          k_pixel_from_camera_length, synthesised_probe, usable_region)
from .detect import DetectionSettings, baseline_peaks, model_peaks, settings_from_card, with_threshold
from .errors import FourdError
from .io.readers import Scan4D, file_fingerprint, open_4d, read_2d, row_segments, split_spec
from .peaks import Peaks, to_reciprocal
from .progress import bar
from .simulation.optics import disk_radius_invA

log = logging.getLogger("fourdcrystal")
SCHEMA = "fourdcrystal.predictions/1"


@dataclass(frozen=True)
class PredictConfig:
    chunk_positions: int = 256  # scan positions read and processed together
    batch_size: int = 16  # patterns per network call
    min_relative: float | None = None  # model peaks: V_g threshold; None = the card's tuned value
    baseline: bool = False  # also run the classical detector
    settings: DetectionSettings | None = None  # both methods' peak settings; None = the card's (tuned) ones
    margin_disk_radii: float = 1.0  # no peaks closer than this many disk radii to where the data end
    max_peaks: int | None = None  # per pattern and method; None = the card's (400)
    save_maps: bool = False  # write the full predicted vg and qz (float16, scan × H × W each)
    device: str = "auto"


@dataclass(frozen=True)
class DataCalibration:
    """The detector's calibration and where each number came from (file or option)."""

    k_pixel_invA: float  # detector pixel size, Å⁻¹
    energy_eV: float | None
    semiangle_mrad: float | None
    sources: dict = field(default_factory=dict)


def resolve_calibration(data: str, from_file: dict, k_pixel_invA: float | None = None,
                        camera_length_mm: float | None = None, detector_pixel_um: float | None = None,
                        energy_eV: float | None = None, semiangle_mrad: float | None = None) -> DataCalibration:
    """Options win over the file; a missing pixel size is one line naming the options that give it."""
    sources = {}

    def positive(option, value):
        if not (value > 0 and np.isfinite(value)):
            raise FourdError(f"{option} must be a finite number > 0, got {value}")
        return float(value)

    def pick(key, option, value):
        if value is not None:
            sources[key] = option
            return positive(option, value)
        if key in from_file:
            sources[key] = "file"
            return positive(f"{data}: the file's {key}", from_file[key])
        return None

    energy = pick("energy_eV", "--energy", energy_eV)
    semiangle = pick("semiangle_mrad", "--semiangle", semiangle_mrad)
    if k_pixel_invA is None and camera_length_mm is not None:
        if detector_pixel_um is None or energy is None:
            raise FourdError("--camera-length needs --detector-pixel (µm) and the beam energy (--energy, eV)")
        positive("--camera-length", camera_length_mm)
        positive("--detector-pixel", detector_pixel_um)
        k_pixel_invA = k_pixel_from_camera_length(camera_length_mm, detector_pixel_um, energy)
        sources["k_pixel_invA"] = "--camera-length"
    k = pick("k_pixel_invA", "--k-pixel", k_pixel_invA) if "k_pixel_invA" not in sources else k_pixel_invA
    if k is None:
        raise FourdError(f"{data}: the file has no pixel size in Å⁻¹; give --k-pixel (Å⁻¹ per detector pixel), "
                         f"or --camera-length (mm) with --detector-pixel (µm) and --energy (eV)")
    return DataCalibration(float(k), energy, semiangle, sources)


def calibration_warnings(card: dict, cal: DataCalibration) -> list[str]:
    """Where the data lie outside what the model was trained on (the card's ranges, widened by 5 %)."""
    inp = card.get("input", {})
    ranges = inp.get("range", {})
    out = []
    for key, value, unit in (("energy_eV", cal.energy_eV, "eV"), ("semiangle_mrad", cal.semiangle_mrad, "mrad")):
        if value is None or key not in ranges and key not in inp:
            continue
        lo, hi = ranges.get(key) or (inp[key], inp[key])
        if not 0.95 * lo <= value <= 1.05 * hi:
            out.append(f"{key.split('_')[0]} {value:g} {unit} is outside the model's training range {lo:g}–{hi:g} {unit}")
    dk_model = float(np.max(inp.get("k_sampling_invA", [cal.k_pixel_invA])))
    if cal.k_pixel_invA > 1.5 * dk_model:
        out.append(f"detector pixels ({cal.k_pixel_invA:.4g} Å⁻¹) are coarser than the model's ({dk_model:.4g} Å⁻¹): "
                   f"patterns are interpolated up, and small disks lose detail")
    return out


def quality_note(card: dict) -> str | None:
    """A note when the card's own test evaluation has the model behind the classical baseline, or its q_z
    error no lower than that of predicting q_z = 0 (the label's mean |q_z|)."""
    ev = card.get("release", {}).get("test_evaluation", {})
    table = ev.get("by_dose_thick") or ev.get("by_dose")
    where = f"patterns ≥ {ev.get('thick_from_A', 0):g} Å thick" if ev.get("by_dose_thick") else "its test split"
    notes = []
    try:
        model_row, base = table["model"]["clean"], table["baseline"]["clean"]["f1"]
        f1 = model_row["f1"]
    except (KeyError, TypeError):
        return None
    if f1 < base:
        notes.append(f"model {card.get('name', '?')}: on {where} its Bragg-peak F1 is {f1:.2f}, below the classical "
                     f"baseline's {base:.2f} (see its card); add --baseline to get both")
    qz, qz0 = model_row.get("qz_mae_invA"), model_row.get("qz_mae_zero_invA")
    if qz is not None and qz0 and qz >= 0.9 * qz0:
        notes.append(f"model {card.get('name', '?')}: on {where} its q_z error ({qz:.4f} Å⁻¹) is not below that of "
                     f"predicting q_z = 0 ({qz0:.4f} Å⁻¹); its q_z values carry no information yet")
    return "; ".join(notes) or None


def _parse_region(text: str | None, scan_shape) -> tuple[int, int, int, int] | None:
    """``R0:R1,C0:C1`` (scan rows and columns, end exclusive) → (r0, r1, c0, c1)."""
    if text is None:
        return None
    try:
        rows, cols = text.split(",")
        r0, r1 = (int(v) for v in rows.split(":"))
        c0, c1 = (int(v) for v in cols.split(":"))
    except ValueError:
        raise FourdError(f"--vacuum {text!r}: expected scan rows and columns as R0:R1,C0:C1") from None
    if not (0 <= r0 < r1 <= scan_shape[0] and 0 <= c0 < c1 <= scan_shape[1]):
        raise FourdError(f"--vacuum {text!r} lies outside the {scan_shape[0]}×{scan_shape[1]} scan")
    return r0, r1, c0, c1


def _load_probe_file(path: str, pattern_shape) -> np.ndarray:
    try:
        arr = read_2d(path)
    except FourdError as exc:
        raise FourdError(f"--probe: {exc}") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 4:  # a vacuum scan: its mean pattern
        arr = arr.reshape(-1, *arr.shape[2:]).mean(0)
    if arr.shape != tuple(pattern_shape):
        raise FourdError(f"--probe {path} is {'×'.join(map(str, arr.shape))}, the patterns are "
                         f"{pattern_shape[0]}×{pattern_shape[1]}; the probe must come from the same detector")
    return arr


def _mean_pattern(scan: Scan4D, region=None, max_patterns: int = 256) -> np.ndarray:
    """Mean of up to ``max_patterns`` patterns spread evenly over the scan (or over ``region``)."""
    if region is None:
        idx = np.unique(np.linspace(0, len(scan) - 1, min(max_patterns, len(scan))).astype(int))
    else:
        r0, r1, c0, c1 = region
        idx = (np.arange(r0, r1)[:, None] * scan.shape[1] + np.arange(c0, c1)[None, :]).ravel()
    total = np.zeros(scan.pattern_shape, np.float64)
    for i in idx:
        total += scan.read(int(i), int(i) + 1)[0]
    return (total / len(idx)).astype(np.float32)


def _load_mask_file(path: str, pattern_shape) -> np.ndarray:
    """A detector mask: 2D, the detector's shape; nonzero marks pixels to ignore. Returns True where valid."""
    try:
        arr = np.asarray(read_2d(path))
    except FourdError as exc:
        raise FourdError(f"--mask: {exc}") from None
    if arr.shape != tuple(pattern_shape):
        raise FourdError(f"--mask {path} is {'×'.join(map(str, arr.shape))}, the patterns are "
                         f"{pattern_shape[0]}×{pattern_shape[1]}; the mask must come from the same detector")
    return ~(arr.astype(bool))


def prepare(scan: Scan4D, card: dict, cal: DataCalibration, probe: str | None = None, vacuum: str | None = None,
            centre_px: tuple[float, float] | None = None, mask: str | None = None,
            margin_disk_radii: float = 1.0) -> dict:
    """Everything a chunk worker needs besides the patterns: resampler, probe, masks.

    Probe: ``probe`` file (same detector), else the mean of the ``vacuum`` scan region, else an
    ideal aperture from energy and semi-angle. Centre of the data's zero beam: ``centre_px``
    (detector pixels), else the bright disk of the mean pattern. The model's grid holds the whole
    detector at the model's pixel size (sides rounded up to a multiple of the network's
    2^depth). Peaks are reported only in the usable region: model pixels fully on valid detector
    pixels (not in ``mask``, not in a dead row or column), at least ``margin_disk_radii`` disk radii
    from anything else.
    """
    dk_model = card["input"]["k_sampling_invA"]
    depth = int(card.get("architecture", {}).get("depth", 0))
    region = _parse_region(vacuum, scan.scan_shape)
    detector_valid = (_load_mask_file(mask, scan.pattern_shape) if mask is not None
                      else np.ones(scan.pattern_shape, bool))
    if probe is not None or region is not None:
        detector_probe = (_load_probe_file(probe, scan.pattern_shape) if probe is not None
                          else _mean_pattern(scan, region))
        r_px = disk_radius_px(detector_probe)
        if r_px < 1:
            raise FourdError(f"{'--probe ' + probe if probe else '--vacuum ' + vacuum}: no bright disk found "
                             f"(is it a vacuum pattern?)")
        source = f"file {probe}" if probe is not None else f"vacuum region {vacuum}"
    else:
        missing = [o for o, v in (("--energy", cal.energy_eV), ("--semiangle", cal.semiangle_mrad)) if v is None]
        if missing:
            raise FourdError(f"no vacuum probe: give --probe FILE or --vacuum R0:R1,C0:C1, or {' and '.join(missing)} "
                             f"to synthesise one")
        detector_probe = None
        r_px = disk_radius_invA(cal.semiangle_mrad, cal.energy_eV) / cal.k_pixel_invA
        source = f"synthesised aperture, {cal.semiangle_mrad:g} mrad at {cal.energy_eV:g} eV"
    mean = _mean_pattern(scan)
    if not np.isfinite(mean).all():
        raise FourdError(f"{scan.spec}: the data hold NaN or infinite values; mask or replace them first")
    if not mean.max() > 0:
        raise FourdError(f"{scan.spec}: the patterns are all zero or negative; expected counts or intensities")
    detector_valid &= ~dead_lines(mean)
    if centre_px is None:
        centre_px = disk_centre(np.where(detector_valid, mean, 0.0), r_px)
        centre_source = "bright disk of the mean pattern"
    else:
        if not all(0 <= c <= n - 1 for c, n in zip(centre_px, scan.pattern_shape)):
            raise FourdError(f"--centre {centre_px[0]:g},{centre_px[1]:g} lies outside the "
                             f"{scan.pattern_shape[0]}×{scan.pattern_shape[1]} detector")
        centre_source = "--centre"
    grid = detector_grid_shape(scan.pattern_shape, cal.k_pixel_invA, centre_px, dk_model, 2**depth)
    if detector_probe is not None:
        pc = disk_centre(detector_probe, r_px)
        probe_model = Resampler.build(grid, dk_model, scan.pattern_shape, cal.k_pixel_invA, pc)(detector_probe[None])[0]
    else:
        probe_model = synthesised_probe(grid, dk_model, cal.energy_eV, cal.semiangle_mrad)
    ii, jj = np.mgrid[:scan.pattern_shape[0], :scan.pattern_shape[1]]
    bf_mask = (ii - centre_px[0]) ** 2 + (jj - centre_px[1]) ** 2 <= (1.05 * r_px) ** 2
    resampler = Resampler.build(grid, dk_model, scan.pattern_shape, cal.k_pixel_invA, centre_px)
    radius_model_px = r_px * cal.k_pixel_invA / float(np.max(dk_model))
    usable = usable_region(resampler.coverage(detector_valid), margin_disk_radii * radius_model_px)
    if not usable.any():
        raise FourdError(f"{scan.spec}: no part of the detector is usable (all masked or dead, or the disks are "
                         f"as large as the detector)")
    return {"resampler": resampler, "probe": probe_model.astype(np.float32), "bf_mask": bf_mask,
            "detector_valid": detector_valid if not detector_valid.all() else None, "usable": usable,
            "grid_shape": list(grid), "centre_px": [float(c) for c in centre_px], "centre_source": centre_source,
            "probe_source": source, "bf_radius_px": float(r_px), "dead_pixels": int((~detector_valid).sum())}


class ChunkProcessor:
    """Raw detector patterns (n, K_x, K_y) → one chunk's results. Holds the model; built once per process."""

    def __init__(self, model, card: dict, prep: dict, config: PredictConfig):
        from .model.inference import Predictor

        self.predictor = Predictor(model, card, config.device, config.batch_size)
        self.dk = card["input"]["k_sampling_invA"]
        self.prep = prep
        self.config = config

    def __call__(self, raw: np.ndarray) -> dict:
        cfg, prep = self.config, self.prep
        t = defaultdict(float)
        t0 = time.perf_counter()
        vbf = (raw * prep["bf_mask"]).sum(axis=(1, 2)).astype(np.float32)
        if prep["detector_valid"] is not None:  # masked and dead pixels carry no signal into the network
            raw = raw * prep["detector_valid"]
        x = prep["resampler"](raw)
        t["resample"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        vg, qz = self.predictor(x, prep["probe"])
        t["model"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        shape = x.shape[-2:]
        out = {"n": len(raw), "virtual_bf": vbf, "sum_pattern": x.sum(0, dtype=np.float64),
               "model": self._vectors(model_peaks(vg, x, prep["probe"], cfg.settings, prep["usable"]), shape, qz)}
        t["model_peaks"] += time.perf_counter() - t0
        if cfg.baseline:
            t0 = time.perf_counter()
            out["baseline"] = self._vectors(baseline_peaks(x, prep["probe"], cfg.settings, prep["usable"]), shape)
            t["baseline"] += time.perf_counter() - t0
        if cfg.save_maps:
            out["maps"] = {"vg": vg.astype(np.float16), "qz": qz.astype(np.float16)}
        out["timing_s"] = dict(t)
        return out

    def _vectors(self, peaks: list, shape, qz: np.ndarray | None = None) -> dict:
        count = np.array([len(p) for p in peaks], np.int32)
        pos = np.concatenate([p.pos_px for p in peaks]) if count.sum() else np.zeros((0, 2))
        inten = np.concatenate([p.intensity for p in peaks]) if count.sum() else np.zeros(0)
        q = to_reciprocal(Peaks(pos, inten), shape, self.dk)
        ij = np.clip(np.rint(pos).astype(int), 0, [shape[0] - 1, shape[1] - 1])
        bvm = np.zeros(shape, np.float64)
        np.add.at(bvm, (ij[:, 0], ij[:, 1]), inten)
        out = {"count": count, "qx_invA": q[:, 0].astype(np.float32), "qy_invA": q[:, 1].astype(np.float32),
               "intensity": inten.astype(np.float32), "bragg_vector_map": bvm}
        if qz is not None:
            owner = np.repeat(np.arange(len(peaks)), count)
            out["qz_invA"] = qz[owner, ij[:, 0], ij[:, 1]].astype(np.float32)
        return out


_WORKER_CACHE: dict[str, ChunkProcessor] = {}


def _remote_chunk(job: dict, start: int, stop: int) -> dict:
    """A dask task: open the file on the worker, process positions start…stop−1 (model cached per worker)."""
    key = job["fingerprint"]
    if key not in _WORKER_CACHE:
        _WORKER_CACHE.clear()
        from .training.card import load_model

        _WORKER_CACHE[key] = ChunkProcessor(*load_model(job["model"]), job["prep"], job["config"])
    t0 = time.perf_counter()
    with open_4d(job["data"], job["scan_shape"]) as scan:
        raw = scan.read(start, stop)
    t_read = time.perf_counter() - t0
    out = _WORKER_CACHE[key](raw)
    out["timing_s"]["read"] = t_read
    return out


# -- the result file --------------------------------------------------------------------------

_VECTOR_FIELDS = {"model": ("qx_invA", "qy_invA", "intensity", "qz_invA"),
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
        chunks = -(-positions * vectors_per_position // _VECTOR_CHUNK)  # vectors are stored in whole chunks
        size += (positions + 1) * 8 + positions * 4 + 2 * hw * 8 + hw * 4
        size += len(_VECTOR_FIELDS[m]) * chunks * _VECTOR_CHUNK * 4
    if save_maps:
        size += positions * hw * 2 * 2
    return size


_BROKEN_FILES: list = []
_VECTOR_CHUNK = 65536  # elements per HDF5 storage chunk of a vector field


def _exit_without_hdf5_cleanup() -> None:
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)


class _Result:
    """The partial HDF5 result: created or reopened for resume, appended chunk by chunk.

    Commit protocol: a chunk's rows are written first, its running sums into the spare of two
    slots, then one attribute ``state`` = {positions_done, slot} marks it done. A kill before
    that attribute leaves the previous state intact; a resume truncates what lies beyond it.
    """

    def __init__(self, path: Path, fingerprint: str, attrs: dict, scan_shape, model_shape, methods, save_maps: bool,
                 usable: np.ndarray):
        import h5py

        self.path = path
        self.scan_shape = tuple(scan_shape)
        self.n = int(np.prod(scan_shape))
        self.methods = methods
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
                                     f"or options differ); pass --overwrite to start again")
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
                for name in _VECTOR_FIELDS[m]:
                    g.create_dataset(name, shape=(0,), maxshape=(None,), dtype="f4", chunks=(_VECTOR_CHUNK,))
                g.create_dataset("bragg_vector_map_slots", data=np.zeros((2, *model_shape), "f8"))
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
            for name in _VECTOR_FIELDS[m]:
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
            for name in _VECTOR_FIELDS[m]:
                g[name].resize((end + total,))
                g[name][end:end + total] = res[name]
            g["offsets"][start + 1:start + n + 1] = end + np.cumsum(res["count"])
            self._rows(g["count"], start, res["count"])
            g["bragg_vector_map_slots"][new] = g["bragg_vector_map_slots"][st["slot"]] + res["bragg_vector_map"]
        for name, values in chunk.get("maps", {}).items():
            self._rows(f["model"][name], start, values)
        self._set_state(start + n, new)

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
            summary[m] = {"count": g["count"][()], "bragg_vector_map": g["bragg_vector_map"][()],
                          "vectors": int(g["offsets"][self.n])}
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


def predict(model_path: str | Path | None, data: str, out: str | Path, config: PredictConfig = PredictConfig(),
            calibration: dict | None = None, probe: str | None = None, vacuum: str | None = None,
            centre_px: tuple[float, float] | None = None, scan_shape: tuple[int, int] | None = None,
            scheduler: str | None = None, overwrite: bool = False, mask: str | None = None) -> dict:
    """Run a model (and optionally the baseline) over a 4D-STEM file; write ``out`` and a PNG summary.

    Peak settings: ``config.settings``, else the card's (tuned on a validation split by
    ``fourdcrystal tune``), else the defaults; ``config.min_relative`` overrides the model's
    threshold. ``mask``: a 2D file of the detector's shape, nonzero where pixels are to be ignored.

    ``calibration`` holds the options of :func:`resolve_calibration` (k_pixel_invA,
    camera_length_mm, detector_pixel_um, energy_eV, semiangle_mrad). Returns a summary dict:
    output paths, positions, vectors per method, patterns/s and the time spent per step.
    ``model_path`` None (or ``"release"``) runs the model shipped inside the package.
    """
    from .training.card import load_model, resolve_weights
    from .versions import software_versions

    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    source = split_spec(data)[0]
    if source.exists() and out.exists() and source.resolve() == out.resolve():
        raise FourdError(f"--out {out} is the input data file; choose another name (nothing was written)")
    if out.exists() and not overwrite:
        raise FourdError(f"{out} already exists; pass --overwrite to replace it")
    model_path = resolve_weights(model_path)
    model, card = load_model(model_path, inference=True)  # checks weights against the card before any work
    if config.chunk_positions < 1:
        raise FourdError(f"--chunk must be >= 1, got {config.chunk_positions}")
    tuned = True
    if config.settings is None:
        settings, tuned = settings_from_card(card)
        config = replace(config, settings=with_threshold(settings, config.min_relative))
    if config.max_peaks is not None:
        if config.max_peaks < 1:
            raise FourdError(f"--max-peaks must be >= 1, got {config.max_peaks}")
        st = config.settings
        config = replace(config, settings=replace(
            st, model=replace(st.model, max_peaks=config.max_peaks),
            baseline=replace(st.baseline, peaks=replace(st.baseline.peaks, max_peaks=config.max_peaks))))
    if config.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise FourdError(f"--device {config.device}: this machine has no CUDA GPU that torch can use")
    with open_4d(data, scan_shape) as scan:
        if np.dtype(scan.dtype).kind == "c":
            raise FourdError(f"{data}: complex-valued patterns ({np.dtype(scan.dtype)}); expected real counts or "
                             f"intensities (take the modulus squared of a wave function first)")
        if len(scan) == 0:
            raise FourdError(f"{data}: the scan has no positions ({scan.scan_shape[0]}×{scan.scan_shape[1]})")
        cal = resolve_calibration(str(data), scan.calibration, **(calibration or {}))
        prep = prepare(scan, card, cal, probe, vacuum, centre_px, mask, config.margin_disk_radii)
        methods = ("model", "baseline") if config.baseline else ("model",)
        fingerprint = resume_fingerprint(str(data), list(scan.shape), card["weights_sha256"], config, cal, prep)
        attrs = {"schema": SCHEMA, "complete": False, "data": str(data), "data_format": scan.format,
                 "scan_shape": list(scan.scan_shape), "pattern_shape": list(scan.pattern_shape),
                 "model": str(model_path), "model_weights_sha256": card["weights_sha256"],
                 "model_k_sampling_invA": list(card["input"]["k_sampling_invA"]),
                 "model_shape": prep["grid_shape"], "dead_or_masked_pixels": prep["dead_pixels"],
                 "calibration": json.dumps(asdict(cal)), "file_calibration": json.dumps(scan.calibration, default=str),
                 "centre_px": prep["centre_px"],
                 "centre_source": prep["centre_source"], "probe_source": prep["probe_source"],
                 "bf_radius_px": prep["bf_radius_px"], "config": json.dumps(asdict(config), default=str),
                 "software": json.dumps(software_versions()),
                 "units": "q in Å⁻¹ from the zero beam along detector axes 0 (qx) and 1 (qy); positions "
                          "p = row·scan_y + column; vectors of p are offsets[p]:offsets[p+1]"}
        check_writable(out.parent, "result")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FourdError(f"cannot create the folder of --out {out}: {exc.strerror}") from None
        need = estimate_output_bytes(len(scan), prep["grid_shape"], methods, config.save_maps)
        have = shutil.disk_usage(out.parent).free + (partial.stat().st_size if partial.exists() else 0)
        if have < need:
            raise FourdError(f"not enough free space for {out}: about {need / 1e6:.1f} MB needed, "
                             f"{have / 1e6:.1f} MB free on {out.parent}")
        with output_lock(out):
            # notes only once the inputs are good and the output is ours: an error is the one line printed
            note = quality_note(card)
            if note:
                log.warning("%s", note)
            if not tuned:
                log.info("%s: its card has no tuned peak settings (fourdcrystal tune); using the defaults",
                         model_path)
            for w in [*scan.notes, *calibration_warnings(card, cal)]:
                log.warning("%s: %s", data, w)
            if overwrite and partial.exists():  # only under the lock: never another live run's partial
                partial.unlink()
            summary, run = _run_chunks(scan, data, partial, fingerprint, attrs, prep, methods, config, card, model,
                                       model_path, scheduler)
            os.replace(partial, out)
    caps = {"model": config.settings.model.max_peaks, "baseline": config.settings.baseline.peaks.max_peaks}
    for m in methods:
        at_cap = int((np.asarray(summary[m]["count"]) >= caps[m]).sum())
        if at_cap:
            log.warning("%s: %d of %d positions reached the cap of %d peaks; more may be there (raise --max-peaks)",
                        m, at_cap, np.asarray(summary[m]["count"]).size, caps[m])
    png = out.with_suffix(".png")
    from .plots import prediction_summary

    try:
        prediction_summary(summary, card, out.name, png)
    except OSError as exc:  # the result is complete; only its picture is missing
        log.warning("could not write %s: %s; the result %s is complete", png, exc.strerror or exc, out)
    return {"out": str(out), "png": str(png), **run,
            "vectors": {m: summary[m]["vectors"] for m in methods}, "calibration": asdict(cal),
            "centre_px": prep["centre_px"], "probe_source": prep["probe_source"], "grid_shape": prep["grid_shape"]}


# Every PredictConfig field is part of a run's resume fingerprint except these, which cannot change its numbers (a
# field added to PredictConfig is fingerprinted unless listed here; tests/test_predict.py checks both ways).
FINGERPRINT_EXCLUDED = ("device",)


def resume_fingerprint(data: str, shape: list, weights_sha256: str, config: PredictConfig, cal: DataCalibration,
                       prep: dict) -> str:
    """What a partial result must match to be resumed: the input file (its size, time stamp and a sampled
    sha256), the model, every setting but :data:`FINGERPRINT_EXCLUDED`, the calibration, the zero beam, the
    probe and the usable region."""
    settings = {"data": data, "data_file": file_fingerprint(split_spec(data)[0]), "shape": shape,
                "model_weights_sha256": weights_sha256,
                "config": asdict(config) | {k: None for k in FINGERPRINT_EXCLUDED}, "calibration": asdict(cal),
                "centre_px": prep["centre_px"], "probe_sha256": hashlib.sha256(prep["probe"].tobytes()).hexdigest(),
                "usable_sha256": hashlib.sha256(np.packbits(prep["usable"]).tobytes()).hexdigest()}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _run_chunks(scan: Scan4D, data: str, partial: Path, fingerprint: str, attrs: dict, prep: dict, methods,
                config: PredictConfig, card: dict, model, model_path, scheduler: str | None) -> tuple[dict, dict]:
    """Process every position not yet committed to ``partial``; (summary arrays, run record)."""
    result: _Result | None = None

    @contextlib.contextmanager
    def writing():
        """A failed write (disk full, read-only, ...) as one line; the file is then never closed by HDF5."""
        try:
            yield
        except (OSError, RuntimeError) as exc:
            reason = write_error(exc)
            if reason is None:
                raise
            if result is not None:
                result.broken = True
            raise FourdError(f"cannot write {partial}: {reason}; positions already written are kept: make room and "
                             f"rerun the same command to resume") from None

    with writing():
        result = _Result(partial, fingerprint, attrs, scan.scan_shape, tuple(prep["grid_shape"]), methods,
                         config.save_maps, prep["usable"])
    try:
        done = result.state["positions_done"]
        if done:
            log.info("resuming %s: %d of %d positions already done", partial, done, len(scan))
        starts = list(range(done, len(scan), config.chunk_positions))
        timing: dict[str, float] = defaultdict(float)
        t_start = time.perf_counter()
        with bar(total=len(scan), desc="predict", unit="pattern", initial=done) as pbar:
            chunks = (_chunks_distributed(scheduler, str(data), scan, starts, config, prep, model_path, fingerprint)
                      if scheduler else _chunks_local(scan, starts, ChunkProcessor(model, card, prep, config)))
            for start, chunk in chunks:
                t0 = time.perf_counter()
                _room_for(partial, chunk)
                with writing():
                    result.append(start, chunk)
                timing["write"] += time.perf_counter() - t0
                for k, v in chunk["timing_s"].items():
                    timing[k] += v
                pbar.update(chunk["n"])
        wall = time.perf_counter() - t_start
        processed = len(scan) - done
        run = {"positions": len(scan), "processed_this_run": processed, "wall_s": wall,
               "patterns_per_s": processed / wall if wall > 0 else None, "timing_s": dict(timing)}
        with writing():
            summary = result.finish({"run": json.dumps(run)})
    finally:
        result.close()
    return summary, run


def _room_for(partial: Path, chunk: dict) -> None:
    """Stop cleanly, with the partial file intact and resumable, before a chunk that may not fit."""
    # twice what the chunk adds, plus one new storage chunk per vector field, plus 256 kB
    methods = [m for m in ("model", "baseline") if m in chunk]
    need = 2 * sum(int(np.asarray(v).nbytes) for m in methods for v in chunk[m].values())
    need += 2 * sum(int(np.asarray(v).nbytes) for v in chunk.get("maps", {}).values())
    need += sum(len(_VECTOR_FIELDS[m]) for m in methods) * _VECTOR_CHUNK * 4 + 262_144
    free = shutil.disk_usage(partial.parent).free
    if free < need:
        raise FourdError(f"cannot write {partial}: only {free / 1e6:.1f} MB free on {partial.parent}, the next chunk "
                         f"needs about {need / 1e6:.1f} MB; positions already written are kept: make room and rerun "
                         f"the same command to resume")


def _chunks_local(scan: Scan4D, starts: list[int], proc: ChunkProcessor):
    """(start, result) in order; the next chunk is read in a thread while this one is processed."""

    def read(s):
        t0 = time.perf_counter()
        raw = scan.read(s, s + proc.config.chunk_positions)
        return raw, time.perf_counter() - t0

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(read, starts[0]) if starts else None
        for k, s in enumerate(starts):
            raw, t_read = pending.result()
            pending = pool.submit(read, starts[k + 1]) if k + 1 < len(starts) else None
            res = proc(raw)
            res["timing_s"]["read"] = t_read
            yield s, res


def _chunks_distributed(address: str, data: str, scan: Scan4D, starts: list[int], config: PredictConfig, prep: dict,
                        model_path, fingerprint: str):
    """(start, result) in order from a dask.distributed cluster; at most 2 chunks per worker in flight."""
    from dask.distributed import Client, wait

    try:
        client = Client(address, timeout=20)
    except (OSError, TimeoutError) as exc:
        raise FourdError(f"--scheduler {address}: cannot reach the dask scheduler ({exc})") from None
    path, inner = split_spec(data)  # workers open the file themselves: an absolute path
    job = {"fingerprint": fingerprint, "model": str(Path(model_path).resolve()), "prep": prep, "config": config,
           "data": str(path.resolve()) + (f":{inner}" if inner else ""), "scan_shape": scan.scan_shape}
    try:
        window = max(2, 2 * len(client.scheduler_info()["workers"]))
        futures: dict[int, object] = {}
        queue = list(starts)
        for s in starts:
            while queue and len(futures) < window:
                q = queue.pop(0)
                futures[q] = client.submit(_remote_chunk, job, q, q + config.chunk_positions, pure=False)
            fut = futures.pop(s)
            wait(fut)
            yield s, fut.result()
    finally:
        client.close()
