"""What a prediction run needs besides the patterns: the detector's calibration, the probe on the
model's grid, the resampler, and where peaks may be reported; and the same for the classical
baseline, which runs on the detector's own pixels (:class:`BaselineGrid`).

:func:`resolve_calibration` takes the pixel size, energy and semi-angle from the file or from
options; :func:`prepare` reads the probe and mask files and the scan's mean pattern once and
returns a :class:`Preparation`, which every chunk worker (local or on a dask cluster) receives.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .calibration import (Resampler, dead_lines, detector_grid_shape, disk_centre, disk_radius_px,
                          k_pixel_from_camera_length, synthesised_probe, usable_region, zero_beam_centre)
from ..config import (CAMERA_LENGTH_RANGE_MM, DETECTOR_PIXEL_RANGE_UM, ENERGY_RANGE_EV, K_PIXEL_RANGE_INVA,
                     SEMIANGLE_RANGE_MRAD, Float, checked)
from ..errors import FourdError
from ..io.readers import Scan4D, read_2d
from ..simulation.optics import disk_radius_invA

log = logging.getLogger("fourdcrystal")

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
    # the config schema's validators and ranges: a number from the file is checked like one from an option
    ranges = {"energy_eV": (Float(*ENERGY_RANGE_EV), "eV"),
              "semiangle_mrad": (Float(*SEMIANGLE_RANGE_MRAD, lo_open=True), "mrad"),
              "k_pixel_invA": (Float(*K_PIXEL_RANGE_INVA), "Å⁻¹"), "camera_length_mm": (Float(*CAMERA_LENGTH_RANGE_MM), "mm"),
              "detector_pixel_um": (Float(*DETECTOR_PIXEL_RANGE_UM), "µm")}

    def in_range(option, value, key):
        parse, unit = ranges[key]
        return checked(option, value, parse, unit)

    def pick(key, option, value):
        if value is not None:
            sources[key] = option
            return in_range(option, value, key)
        if key in from_file:
            sources[key] = "file"
            return in_range(f"{data}: the file's {key}", from_file[key], key)
        return None

    energy = pick("energy_eV", "`energy_eV`", energy_eV)
    semiangle = pick("semiangle_mrad", "`semiangle_mrad`", semiangle_mrad)
    if k_pixel_invA is None and camera_length_mm is not None:
        if detector_pixel_um is None or energy is None:
            raise FourdError("`camera_length_mm` needs `detector_pixel_um` (µm) and the beam energy (`energy_eV`, eV)")
        in_range("`camera_length_mm`", camera_length_mm, "camera_length_mm")
        in_range("`detector_pixel_um`", detector_pixel_um, "detector_pixel_um")
        k_pixel_invA = k_pixel_from_camera_length(camera_length_mm, detector_pixel_um, energy)
        sources["k_pixel_invA"] = "`camera_length_mm`"
    k = pick("k_pixel_invA", "`k_pixel_invA`", k_pixel_invA) if "k_pixel_invA" not in sources else k_pixel_invA
    if k is None:
        raise FourdError(f"{data}: the file has no pixel size in Å⁻¹; give `k_pixel_invA` (Å⁻¹ per detector pixel), "
                         f"or `camera_length_mm` (mm) with `detector_pixel_um` (µm) and `energy_eV` (eV)")
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
    dk_model = float(np.max(model_pixel_invA(card, cal.k_pixel_invA))) if "k_sampling_invA" in inp else cal.k_pixel_invA
    if cal.k_pixel_invA > 1.5 * dk_model:
        out.append(f"detector pixels ({cal.k_pixel_invA:.4g} Å⁻¹) are coarser than the model's ({dk_model:.4g} Å⁻¹): "
                   f"patterns are interpolated up, and small disks lose detail")
    return out


def _parse_region(text: str | None, scan_shape) -> tuple[int, int, int, int] | None:
    """``R0:R1,C0:C1`` (scan rows and columns, end exclusive) → (r0, r1, c0, c1)."""
    if text is None:
        return None
    try:
        rows, cols = text.split(",")
        r0, r1 = (int(v) for v in rows.split(":"))
        c0, c1 = (int(v) for v in cols.split(":"))
    except ValueError:
        raise FourdError(f"`vacuum` {text!r}: expected scan rows and columns as R0:R1,C0:C1") from None
    if not (0 <= r0 < r1 <= scan_shape[0] and 0 <= c0 < c1 <= scan_shape[1]):
        raise FourdError(f"`vacuum` {text!r} lies outside the {scan_shape[0]}×{scan_shape[1]} scan")
    return r0, r1, c0, c1


def _load_probe_file(path: str, pattern_shape) -> np.ndarray:
    try:
        arr = read_2d(path)
    except FourdError as exc:
        raise FourdError(f"`probe`: {exc}") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 4:  # a vacuum scan: its mean pattern
        arr = arr.reshape(-1, *arr.shape[2:]).mean(0)
    if arr.shape != tuple(pattern_shape):
        raise FourdError(f"`probe` {path} is {'×'.join(map(str, arr.shape))}, the patterns are "
                         f"{pattern_shape[0]}×{pattern_shape[1]}; the probe must come from the same detector")
    return arr


COUNTED_PATTERNS = 16  # patterns of the mean pattern's sample whose counts give the scan's counts per pattern


def _mean_pattern(scan: Scan4D, region=None, max_patterns: int = 256,
                  count_patterns: int = 0, first: int | None = None) -> tuple[np.ndarray, float]:
    """Mean of up to ``max_patterns`` patterns spread evenly over the scan (or over ``region``), and the
    counts per pattern: the median of :func:`fourdcrystal.detection.detect.estimate_dose` over up to ``count_patterns``
    of the same patterns, spread evenly among them (inf where the values are not counts; nan for none), read
    once for both. ``first``: from the first ``first`` positions only (a scan still being written)."""
    from ..detection.detect import estimate_dose

    if region is None:
        n = len(scan) if first is None else max(1, min(int(first), len(scan)))
        idx = np.unique(np.linspace(0, n - 1, min(max_patterns, n)).astype(int))
    else:
        r0, r1, c0, c1 = region
        idx = (np.arange(r0, r1)[:, None] * scan.shape[1] + np.arange(c0, c1)[None, :]).ravel()
    counted = set(np.linspace(0, len(idx) - 1, min(count_patterns, len(idx))).astype(int).tolist())
    total = np.zeros(scan.pattern_shape, np.float64)
    doses = []
    for n, i in enumerate(idx):
        frame = scan.read(int(i), int(i) + 1)
        total += frame[0]
        if n in counted:
            doses.append(estimate_dose(frame)[0])
    return (total / len(idx)).astype(np.float32), float(np.median(doses)) if doses else float("nan")


def _load_mask_file(path: str, pattern_shape) -> np.ndarray:
    """A detector mask: 2D, the detector's shape; nonzero marks pixels to ignore. Returns True where valid."""
    try:
        arr = np.asarray(read_2d(path))
    except FourdError as exc:
        raise FourdError(f"`mask`: {exc}") from None
    if arr.shape != tuple(pattern_shape):
        raise FourdError(f"`mask` {path} is {'×'.join(map(str, arr.shape))}, the patterns are "
                         f"{pattern_shape[0]}×{pattern_shape[1]}; the mask must come from the same detector")
    return ~(arr.astype(bool))



