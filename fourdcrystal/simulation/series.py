"""A strain / rotation series as a 4D-STEM scan: each scan position one specimen of known deformation.

Made so the whole chain can be checked as a user runs it (simulate → predict → strain) against
the truth. Every position is a cut box of the same lateral size (so every pattern has the same
detector pixel size, 1/L), the crystal rotated by φ0 + θ_i about the beam and strained by ε_i
along the detector axes (:func:`fourdcrystal.specimens.specimen.build_specimen`), probe at the box
centre. Position 0 is the unstrained, unrotated reference. No file I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure

from ..errors import FourdError
from ..progress import progress
from ..specimens.specimen import (
    CellPlan,
    build_specimen,
    check_strain,
    check_zone_axis,
    period_z_A,
)
from .cbed import Optics, simulate_specimen


@dataclass
class Series:
    """cbed (T, N, H, W) float32 (vacuum probe max = 1), the truth per position, the calibration (k_pixel_invA: the
    detector's pixel; box_A: the simulated box)."""

    cbed: np.ndarray
    probe: np.ndarray  # (H, W) vacuum probe, max 1
    thickness_A: np.ndarray  # (T,) realised
    strain: np.ndarray  # (N, 3) applied (ε_xx, ε_yy, ε_xy), fractions, detector frame
    rotation_deg: np.ndarray  # (N,) in-plane rotation θ relative to position 0, counter-clockwise
    k_pixel_invA: float
    box_A: float
    tilt_mrad: np.ndarray | None = None  # (N, 2) crystal tilt (θx, θy): the zone axis along (tan θx, tan θy, 1)
    orientation: np.ndarray | None = None  # (N, 3, 3) crystal Cartesian (the structure's cell) -> detector frame


def random_series(n: int, strain_pct: float, rotation_deg: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) strains (fractions) uniform in ±``strain_pct`` % and (N,) rotations uniform in ±``rotation_deg``;
    position 0 is (0, 0, 0), 0°."""
    if n < 2:
        raise FourdError(f"a series needs at least 2 positions (the reference and one more), got {n}")
    rng = np.random.default_rng(seed)
    strains = rng.uniform(-strain_pct, strain_pct, size=(n, 3)) / 100.0
    rots = rng.uniform(-rotation_deg, rotation_deg, size=n)
    strains[0], rots[0] = 0.0, 0.0
    return strains, rots


def bin_detector(patterns: np.ndarray, factor: int) -> np.ndarray:
    """Sum simulated diffraction pixels into detector pixels ``factor`` times larger, q = 0 kept on a pixel centre.

    A simulated pattern of side n has q = 0 at pixel n // 2; detector pixel i integrates the fine pixels within
    ±factor / 2 of fine pixel factor · i (an even factor splits the two boundary pixels half-and-half between
    neighbours), so q = 0 lands on detector pixel (n / factor) // 2 and the total is kept (up to the edge).

    Parameters
    ----------
    patterns : (..., n, n) intensities; n / factor an even integer.
    factor : detector pixel / simulated pixel (≥ 1).

    Returns
    -------
    (..., n / factor, n / factor) summed intensities, the input's dtype.

    >>> p = np.zeros((8, 8)); p[4, 4] = 1.0; p[5, 4] = 2.0  # q = 0 at (4, 4); one fine pixel beyond it
    >>> bin_detector(p, 2)[1:4, 1:4].tolist()
    [[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 1.0, 0.0]]
    """
    if factor == 1:
        return patterns
    n = patterns.shape[-1]
    if factor < 1 or patterns.shape[-2] != n or n % factor or (n // factor) % 2:
        raise FourdError(f"cannot bin a {patterns.shape[-2]}×{n} pattern by {factor}: expected a square side that is "
                         f"an even multiple of the factor")
    half, m = factor // 2, n // factor
    kernel = np.ones(factor + 1 - factor % 2)
    if factor % 2 == 0:
        kernel[[0, -1]] = 0.5
    padded = np.pad(np.asarray(patterns, np.float64), [(0, 0)] * (patterns.ndim - 2) + [(half, half)] * 2)
    out = np.zeros(patterns.shape[:-2] + (m, m))
    for a, wa in enumerate(kernel):  # fine pixel factor·i + k (|k| ≤ half) is padded index factor·i + k + half
        for b, wb in enumerate(kernel):
            out += wa * wb * padded[..., a:a + factor * m:factor, b:b + factor * m:factor]
    return out.astype(patterns.dtype)


def simulate_series(structure: Structure, zone_axis, strains: np.ndarray, rotations_deg: np.ndarray,
                    optics: Optics, thicknesses_A, lateral_size_A: float = 60.0, phi_deg: float = 0.0,
                    threads: int = 1, planning: str = "estimate", detector_bin: int = 1,
                    tilts_mrad: np.ndarray | None = None) -> Series:
    """Simulate one CBED pattern per (strain, rotation) at every thickness.

    Parameters
    ----------
    structure : the crystal (conventional cell).
    zone_axis : [uvw] along the beam.
    strains : (N, 3) in-plane strain (ε_xx, ε_yy, ε_xy), fractions, along the detector axes.
    rotations_deg : (N,) in-plane rotations about the beam, degrees, counter-clockwise.
    optics : energy, semi-angle, pattern size, slices.
    thicknesses_A : exit planes of one propagation, Å.
    lateral_size_A : the cut box side, Å; the simulated pixel is 1 / this, Å⁻¹.
    phi_deg : the reference in-plane rotation.
    detector_bin : detector pixel / simulated pixel: ``optics.output_px`` simulated pixels a side are summed into
        output_px / detector_bin detector pixels of detector_bin / lateral_size_A Å⁻¹ (:func:`bin_detector`).
        A larger box read through the same detector pixels holds more of the crystal around the probe.
    tilts_mrad : (N, 2) crystal tilts (θx, θy) in mrad, the atoms rotated rigidly (``tilt_mode="atoms"``):
        the zone axis along (tan θx, tan θy, 1). None: untilted.

    Returns
    -------
    Series
    """
    uvw = check_zone_axis(zone_axis)
    if optics.output_px % detector_bin or (optics.output_px // detector_bin) % 2:
        raise FourdError(f"detector bin {detector_bin}: the simulated side {optics.output_px} px must be an even "
                         f"multiple of it")
    strains = np.asarray(strains, float).reshape(-1, 3)
    rotations_deg = np.asarray(rotations_deg, float).reshape(-1)
    if len(strains) != len(rotations_deg):
        raise FourdError(f"{len(strains)} strains but {len(rotations_deg)} rotations")
    for e in strains:
        check_strain(e)
    tilts = np.zeros((len(strains), 2)) if tilts_mrad is None else np.asarray(tilts_mrad, float).reshape(-1, 2)
    if len(tilts) != len(strains):
        raise FourdError(f"{len(strains)} strains but {len(tilts)} tilts")
    lattice = structure.lattice.matrix
    cbeds, probe, realised, orientation = [], None, None, []
    for e, rot, tilt in progress(list(zip(strains, rotations_deg, tilts)), desc="strain series", unit="specimen"):
        plan = CellPlan("cut", float(phi_deg + rot), None, 0.0, (float(lateral_size_A),) * 2, (1, 1),
                        period_z_A(lattice, uvw))
        sp = build_specimen(structure, uvw, plan.phi_deg, tuple(tilt), lateral_size_A, list(thicknesses_A),
                            plan=plan, strain=tuple(e), tilt_mode="atoms")
        orientation.append(sp.rotation)
        res = simulate_specimen(sp, optics, np.array([[lateral_size_A / 2] * 2]), threads=threads,
                                planning=planning, with_labels=False)
        cbeds.append(res.cbed[:, 0])
        probe, realised = res.probe[0], res.thickness_A
    cbed = np.stack(cbeds, axis=1)
    if detector_bin > 1:
        cbed, probe = bin_detector(cbed, detector_bin), bin_detector(probe, detector_bin)
        scale = np.float32(1.0 / float(probe.max()))  # the vacuum probe's maximum stays 1
        cbed, probe = cbed * scale, probe * scale
    return Series(cbed, probe, realised, strains, rotations_deg, detector_bin / float(lateral_size_A),
                  float(lateral_size_A), tilts, np.array(orientation))
