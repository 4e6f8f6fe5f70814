"""One specimen in, its training samples out: CBED, vacuum probe, V_g and q_z. No file I/O.

A sample is one (probe position, thickness) of one specimen. All four images share one
reciprocal-space grid of H×W pixels, q = 0 at pixel (H//2, W//2), pixel size 1/L in Å⁻¹
(L the specimen box). The real-space grid has G = 3H/2 points so that abTEM's 2/3 anti-aliasing
aperture spans exactly the H×W output (see ``optics.antialiased_gpts``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import FourdError
from ..specimens.specimen import Specimen
from . import engine, labels
from .optics import antialiased_gpts, disk_radius_invA, max_semiangle_mrad

PARAMETRIZATIONS = ("lobato", "kirkland")


@dataclass(frozen=True)
class Optics:
    """Microscope and numerics. Energies eV, angles mrad, lengths Å."""

    energy_eV: float = 200e3
    semiangle_mrad: float = 2.0
    defocus_A: float = 0.0  # abTEM convention: positive = underfocus
    cs_A: float = 0.0
    output_px: int = 256
    slice_thickness_A: float = 2.0
    parametrization: str = "lobato"

    def check(self) -> "Optics":
        if not self.energy_eV > 0:
            raise FourdError(f"energy {self.energy_eV!r} eV: expected a positive beam energy, e.g. 200e3")
        if not self.semiangle_mrad > 0:
            raise FourdError(f"semiangle {self.semiangle_mrad!r} mrad: expected a positive convergence semi-angle")
        if not self.slice_thickness_A > 0:
            raise FourdError(f"slice thickness {self.slice_thickness_A!r} Å: expected a positive number")
        if self.parametrization not in PARAMETRIZATIONS:
            raise FourdError(f"parametrization {self.parametrization!r}: expected one of {', '.join(PARAMETRIZATIONS)}")
        antialiased_gpts(self.output_px)
        return self

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Samples:
    """Arrays of one specimen: index [thickness, position] for cbed; [position] for probe."""

    cbed: np.ndarray  # (T, B, H, W) float32, scaled so the vacuum probe has max 1
    probe: np.ndarray  # (B, H, W) float32, max 1
    vg: np.ndarray  # (T, H, W) float32, V·Å
    qz: np.ndarray  # (T, H, W) float32, Å⁻¹
    thickness_A: np.ndarray  # (T,) realised thicknesses (whole slices)
    positions_A: np.ndarray  # (B, 2)
    k_sampling_invA: tuple[float, float]
    slice_thickness_A: float


def check_semiangle(optics: Optics, box_A: tuple[float, float]) -> None:
    """The probe aperture must fit inside the band limit of the grid."""
    g = antialiased_gpts(optics.output_px)
    sampling = max(box_A[0] / g, box_A[1] / g)
    limit = max_semiangle_mrad(optics.energy_eV, sampling)
    if optics.semiangle_mrad >= limit:
        raise FourdError(f"semiangle {optics.semiangle_mrad:g} mrad is too large for a {optics.output_px} px pattern "
                         f"of a {max(box_A):.1f} Å box at {optics.energy_eV:g} eV; the largest allowed is "
                         f"{limit:.1f} mrad (raise output_px or shrink the lateral size)")


def probe_positions(specimen: Specimen, count: int, mode: str, rng: np.random.Generator) -> np.ndarray:
    """(count, 2) probe positions in Å: the box centre, or uniform random.

    A cut box is not periodic, so random positions stay in its central half, away from edges.
    """
    lx, ly = specimen.plan.box_A
    if mode == "center":
        return np.tile([[lx / 2, ly / 2]], (count, 1))
    if mode != "random":
        raise FourdError(f"probe position {mode!r}: expected center or random")
    if specimen.plan.mode == "periodic":
        return rng.uniform([0, 0], [lx, ly], size=(count, 2))
    return rng.uniform([lx / 4, ly / 4], [3 * lx / 4, 3 * ly / 4], size=(count, 2))


def simulate_specimen(specimen: Specimen, optics: Optics, positions_A: np.ndarray, frozen_phonons: int = 0,
                      phonon_sigma_A: float = 0.08, seed: int = 0, threads: int = 1,
                      planning: str = "measure", with_labels: bool = True) -> Samples:
    """Multislice CBED for every probe position and thickness of ``specimen``, plus labels.

    Beam-mode tilt (``specimen.info['tilt_mode'] == 'beam'``) tilts the probe; atoms-mode tilt is
    already in the atoms. ``frozen_phonons`` > 0 averages that many thermal configurations
    (isotropic Gaussian displacements of ``phonon_sigma_A``, seeded); the labels then use the
    configuration-averaged potential (Debye–Waller smeared, like the measured Bragg beams).
    ``with_labels=False`` skips the labels (``vg`` and ``qz`` are then empty arrays).
    """
    optics.check()
    box = specimen.plan.box_A
    check_semiangle(optics, box)
    h = w = optics.output_px
    g = antialiased_gpts(optics.output_px)
    gpts = (g, g)
    sampling = (box[0] / g, box[1] / g)
    k_sampling = (1.0 / box[0], 1.0 / box[1])
    beam_tilt = specimen.tilt_mrad if specimen.info.get("tilt_mode", "beam") == "beam" else (0.0, 0.0)
    thicknesses = specimen.info.get("thicknesses_A", [specimen.thickness_A])
    periodic_z = z_period_A(specimen)
    positions_A = np.atleast_2d(np.asarray(positions_A, dtype=float))

    waves = engine.probe_waves(gpts, box, optics.energy_eV, optics.semiangle_mrad, positions_A,
                               defocus_A=optics.defocus_A, cs_A=optics.cs_A, tilt_mrad=beam_tilt)
    probe = engine.vacuum_intensity(waves, gpts, sampling, (h, w))
    scale = 1.0 / float(probe.max())

    if frozen_phonons and frozen_phonons > 0:
        stack, exits, cbed = _frozen_phonon_run(specimen, optics, gpts, waves, thicknesses, beam_tilt,
                                                frozen_phonons, phonon_sigma_A, seed, threads, planning)
    else:
        stack = engine.build_slices(specimen.atoms, gpts, optics.slice_thickness_A, specimen.thickness_A,
                                    periodic_z, optics.parametrization)
        exits = _exits(thicknesses, stack)
        t = engine.transmission_functions(stack.potential, optics.energy_eV, sampling)
        prop = engine.fresnel_propagator(gpts, sampling, stack.slice_thickness_A, optics.energy_eV, beam_tilt)
        cbed = engine.propagate(waves, t, stack.order, prop, exits, crop=(h, w), threads=threads, planning=planning)
    if with_labels:
        vg, qz = labels.bragg_labels(stack.potential, stack.order, stack.slice_thickness_A, exits, (h, w),
                                     beam_tilt_mrad=beam_tilt, k_sampling_invA=k_sampling)
    else:
        vg = qz = np.zeros((len(exits), 0, 0), np.float32)
    return Samples(cbed=(cbed * scale).astype(np.float32), probe=(probe * scale).astype(np.float32), vg=vg, qz=qz,
                   thickness_A=np.array(exits) * stack.slice_thickness_A, positions_A=positions_A,
                   k_sampling_invA=k_sampling, slice_thickness_A=stack.slice_thickness_A)


def memory_bytes(output_px: int, period_z_A: float | None, thicknesses_A,
                 slice_thickness_A: float, positions: int, frozen_phonons: int = 0) -> float:
    """Bytes one specimen's simulation holds at once, an upper estimate (25 % margin for the small arrays).

    The sliced potential (float32) and its transmission functions (complex64) of one repeat unit (a
    period along z, or the whole slab), the probe waves with their FFT buffers, the exit patterns and
    the labels (float32). The grid follows ``output_px`` alone (1.5× it, whatever the box).
    """
    g = antialiased_gpts(output_px) ** 2
    t_max = max(float(t) for t in thicknesses_A)
    n_unit = max(1, round(period_z_A / slice_thickness_A)) if period_z_A else math.ceil(t_max / slice_thickness_A)
    waves = positions * max(1, frozen_phonons if frozen_phonons else 1)
    big = (n_unit * g * (4 + 8)  # potential + transmission functions
           + 4 * waves * g * 8  # waves, FFT in/out, the propagated batch
           + len(thicknesses_A) * (positions * 2 + 4) * output_px**2 * 4)  # patterns, probe, labels
    return 1.25 * big


def z_period_A(specimen: Specimen) -> float | None:
    """The repeat distance of the specimen's potential along the beam in Å, or None (a whole slab).

    A periodic cell repeats every |t| along z. So does a cut box (a sheared or rotated-in-plane
    crystal) as long as the zone axis stays along z: in-plane strain leaves z untouched, and a prism
    cut along z of a crystal with a lattice vector t ∥ z holds the same atoms at z and z + |t|. Only a
    crystal tilted off the beam (tilt mode ``atoms``) has no period along z. Slicing one period
    instead of the slab makes thick cut boxes several times cheaper (potential and labels).
    """
    if specimen.plan.mode == "periodic":
        return specimen.plan.period_z_A
    tilted = specimen.info.get("tilt_mode", "beam") == "atoms" and tuple(specimen.tilt_mrad) != (0.0, 0.0)
    return None if tilted else specimen.plan.period_z_A


def _exits(thicknesses, stack: engine.SliceStack) -> list[int]:
    exits = engine.exit_slices(thicknesses, stack.slice_thickness_A)
    if min(exits) < 3:
        raise FourdError(f"thickness {min(thicknesses):g} Å is under 3 slices of {stack.slice_thickness_A:.3g} Å; "
                         f"the label's Tukey window along z needs at least 3 (use a thicker specimen or thinner slices)")
    return [min(e, stack.num_slices) for e in exits]


def _frozen_phonon_run(specimen, optics, gpts, waves, thicknesses, beam_tilt, n_configs, sigma_A, seed, threads,
                       planning):
    """Incoherent average over displaced configurations of the whole slab (no z periodicity)."""
    from abtem import FrozenPhonons

    box = specimen.plan.box_A
    sampling = (box[0] / gpts[0], box[1] / gpts[1])
    n, dz = engine.slice_plan(specimen.thickness_A, z_period_A(specimen), optics.slice_thickness_A)
    n_total = max(1, int(round(specimen.thickness_A / dz)))
    atoms = specimen.atoms[specimen.atoms.positions[:, 2] < n_total * dz - 1e-9]
    atoms.set_cell([box[0], box[1], n_total * dz])
    fp = FrozenPhonons(atoms, num_configs=n_configs, sigmas=sigma_A, seed=seed)
    mean_pot = None
    cbed = None
    prop = engine.fresnel_propagator(gpts, sampling, dz, optics.energy_eV, beam_tilt)
    for config in fp:
        config.positions[:, 2] = np.clip(config.positions[:, 2], 0.0, n_total * dz - 1e-6)
        stack = engine.build_slices(config, gpts, dz, n_total * dz, None, optics.parametrization)
        exits = _exits(thicknesses, stack)
        t = engine.transmission_functions(stack.potential, optics.energy_eV, sampling)
        c = engine.propagate(waves, t, stack.order, prop, exits, crop=(optics.output_px,) * 2, threads=threads,
                             planning=planning)
        cbed = c if cbed is None else cbed + c
        mean_pot = stack.potential if mean_pot is None else mean_pot + stack.potential
    stack.potential = (mean_pot / n_configs).astype(np.float32)
    return stack, exits, cbed / n_configs


def disk_radius_px(optics: Optics, k_sampling_invA: float) -> float:
    """Bright-field disk radius in pixels (α/λ over the pixel size)."""
    return disk_radius_invA(optics.semiangle_mrad, optics.energy_eV) / k_sampling_invA