# A model trained on pixel sizes spanning this factor or more runs on the detector's own. The first release model
# (0.019–0.048 Å⁻¹, a factor 2.5, most patterns at 0.025–0.033) stays below it and is resampled to its pixel size.
NATIVE_PIXELS_SPAN = 3.0


def model_pixel_invA(card: dict, k_pixel_invA: float) -> tuple[float, float]:
    """The pixel size (Å⁻¹ per pixel, per axis) of the grid the network sees for a detector of ``k_pixel_invA``.

    A model trained on a wide range of pixel sizes (its card's ``input.range.k_sampling_invA``
    spans a factor of ``NATIVE_PIXELS_SPAN`` or more) runs on the detector's own pixels when they
    lie in that range (widened by 5 %): resampling would only lose detail it has learnt to use.
    Otherwise the patterns are resampled to the card's pixel size, the one the model was trained on.
    """
    inp = card["input"]
    lo, hi = inp.get("range", {}).get("k_sampling_invA") or (0.0, 0.0)
    if lo > 0 and hi / lo >= NATIVE_PIXELS_SPAN and 0.95 * lo <= k_pixel_invA <= 1.05 * hi:
        return (float(k_pixel_invA), float(k_pixel_invA))
    return tuple(float(v) for v in np.broadcast_to(inp["k_sampling_invA"], (2,)))


