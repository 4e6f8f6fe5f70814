"""A strain / rotation series as a 4D-STEM scan: each scan position one specimen of known deformation.

Made so the whole chain can be checked as a user runs it (simulate → predict → strain) against
the truth. Every position is a cut box of the same lateral size (so every pattern has the same
detector pixel size, 1/L), the crystal rotated by φ0 + θ_i about the beam and strained by ε_i
along the detector axes (:func:`fourdcrystal.specimen.build_specimen`), probe at the box
centre. Position 0 is the unstrained, unrotated reference. No file I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure

from ..errors import FourdError
from ..progress import progress
from ..specimen import (
    CellPlan,
    build_specimen,
    check_strain,
    check_zone_axis,
    period_z_A,
)
from .cbed import Optics, simulate_specimen


@dataclass
class Series:
    """cbed (T, N, H, W) float32 (vacuum probe max = 1), the truth per position, the calibration."""

    cbed: np.ndarray
    probe: np.ndarray  # (H, W) vacuum probe, max 1
    thickness_A: np.ndarray  # (T,) realised
    strain: np.ndarray  # (N, 3) applied (ε_xx, ε_yy, ε_xy), fractions, detector frame
    rotation_deg: np.ndarray  # (N,) in-plane rotation θ relative to position 0, counter-clockwise
    k_pixel_invA: float
    box_A: float


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


def simulate_series(structure: Structure, zone_axis, strains: np.ndarray, rotations_deg: np.ndarray,
                    optics: Optics, thicknesses_A, lateral_size_A: float = 60.0, phi_deg: float = 0.0,
                    threads: int = 1, planning: str = "estimate") -> Series:
    """Simulate one CBED pattern per (strain, rotation) at every thickness.

    Parameters
    ----------
    structure : the crystal (conventional cell).
    zone_axis : [uvw] along the beam.
    strains : (N, 3) in-plane strain (ε_xx, ε_yy, ε_xy), fractions, along the detector axes.
    rotations_deg : (N,) in-plane rotations about the beam, degrees, counter-clockwise.
    optics : energy, semi-angle, pattern size, slices.
    thicknesses_A : exit planes of one propagation, Å.
    lateral_size_A : the cut box side, Å; the detector pixel is 1 / this, Å⁻¹.
    phi_deg : the reference in-plane rotation.

    Returns
    -------
    Series
    """
    uvw = check_zone_axis(zone_axis)
    strains = np.asarray(strains, float).reshape(-1, 3)
    rotations_deg = np.asarray(rotations_deg, float).reshape(-1)
    if len(strains) != len(rotations_deg):
        raise FourdError(f"{len(strains)} strains but {len(rotations_deg)} rotations")
    for e in strains:
        check_strain(e)
    lattice = structure.lattice.matrix
    cbeds, probe, realised = [], None, None
    for e, rot in progress(list(zip(strains, rotations_deg)), desc="strain series", unit="specimen"):
        plan = CellPlan("cut", float(phi_deg + rot), None, 0.0, (float(lateral_size_A),) * 2, (1, 1),
                        period_z_A(lattice, uvw))
        sp = build_specimen(structure, uvw, plan.phi_deg, (0.0, 0.0), lateral_size_A, list(thicknesses_A),
                            plan=plan, strain=tuple(e))
        res = simulate_specimen(sp, optics, np.array([[lateral_size_A / 2] * 2]), threads=threads,
                                planning=planning, with_labels=False)
        cbeds.append(res.cbed[:, 0])
        probe, realised = res.probe[0], res.thickness_A
    return Series(np.stack(cbeds, axis=1), probe, realised, strains, rotations_deg, 1.0 / float(lateral_size_A),
                  float(lateral_size_A))
