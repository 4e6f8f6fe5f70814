"""`fourdcrystal strain`: strain and in-plane rotation maps from Bragg vectors.

Vectors in (``predict``'s HDF5, model or baseline, or a py4DSTEM BraggVectors file), maps out
(HDF5 + PNG). The lattice work is :mod:`fourdcrystal.lattice` (conventions there):

1. **Basis.** g1, g2 from the Bragg vector map of the reference positions (the spots that
   index the most intensity, Gauss-reduced), or given (``--g1 --g2``).
2. **Per position.** Index the vectors on that basis, fit q = q0 + h g1 + k g2 by weighted
   least squares (model vectors weighted by their V_g⁴, correlation peaks equally; ``weights="scan"``: then
   each reflection by 1 / its scatter over the scan, :func:`fourdcrystal.lattice.reflection_variances`, and
   every position fitted again), drop outliers, refit. Positions
   with fewer than ``min_vectors`` indexed vectors, or with less than ``min_indexed_fraction`` of the vectors'
   weight on the fitted lattice (several grains, rings, amorphous regions: the vectors are not one lattice), are
   marked failed (NaN in the maps) and counted, not fatal. ``indexed_fraction`` keeps each position's share.
3. **Reflection offsets** (``correct="reference"``, the default). Dynamical scattering moves each
   disk's apparent centre off its lattice point, by an amount that differs between reflection
   families (tenths of a pixel on thick crystals), and a detector does not find the same families at
   every position, so an uncorrected fit changes its scale with the set it found. Each reflection's
   median residual over the reference positions (in lattice coordinates) is taken off that
   reflection at every position, and only those reflections are refitted
   (:func:`fourdcrystal.lattice.reflection_offsets`). It assumes the reference is the same crystal,
   thickness and orientation as the rest of the scan; ``correct="none"`` fits the vectors as found.
4. **Reference.** The element-wise median of the fitted bases over a scan region
   (``R0:R1,C0:C1``, rows and columns of the scan, end exclusive) or over the whole scan
   (``median``). Strain and rotation are relative to it: F = G⁻ᵀ G_refᵀ, F = (I + ε) R(θ).

Output ``MAPS.h5``: ``exx``, ``eyy``, ``exy`` (fractions; tensor shear), ``theta_deg``
(counter-clockwise from q_x to q_y), ``residual_rms`` (vector units), ``n_indexed``, ``fit_ok``,
``g1``/``g2`` maps, the reference basis and all settings as attributes; ``MAPS.png``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from .. import lattice
from ..atomic import atomic_file, check_new_file, output_lock
from ..config import default
from ..errors import FourdError
from ..io.vectors import VectorSet, read_vectors
from ..progress import progress

log = logging.getLogger("fourdcrystal")
SCHEMA = "fourdcrystal.maps.strain/1"
WEIGHTS = ("auto", "intensity", "squared", "quartic", "none", "scan")
# weights="scan": reweighing passes, and the smallest variance a reflection may claim (fraction of the median
# reflection's), so that one reflection that happens to sit still at a few positions does not take the fit over
SCAN_WEIGHT_PASSES = 2
SCAN_WEIGHT_FLOOR = 0.1
WEIGHT_POWERS = {"intensity": 1, "squared": 2, "quartic": 4}  # the vector's weight: its intensity to this power
CORRECTIONS = ("none", "reference")
CONVENTIONS = ("F = G^-T G_ref^T (real-space deformation relative to the reference, detector frame: x = axis 0 "
               "= q_x, y = axis 1 = q_y); F = (I + eps) R(theta) (polar decomposition, left stretch): eps in the "
               "detector frame (fractions, tensor shear exy; engineering shear = 2 exy), theta counter-clockwise from q_x "
               "towards q_y in degrees")


@dataclass(frozen=True)
class StrainConfig:
    # defaults written once, in the config schema (fourdcrystal/config.py)
    method: Literal["auto", "model", "baseline"] = default("strain", "method")  # auto: predict's choice
    reference: str = default("strain", "reference")  # median | R0:R1,C0:C1 (scan rows, columns; end exclusive)
    g1: tuple[float, float] | None = None  # basis vectors in the file's units (Å⁻¹); None: found
    g2: tuple[float, float] | None = None
    tolerance: float = default("strain", "tolerance")  # indexing: within this fraction of |shortest g|
    min_vectors: int = default("strain", "min_vectors")  # fewer indexed vectors: the position is not fitted
    weights: Literal["auto", "intensity", "squared", "quartic", "none", "scan"] = default("strain", "weights")
    scan_step_nm: float | None = default("strain", "scan_step_nm")  # None: from the file (scan_step), else positions
    min_indexed_fraction: float = default("strain", "min_indexed_fraction")  # less of the weight on the lattice: NaN
    correct: Literal["none", "reference"] = default("strain", "correct")  # reflection offsets (module notes, step 3)
    min_intensity: float = 0.0  # ignore vectors weaker than this (the file's intensity units)
    crystal_basis: tuple | None = None  # reference "crystal": the crystal's ZOLZ basis (2×2, Å⁻¹, any orientation)
    # with it, for the 3D orientation: the basis's frame (rows x̂, ŷ, ẑ = zone axis, crystal Cartesian), the cell
    # (rows a, b, c, Å, same frame) and the zone axis [uvw] of that cell (lattice.zolz_frame)
    crystal_frame: tuple | None = None
    crystal_lattice_A: tuple | None = None
    zone_axis: tuple[int, int, int] | None = None
    max_crystal_mismatch: float = 0.1  # refuse a crystal lattice farther than this (relative) from the measured one


def parse_region(text: str, scan_shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """``median`` or ``crystal`` → None (the whole scan); ``R0:R1,C0:C1`` → slices (end exclusive), checked."""
    if text in ("median", "crystal"):
        return None
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not m:
        raise FourdError(f"`reference` {text!r}: expected median, crystal or a scan region R0:R1,C0:C1 (rows and "
                         f"columns, end exclusive), e.g. 0:4,0:4")
    r0, r1, c0, c1 = (int(v) for v in m.groups())
    if not (r0 < r1 <= scan_shape[0] and c0 < c1 <= scan_shape[1]):
        raise FourdError(f"`reference` {text}: region outside the {scan_shape[0]}×{scan_shape[1]} scan or empty "
                         f"(rows 0:{scan_shape[0]}, columns 0:{scan_shape[1]})")
    return slice(r0, r1), slice(c0, c1)


def check_config(config: StrainConfig) -> None:
    if config.method not in ("auto", "model", "baseline"):
        raise FourdError(f"`method` {config.method!r}: expected auto, model or baseline")
    if config.weights not in WEIGHTS:
        raise FourdError(f"`weights` {config.weights!r}: expected one of {', '.join(WEIGHTS)}")
    if not (math.isfinite(config.min_indexed_fraction) and 0 <= config.min_indexed_fraction < 1):
        raise FourdError(f"`min_indexed_fraction` {config.min_indexed_fraction!r}: expected 0 ≤ fraction < 1")
    if config.correct not in CORRECTIONS:
        raise FourdError(f"`correct` {config.correct!r}: expected one of {', '.join(CORRECTIONS)}")
    if not (math.isfinite(config.tolerance) and 0 < config.tolerance <= 0.5):
        raise FourdError(f"`tolerance` {config.tolerance!r}: expected 0 < tolerance ≤ 0.5 (fraction of |g|)")
    if config.min_vectors < 3:
        raise FourdError(f"`min_vectors` {config.min_vectors}: expected at least 3 (the fit has 6 unknowns)")
    if (config.g1 is None) != (config.g2 is None):
        raise FourdError("give both `g1` and `g2`, or neither (found from the Bragg vector map)")
    if config.g1 is not None:
        lattice.check_basis(np.array([config.g1, config.g2], float).T, "`g1`, `g2`")
    if (config.reference == "crystal") != (config.crystal_basis is not None):
        raise FourdError("`reference` crystal needs `structure` FILE and `zone_axis` U V W (and they need it)")


def crystal_reference(structure_path: str | Path, zone_axis) -> dict:
    """The crystal's own lattice along [uvw], for ``reference="crystal"``.

    [uvw] are direction indices of the structure file's own cell where that cell is a conventional one (the
    volume of the standard conventional cell: any setting, e.g. a monoclinic file's own choice of axes), else
    (a primitive cell, a supercell) of the standard conventional cell.

    Returns the StrainConfig fields: ``crystal_basis`` the zero-order Laue zone basis (Å⁻¹; the primitive
    cell's reciprocal lattice, so lattice centring adds no extinct reflections), ``crystal_frame`` the frame it
    is written in, ``crystal_lattice_A`` the cell [uvw] refers to (rows a, b, c, Å: the crystal Cartesian frame
    of the 3D orientation) and ``zone_axis``.
    """
    from ..catalog.prototypes import LabelError, label_structure
    from ..catalog.sources import read_structure_file
    from ..specimens.specimen import check_zone_axis

    path = Path(structure_path)
    if not path.is_file():
        raise FourdError(f"`structure` {path} not found")
    uvw = check_zone_axis(zone_axis)
    structure = read_structure_file(path)
    try:
        conv = label_structure(structure).conventional
    except LabelError as exc:
        raise FourdError(f"{path}: {exc}") from None
    if abs(structure.lattice.volume - conv.lattice.volume) <= 1e-3 * conv.lattice.volume:
        conv = structure  # the file's own conventional setting: its [uvw] are what its user means
    beam = np.asarray(uvw, float) @ conv.lattice.matrix
    basis, frame = lattice.zolz_frame(conv.get_primitive_structure().lattice.matrix, beam)
    as_tuple = lambda a: tuple(map(tuple, np.asarray(a, float).tolist()))  # noqa: E731 (frozen, JSON-able)
    return {"crystal_basis": as_tuple(basis), "crystal_frame": as_tuple(frame),
            "crystal_lattice_A": as_tuple(conv.lattice.matrix), "zone_axis": tuple(int(v) for v in uvw)}


def reference_basis_from_spots(vectors: VectorSet, positions: np.ndarray, config: StrainConfig) -> np.ndarray:
    """g1, g2 from the Bragg vector map of the given flat positions."""
    qs, ws = [], []
    # the map is always intensity-weighted (as py4DSTEM's): counted alone, the weak spurious vectors
    # of many positions can outweigh a real reflection; --weights applies to the per-position fits
    mapping = replace(config, weights="intensity")
    for p in positions:
        q, w = position_vectors(vectors, int(p), mapping)
        qs.append(q)
        ws.append(w)
    q = np.concatenate(qs) if qs else np.zeros((0, 2))
    w = np.concatenate(ws) if ws else np.zeros(0)
    spot_q, spot_w = lattice.spots(q, w, vectors.bin_width)
    return lattice.find_basis(spot_q, spot_w)


# the whole scan's basis replaces the reference's only where it indexes this much more of the reference's weight
WHOLE_SCAN_BASIS_GAIN = 1.05


def start_basis(vectors: VectorSet, ref_positions: np.ndarray, config: StrainConfig, found: list) -> np.ndarray:
    """The basis that indexes the positions: from the reference's Bragg vector map, or, where the reference is part
    of the scan, from the whole scan's map if that indexes more of the reference positions' vector weight (by
    :data:`WHOLE_SCAN_BASIS_GAIN`). A small reference's few patterns can hold stray peaks that make a wrong lattice
    from its map alone (one position of SrTiO3 [001] at 1000 Å in the strain survey: a basis that indexes none of
    it), where the scan's map, many patterns strong, shows the crystal's; the fit relative to the reference is the
    same with either basis where both are the crystal's."""
    if len(ref_positions) == vectors.positions:
        return reference_basis_from_spots(vectors, ref_positions, config)
    try:
        start = reference_basis_from_spots(vectors, ref_positions, config)
    except FourdError as exc:
        start, failed = None, exc
    try:
        whole = reference_basis_from_spots(vectors, np.arange(vectors.positions), config)
    except FourdError:
        if start is None:
            raise failed from None
        return start
    if start is None:
        return whole

    def indexed_weight(basis: np.ndarray) -> float:
        total = 0.0
        for p in ref_positions:
            q, w = found[int(p)]
            fit = (lattice.fit_lattice(q, basis, w, tolerance=config.tolerance, min_vectors=config.min_vectors)
                   if (w > 0).sum() >= config.min_vectors else None)
            total += 0.0 if fit is None else float(w[fit.used].sum())
        return total

    return whole if indexed_weight(whole) > WHOLE_SCAN_BASIS_GAIN * indexed_weight(start) else start


def fit_weights(config: StrainConfig, vectors: VectorSet) -> str:
    """The weights of the first fit. ``auto`` (and ``scan``) first weigh a model vector by its height (the
    network's V_g at the peak) to the fourth power (``quartic``), then each reflection by its scatter over the
    scan (:func:`strain_maps`): every method (model, baseline, py4DSTEM) chose that second step on the 240 Å
    strain survey's tuning series (``benchmarks/strain_survey240.json``). For the first step: Were the heights kinematic |V_g|, a disk's counts would go as their square and under shot
    noise alone ``squared`` would follow its position's variance; but a faint or unsure peak is also the one a
    neighbour's tail, a dynamical shift of its intensity or pixel locking on few counts moves most, errors that
    do not shrink with its counts. ``quartic`` was chosen on the strain survey's tuning series and on the Si
    [110] validation series over the height, its square and equal weights (``experiments/strain_weights``:
    0.120–0.154 % at 10⁵ e⁻ on the survey's test series against 0.129–0.188 % squared). Correlation peak
    heights (baseline, py4DSTEM) do not help: their fits weigh vectors equally."""
    if config.weights not in ("auto", "scan"):  # scan: the first fit, before the scan's own weights
        return config.weights
    return "quartic" if vectors.method == "model" else "none"


def position_vectors(vectors: VectorSet, p: int, config: StrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Scan position ``p``'s finite vectors (q in Å⁻¹, n × 2) above ``config.min_intensity`` and their fit weights."""
    q, inten = vectors.position(p)
    keep = np.all(np.isfinite(q), axis=1) & np.isfinite(inten) & (inten >= config.min_intensity)
    q, inten = q[keep], inten[keep]
    mode = fit_weights(config, vectors)
    w = np.ones(len(q)) if mode == "none" else np.clip(inten, 0.0, None) ** WEIGHT_POWERS[mode]
    return q, w


def _fit_positions(found: list, start: np.ndarray, config: StrainConfig, ref_positions: np.ndarray,
                   indexed: np.ndarray, desc: str, weighted_outliers: bool = False) -> tuple[list, dict | None]:
    """Each position's (q, weights, fit), the reference's reflection offsets taken off where ``config.correct``
    says; ``indexed`` gets each position's share of the weight on its lattice."""
    fits = []
    for p in progress(range(len(found)), desc=desc, unit="position"):
        q, w = found[p]
        fit = None
        if (w > 0).sum() >= config.min_vectors:
            fit = lattice.fit_lattice(q, start, w, tolerance=config.tolerance, min_vectors=config.min_vectors,
                                      weighted_outliers=weighted_outliers)
        if fit is not None:
            # the share of the vectors' weight on the one lattice: several grains or rings leave most of it off
            # (a fit exists only where some weight is positive)
            indexed[p] = float(w[fit.used].sum() / w.sum())
            if indexed[p] < config.min_indexed_fraction:
                fit = None
        fits.append((q, w, fit))
    offsets = None
    if config.correct == "reference":
        offsets = lattice.reflection_offsets([(fits[p][0], fits[p][2]) for p in ref_positions])
        fits = [(q, w, None if fit is None else lattice.corrected_fit(q, w, fit, offsets, config.tolerance,
                                                                      config.min_vectors, weighted_outliers))
                for q, w, fit in fits]
    return fits, offsets


def strain_maps(vectors: VectorSet, config: StrainConfig = StrainConfig()) -> dict:
    """Fit every position and compute the maps (see the module notes). Returns a dict of arrays and info."""
    check_config(config)
    scan_weighted = config.weights in ("auto", "scan")
    config = replace(config, weights=fit_weights(config, vectors))
    scan = vectors.scan_shape
    region = parse_region(config.reference, scan)
    flat = np.arange(vectors.positions).reshape(scan)
    ref_positions = flat.ravel() if region is None else flat[region].ravel()
    n = vectors.positions
    found = [position_vectors(vectors, p, config) for p in range(n)]
    if config.g1 is not None:
        start = lattice.check_basis(np.array([config.g1, config.g2], float).T, "`g1`, `g2`")
    else:
        start = start_basis(vectors, ref_positions, config, found)
    bases = np.full((n, 2, 2), np.nan)
    origins = np.full((n, 2), np.nan)
    resid = np.full(n, np.nan)
    n_indexed = np.zeros(n, np.int32)
    indexed = np.full(n, np.nan)
    fits, offsets = _fit_positions(found, start, config, ref_positions, indexed, "fitting lattices")
    not_one_lattice = int(np.sum(indexed < config.min_indexed_fraction))
    if scan_weighted:
        # weights from the scan: each reflection's scatter about its fitted lattice point over the positions
        # (the reference's own residuals are zero by construction where it is one position: left out then)
        in_reference = set(ref_positions.tolist())
        spread_from = [p for p in range(n) if p not in in_reference] or list(range(n))
        # a position the first fit rejected (too few vectors, or not one lattice) stays rejected: refitted with
        # the scan's weights, vectors off every reflection the scan trusts weigh nothing and would let it pass
        first_fits = [fit for _, _, fit in fits]
        for _ in range(SCAN_WEIGHT_PASSES):
            var = lattice.reflection_variances([(fits[p][0], fits[p][2]) for p in spread_from], offsets,
                                               weights=[found[p][1] for p in spread_from])
            if not var:
                break
            # 1 / variance, scaled so that the most trusted reflection weighs 1 (all alike where none scatters)
            floor = max(SCAN_WEIGHT_FLOOR * float(np.median(list(var.values()))), 1e-300)
            w_hk = {h: floor / max(v, floor) for h, v in var.items()}
            w_hk[(0, 0)] = 1.0  # the zero beam: where no spread is measured, the most trusted
            reweighed = []
            for (q, w), (_, _, fit), first in zip(found, fits, first_fits):
                if first is None:
                    reweighed.append((q, np.zeros(len(q))))
                    continue
                # the indices of the last pass's fit, or the first fit's where the last pass lost the position
                last = fit if fit is not None else first
                # each vector keeps its first weight (its height's say within a reflection), times its
                # reflection's trust: a vector's variance taken as (its reflection's scale) / (its first weight)
                reweighed.append((q, w * np.array([w_hk.get(tuple(h), 0.0) for h in last.indices.tolist()])))
            # indexed_fraction stays the first fit's (the share of the vectors' own weight on the lattice)
            fits, offsets = _fit_positions(reweighed, start, config, ref_positions, np.full(n, np.nan),
                                           "reweighing by the scan", weighted_outliers=True)
    for p, (_, _, fit) in enumerate(fits):
        if fit is not None:
            bases[p], origins[p], resid[p], n_indexed[p] = fit.basis, fit.origin, fit.residual_rms, fit.n_used
    ok = np.isfinite(bases).all(axis=(1, 2))
    ref_ok = ok[ref_positions]
    if not ref_ok.any():
        raise FourdError(f"no position of the reference {config.reference!r} could be fitted (fewer than "
                         f"{config.min_vectors} indexed vectors, or under {config.min_indexed_fraction:g} of the "
                         f"vectors' weight on one lattice); choose another `reference` or `g1`/`g2`")
    reference = np.median(bases[ref_positions][ref_ok], axis=0)
    mismatch = turn = None
    if config.crystal_basis is not None:
        if vectors.units != "Å⁻¹":
            raise FourdError("`reference` crystal needs calibrated vectors (Å⁻¹); this file is in detector pixels")
        turn, choice, mismatch = lattice.align_rotation(np.asarray(config.crystal_basis, float), reference)
        reference = turn @ np.asarray(config.crystal_basis, float) @ choice
        if mismatch > config.max_crystal_mismatch:
            raise FourdError(f"the crystal's lattice differs from the measured one by {100 * mismatch:.0f} % "
                             f"(wrong structure, zone axis or pixel-size calibration?)")
    maps = np.full((n, 4), np.nan)
    for p in np.nonzero(ok)[0]:
        maps[p] = lattice.strain_rotation(lattice.deformation(bases[p], reference))
    ok &= np.isfinite(maps).all(axis=1)
    shape2 = tuple(scan)
    orientation = None
    if turn is not None and config.crystal_frame is not None and vectors.tilt_mrad is not None:
        orientation = orientation_maps(config, turn, np.where(ok, maps[:, 3], np.nan), vectors.tilt_mrad, shape2)
    return {
        "exx": maps[:, 0].reshape(shape2), "eyy": maps[:, 1].reshape(shape2), "exy": maps[:, 2].reshape(shape2),
        "theta_deg": maps[:, 3].reshape(shape2), "residual_rms": resid.reshape(shape2),
        "n_indexed": n_indexed.reshape(shape2), "fit_ok": ok.reshape(shape2),
        "g1": bases[:, :, 0].reshape(*shape2, 2), "g2": bases[:, :, 1].reshape(*shape2, 2),
        "origin": origins.reshape(*shape2, 2),
        "reference_basis": reference, "start_basis": start, "reference_positions": int(ref_ok.sum()),
        "failed": int((~ok).sum()), "crystal_mismatch": mismatch,
        "corrected_reflections": None if offsets is None else len(offsets),
        "indexed_fraction": indexed.reshape(shape2), "not_one_lattice": not_one_lattice,
        "orientation": orientation,
    }


ORIENTATION_CONVENTION = (
    "orientation_matrix U (3x3 per position) maps a vector in the crystal's Cartesian frame (that of the cell "
    "in the file attribute crystal_lattice_A, rows a, b, c in Å) to the detector frame: x = q_x (detector axis "
    "0), y = q_y (axis 1), z = x × y, the beam's direction. U = T(θx, θy) Rz(θ) R0 F: F lays the zone axis on z, "
    "R0 the crystal's zero-order reflections on the reference lattice, Rz(θ) the position's in-plane rotation "
    "(theta_deg) and T the crystal tilt (tilt_mrad: the zone axis along (tan θx, tan θy, 1)). One of the "
    "orientations the projected lattice's symmetry cannot tell apart: where the crystal has no 2-fold axis along "
    "the zone axis, a tilt towards [uvw] + d and towards [uvw] - d give the same vectors. beam_direction_uvw: "
    "Uᵀ z in direction indices of that cell, scaled so that its projection on the nominal zone axis is the zone axis. "
    "euler_bunge_deg: (φ1, Φ, φ2) of g = Uᵀ (detector → crystal), g = Rz(φ2)ᵀ Rx(Φ)ᵀ Rz(φ1)ᵀ")


def orientation_maps(config: StrainConfig, turn: np.ndarray, theta_deg: np.ndarray, tilt_mrad: np.ndarray,
                     shape2: tuple[int, int]) -> dict:
    """The 3D orientation at every position from the crystal's frame, the reference's in-plane rotation
    ``turn``, the θ map and the crystal tilt (:func:`fourdcrystal.lattice.orientations`); NaN, and counted, where
    the lattice fit or the tilt fit failed."""
    cell = np.asarray(config.crystal_lattice_A, float)
    u = lattice.orientations(np.asarray(config.crystal_frame, float), turn, theta_deg,
                             np.asarray(tilt_mrad, float).reshape(-1, 2))
    ok = np.isfinite(u).all(axis=(1, 2))
    return {"orientation_matrix": u.reshape(*shape2, 3, 3),
            "beam_direction_uvw": lattice.beam_direction_uvw(u, cell, config.zone_axis).reshape(*shape2, 3),
            "off_axis_mrad": lattice.off_axis_mrad(u, cell, config.zone_axis).reshape(shape2),
            "euler_bunge_deg": lattice.bunge_euler_deg(u).reshape(*shape2, 3),
            "fitted": int(ok.sum()), "failed": int((~ok).sum())}


# real-space units a file's scan calibration may carry, in nm
_LENGTH_NM = {"nm": 1.0, "Å": 0.1, "A": 0.1, "angstrom": 0.1, "Angstrom": 0.1, "µm": 1e3, "um": 1e3, "pm": 1e-3}


def scan_step(vectors: VectorSet, given_nm: float | None = None) -> tuple[float | None, str]:
    """The scan step in nm and where it came from: ``given_nm`` (``scan_step_nm``), else the real-space pixel
    size the data file carried (EMD ``R_pixel_size``/``R_pixel_units``, kept by predict; a py4DSTEM file's own),
    else None (the maps are in scan positions).

    >>> vs = VectorSet((2, 2), np.zeros(5, int), np.zeros((0, 2)), np.zeros(0), "Å⁻¹", 0.02, "f", "model",
    ...                {"file_calibration": {"r_pixel_size": 5.0, "r_pixel_units": "Å"}})
    >>> scan_step(vs), scan_step(vs, 2.0)
    ((0.5, 'the data file (5 Å)'), (2.0, '`scan_step_nm`'))
    """
    if given_nm is not None:
        return float(given_nm), "`scan_step_nm`"
    a = vectors.attrs or {}
    fc = a.get("file_calibration") or {}
    size, units = fc.get("r_pixel_size", a.get("R_pixel_size")), fc.get("r_pixel_units", a.get("R_pixel_units"))
    try:
        size = float(size)
    except (TypeError, ValueError):
        return None, "none (give `scan_step_nm`)"
    if str(units) in _LENGTH_NM and math.isfinite(size) and size > 0:
        return size * _LENGTH_NM[str(units)], f"the data file ({size:g} {units})"
    return None, "none (give `scan_step_nm`)"


def run_strain(vectors_path: str | Path, out: str | Path, config: StrainConfig = StrainConfig(),
               overwrite: bool = False, png: bool = True) -> dict:
    """The stage: read, check, fit, write ``OUT`` (HDF5) and ``OUT`` with ``.png``. Returns a summary."""
    import h5py

    out = Path(out)
    check_config(config)
    vectors = read_vectors(vectors_path, config.method)
    if Path(vectors_path).resolve() == out.resolve():
        raise FourdError(f"`out` {out} is the input file; choose another name")
    parse_region(config.reference, vectors.scan_shape)
    check_new_file(out, (".h5", ".hdf5"), overwrite)
    step_nm, step_source = scan_step(vectors, config.scan_step_nm)
    with output_lock(out):
        result = strain_maps(vectors, config)
        attrs = {"schema": SCHEMA, "vectors": str(vectors_path), "method": vectors.method, "units": vectors.units,
                 "config": json.dumps(asdict(config)), "conventions": CONVENTIONS,
                 "reference_g1": result["reference_basis"][:, 0], "reference_g2": result["reference_basis"][:, 1],
                 "scan_shape": list(vectors.scan_shape), "failed_positions": result["failed"],
                 "not_one_lattice_positions": result["not_one_lattice"],
                 "crystal_mismatch": np.nan if result["crystal_mismatch"] is None else result["crystal_mismatch"],
                 "corrected_reflections": -1 if result["corrected_reflections"] is None
                 else result["corrected_reflections"],
                 "scan_step_nm": np.nan if step_nm is None else step_nm, "scan_step_source": step_source}
        try:
            with atomic_file(out) as tmp, h5py.File(tmp, "w") as f:
                f.attrs.update(attrs)
                for name in ("exx", "eyy", "exy", "theta_deg", "residual_rms", "indexed_fraction"):
                    f.create_dataset(name, data=result[name].astype(np.float32))
                for name in ("n_indexed", "g1", "g2", "origin"):
                    f.create_dataset(name, data=result[name])
                f.create_dataset("fit_ok", data=result["fit_ok"].astype(np.uint8))
                f["exx"].attrs["units"] = f["eyy"].attrs["units"] = f["exy"].attrs["units"] = "fraction"
                f["theta_deg"].attrs["units"] = "degree"
                f["residual_rms"].attrs["units"] = vectors.units
                if vectors.tilt_mrad is not None:  # the crystal tilt predict fitted, carried beside the maps
                    from ..detection.tilt import TILT_CONVENTION

                    for name in ("tilt_mrad", "tilt_sigma_mrad"):
                        d = f.create_dataset(name, data=getattr(vectors, name).astype(np.float32))
                        d.attrs.update(units="mrad", convention=TILT_CONVENTION)
                if result["orientation"] is not None:  # reference crystal and a tilt: the 3D orientation
                    o = result["orientation"]
                    f.attrs.update(crystal_lattice_A=np.asarray(config.crystal_lattice_A, float),
                                   zone_axis=list(config.zone_axis), orientation_convention=ORIENTATION_CONVENTION,
                                   orientation_failed_positions=o["failed"])
                    for name, units in (("orientation_matrix", "1"), ("beam_direction_uvw", "direction indices"),
                                        ("off_axis_mrad", "mrad"), ("euler_bunge_deg", "degree")):
                        f.create_dataset(name, data=o[name]).attrs.update(units=units,
                                                                          convention=ORIENTATION_CONVENTION)
        except OSError as exc:
            raise FourdError(f"cannot write {out}: {exc.strerror or exc}") from None
        png_path = None
        if png:
            from ..plots import strain_figure

            png_path = strain_figure(result, vectors, out.with_suffix(".png"),
                                     title=f"{Path(vectors_path).name}: {vectors.method} vectors, reference "
                                           f"{config.reference}", scan_step_nm=step_nm)
    return {"out": str(out), "png": str(png_path) if png_path else None, "failed": result["failed"],
            "scan_step_nm": step_nm, "scan_step_source": step_source,
            "not_one_lattice": result["not_one_lattice"],
            "positions": vectors.positions, "reference_basis": result["reference_basis"].tolist(),
            "units": vectors.units, "maps": result, "zone_axis": config.zone_axis}