@dataclass(frozen=True)
class BaselineGrid:
    """Where the classical baseline runs: on the detector's own pixels, moved by whole pixels only so
    that the zero beam's pixel sits at (H//2, W//2), when they are as fine as the model's or finer;
    on the model's grid when the detector is coarser.

    A classical detector loses precision on patterns resampled to a coarser grid or interpolated by a
    sub-pixel shift, and a user runs it on the pixels the camera recorded; its settings in pixels
    (peak spacing, smoothing) are scaled by ``px_scale`` so that they keep the Å⁻¹ values they were
    tuned at on the model's grid. Interpolating a coarser detector up to the model's grid loses
    nothing, and there the settings apply as tuned (on coarse pixels they were seen to find spurious
    peaks between overlapping disks).
    """

    resampler: Resampler  # detector pixels → the detector's pixels, shifted by whole pixels (no interpolation)
    dk_invA: tuple  # the detector's pixel size, Å⁻¹ (both axes)
    probe: np.ndarray  # the vacuum probe on this grid, float32, its centre at (H//2, W//2)
    usable: np.ndarray  # pixels of this grid where peaks may be reported
    grid_shape: list  # (H, W)
    q_offset_invA: tuple  # added to q = (pixel − (H//2, W//2))·dk: the zero beam's sub-pixel offset, Å⁻¹
    px_scale: float  # model pixel size / detector pixel size: the baseline's pixel settings are multiplied by it


@dataclass(frozen=True)
class Preparation:
    """Everything a chunk worker needs besides the patterns (pickled to dask workers as it is)."""

    resampler: Resampler  # detector pixels → the model's grid (pixel size, q = 0 at the centre)
    dk_invA: tuple  # the model grid's pixel size (Å⁻¹ per pixel along each axis)
    probe: np.ndarray  # the vacuum probe on the model's grid, float32
    bf_mask: np.ndarray  # detector pixels of the bright-field disk (virtual bright field)
    detector_valid: np.ndarray | None  # False where masked or dead; None when every pixel is good
    usable: np.ndarray  # model pixels where peaks may be reported
    grid_shape: list  # the model grid's (H, W)
    centre_px: list  # the zero beam on the detector, (i, j) pixels
    centre_source: str
    probe_source: str
    bf_radius_px: float  # the bright-field disk's radius on the detector, pixels
    dead_pixels: int  # detector pixels masked or dead
    baseline_grid: BaselineGrid  # where the classical baseline runs
    counts_per_pattern: float  # the median over COUNTED_PATTERNS of the mean pattern's sample; inf: not counts
    energy_eV: float | None = None  # the beam energy, where known (the tilt needs it)
    disk_radius_invA: float = 0.0  # the bright-field disk's radius, Å⁻¹


def prepare(scan: Scan4D, card: dict, cal: DataCalibration, probe: str | None = None, vacuum: str | None = None,
            centre_px: tuple[float, float] | None = None, mask: str | None = None,
            margin_disk_radii: float = 1.0, first: int | None = None) -> Preparation:
    """Everything a chunk worker needs besides the patterns: resampler, probe, masks.

    Probe: ``probe`` file (same detector), else the mean of the ``vacuum`` scan region, else an
    ideal aperture from energy and semi-angle. Centre of the data's zero beam: ``centre_px``
    (detector pixels), else the bright disk of the mean pattern. The model's grid holds the whole
    detector at the model's pixel size (sides rounded up to a multiple of the network's
    2^depth). Peaks are reported only in the usable region: model pixels fully on valid detector
    pixels (not in ``mask``, not in a dead row or column), at least ``margin_disk_radii`` disk radii
    from anything else. ``first``: the mean pattern (zero beam, dead pixels, counts per pattern) from the first
    ``first`` scan positions only, not from patterns spread over the scan (``predict --follow``).
    """
    dk_model = model_pixel_invA(card, cal.k_pixel_invA)
    depth = int(card.get("architecture", {}).get("depth", 0))
    region = _parse_region(vacuum, scan.scan_shape)
    detector_valid = (_load_mask_file(mask, scan.pattern_shape) if mask is not None
                      else np.ones(scan.pattern_shape, bool))
    if probe is not None or region is not None:
        detector_probe = (_load_probe_file(probe, scan.pattern_shape) if probe is not None
                          else _mean_pattern(scan, region)[0])
        r_px = disk_radius_px(detector_probe)
        if r_px < 1:
            raise FourdError(f"{'`probe` ' + probe if probe else '`vacuum` ' + vacuum}: no bright disk found "
                             f"(is it a vacuum pattern?)")
        source = f"file {probe}" if probe is not None else f"vacuum region {vacuum}"
    else:
        missing = [o for o, v in (("`energy_eV`", cal.energy_eV), ("`semiangle_mrad`", cal.semiangle_mrad)) if v is None]
        if missing:
            raise FourdError(f"no vacuum probe: give `probe` FILE or `vacuum` R0:R1,C0:C1, or {' and '.join(missing)} "
                             f"to synthesise one")
        detector_probe = None
        r_px = disk_radius_invA(cal.semiangle_mrad, cal.energy_eV) / cal.k_pixel_invA
        source = f"synthesised aperture, {cal.semiangle_mrad:g} mrad at {cal.energy_eV:g} eV"
    mean, counts = _mean_pattern(scan, count_patterns=COUNTED_PATTERNS, first=first)
    if not np.isfinite(mean).all():
        raise FourdError(f"{scan.spec}: the data hold NaN or infinite values; mask or replace them first")
    if not mean.max() > 0:
        raise FourdError(f"{scan.spec}: the patterns are all zero or negative; expected counts or intensities")
    detector_valid &= ~dead_lines(mean)
    if centre_px is None:
        probe_centre = disk_centre(detector_probe, r_px) if detector_probe is not None else None
        centre_px, centre_source = zero_beam_centre(np.where(detector_valid, mean, 0.0), r_px, probe_centre)
        brightest = disk_centre(np.where(detector_valid, mean, 0.0), r_px)
        if np.hypot(*np.subtract(centre_px, brightest)) > r_px:
            log.warning(f"zero beam at ({centre_px[0]:.1f}, {centre_px[1]:.1f}) px from the {centre_source}, not the "
                        f"brightest disk of the mean pattern at ({brightest[0]:.1f}, {brightest[1]:.1f}) px (a "
                        f"reflection brighter than the zero beam); give `centre_px` I,J if this is wrong")
    else:
        if not all(0 <= c <= n - 1 for c, n in zip(centre_px, scan.pattern_shape)):
            raise FourdError(f"`centre_px` {centre_px[0]:g},{centre_px[1]:g} lies outside the "
                             f"{scan.pattern_shape[0]}×{scan.pattern_shape[1]} detector")
        centre_source = "`centre_px`"
    grid = detector_grid_shape(scan.pattern_shape, cal.k_pixel_invA, centre_px, dk_model, 2**depth)
    if detector_probe is not None:
        pc = disk_centre(detector_probe, r_px)
        probe_model = Resampler.build(grid, dk_model, scan.pattern_shape, cal.k_pixel_invA, pc)(detector_probe[None])[0]
    else:
        probe_model = synthesised_probe(grid, dk_model, cal.energy_eV, cal.semiangle_mrad)
    probe_model = probe_model.astype(np.float32)
    ii, jj = np.mgrid[:scan.pattern_shape[0], :scan.pattern_shape[1]]
    bf_mask = (ii - centre_px[0]) ** 2 + (jj - centre_px[1]) ** 2 <= (1.05 * r_px) ** 2
    resampler = Resampler.build(grid, dk_model, scan.pattern_shape, cal.k_pixel_invA, centre_px)
    radius_model_px = r_px * cal.k_pixel_invA / float(np.max(dk_model))
    usable = usable_region(resampler.coverage(detector_valid), margin_disk_radii * radius_model_px)
    if not usable.any():
        raise FourdError(f"{scan.spec}: no part of the detector is usable (all masked or dead, or the disks are "
                         f"as large as the detector)")
    dk_detector = (float(cal.k_pixel_invA), float(cal.k_pixel_invA))
    if dk_detector[0] <= 1.0001 * float(np.max(dk_model)):
        baseline_grid = _baseline_grid(scan.pattern_shape, dk_detector, centre_px, detector_probe, r_px, cal,
                                       detector_valid, margin_disk_radii, float(np.max(dk_model)) / dk_detector[0])
    else:  # a coarser detector: the model's finer grid loses nothing, and the baseline's settings were tuned on it
        baseline_grid = BaselineGrid(resampler=resampler, dk_invA=tuple(dk_model), probe=probe_model,
                                     usable=usable, grid_shape=list(grid), q_offset_invA=(0.0, 0.0), px_scale=1.0)
    return Preparation(resampler=resampler, dk_invA=dk_model, probe=probe_model, bf_mask=bf_mask,
                       detector_valid=detector_valid if not detector_valid.all() else None, usable=usable,
                       grid_shape=list(grid), centre_px=[float(c) for c in centre_px], centre_source=centre_source,
                       probe_source=source, bf_radius_px=float(r_px), dead_pixels=int((~detector_valid).sum()),
                       baseline_grid=baseline_grid, counts_per_pattern=counts, energy_eV=cal.energy_eV,
                       disk_radius_invA=float(r_px * cal.k_pixel_invA))


def _baseline_grid(pattern_shape, dk_detector: tuple, centre_px, detector_probe: np.ndarray | None, r_px: float,
                   cal: DataCalibration, detector_valid: np.ndarray, margin_disk_radii: float,
                   px_scale: float) -> BaselineGrid:
    """The detector's pixels with the zero beam's pixel at the grid's centre (a whole-pixel shift: the
    patterns are copied, not interpolated); the sub-pixel rest goes into ``q_offset_invA``."""
    whole = [float(np.rint(c)) for c in centre_px]
    grid = detector_grid_shape(pattern_shape, dk_detector, whole, dk_detector, 1)
    resampler = Resampler.build(grid, dk_detector, pattern_shape, dk_detector, whole)
    if detector_probe is not None:  # the probe itself is centred exactly: its offset would bias every position
        pc = disk_centre(detector_probe, r_px)
        probe = Resampler.build(grid, dk_detector, pattern_shape, dk_detector, pc)(detector_probe[None])[0]
    else:
        probe = synthesised_probe(grid, dk_detector, cal.energy_eV, cal.semiangle_mrad)
    usable = usable_region(resampler.coverage(detector_valid), margin_disk_radii * r_px)
    q_offset = tuple(float((w - c) * d) for w, c, d in zip(whole, centre_px, dk_detector))
    return BaselineGrid(resampler=resampler, dk_invA=dk_detector, probe=probe.astype(np.float32), usable=usable,
                        grid_shape=list(grid), q_offset_invA=q_offset, px_scale=float(px_scale))
