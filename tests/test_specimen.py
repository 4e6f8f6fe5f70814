"""Specimen geometry checked against independent physics (hand-computed kinematic reflections,
bulk distances and densities), determinism and errors."""

import itertools
import math
import warnings

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from scipy.spatial import cKDTree

from fourdcrystal.errors import FourdError
from fourdcrystal.specimens.specimen import build_specimen, distinct_zone_axes, plan_cell

A_SI = 5.431


@pytest.fixture(scope="module")
def si():
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(A_SI), ["Si"], [[0, 0, 0]])


def expected_zolz_g(uvw, gmax):
    """Hand calculation: diamond reflections hkl with hkl·uvw = 0 and |g| = |hkl|/a ≤ gmax (Å⁻¹).

    Diamond (fcc + basis at 1/4 1/4 1/4): allowed when h, k, l are all odd, or all even with
    h + k + l divisible by 4. Everything else (e.g. {200}, {222}) is kinematically forbidden.
    """
    n = int(gmax * A_SI) + 1
    out = []
    for h, k, l in itertools.product(range(-n, n + 1), repeat=3):
        if (h, k, l) == (0, 0, 0) or h * uvw[0] + k * uvw[1] + l * uvw[2] != 0:
            continue
        odd = all(x % 2 for x in (h, k, l))
        even4 = all(x % 2 == 0 for x in (h, k, l)) and (h + k + l) % 4 == 0
        g = math.sqrt(h * h + k * k + l * l) / A_SI
        if (odd or even4) and g <= gmax:
            out.append(g)
    return sorted(out)


def observed_zolz(atoms, gmax, threshold=0.05):
    """Kinematic ZOLZ reflections of the built slab: |Σ exp(2πi g·r)|/N on its reciprocal grid."""
    lx, ly = atoms.cell[0, 0], atoms.cell[1, 1]
    xy = atoms.positions[:, :2]
    ni, nj = int(gmax * lx) + 1, int(gmax * ly) + 1
    found = []
    for i in range(-ni, ni + 1):
        gx = i / lx
        phase_x = np.exp(2j * np.pi * gx * xy[:, 0])
        for j in range(-nj, nj + 1):
            gy = j / ly
            g = math.hypot(gx, gy)
            if g == 0 or g > gmax:
                continue
            amp = abs(np.sum(phase_x * np.exp(2j * np.pi * gy * xy[:, 1]))) / len(xy)
            if amp > threshold:
                found.append((g, gx, gy))
    return sorted(found)


@pytest.mark.parametrize("uvw", [(0, 0, 1), (1, 1, 0), (1, 1, 1)])
def test_si_zolz_matches_hand_calculation(si, uvw):
    plan = plan_cell(si.lattice.matrix, uvw, 0.0, 25.0)
    sp = build_specimen(si, uvw, 0.0, (0, 0), 25.0, 2 * plan.period_z_A, plan=plan)
    assert sp.plan.mode == "periodic" and sp.plan.strain < 1e-9
    # zone axis along +z to 1e-6 rad, computed from the lattice and the rotation used
    t = np.asarray(uvw, float) @ si.lattice.matrix @ sp.rotation.T
    assert math.atan2(math.hypot(t[0], t[1]), t[2]) < 1e-6
    gmax = 0.8
    obs = observed_zolz(sp.atoms, gmax)
    exp = expected_zolz_g(uvw, gmax)
    assert [round(g, 6) for g, *_ in obs] == [round(g, 6) for g in exp]


def test_si_001_reflections_and_forbidden_200(si):
    sp = build_specimen(si, (0, 0, 1), 0.0, (0, 0), 22.0, 4 * A_SI)
    obs = observed_zolz(sp.atoms, 0.8)
    g220, g400, g200 = 2 * math.sqrt(2) / A_SI, 4 / A_SI, 2 / A_SI
    assert sum(abs(g - g220) < 1e-6 for g, *_ in obs) == 4
    assert sum(abs(g - g400) < 1e-6 for g, *_ in obs) == 4
    assert not any(abs(g - g200) < 1e-3 for g, *_ in obs)
    # at phi = 0 the [100] direction lies along +x: (400) at (4/a, 0)
    assert any(abs(gx - g400) < 1e-6 and abs(gy) < 1e-9 for _, gx, gy in obs)


def test_inplane_rotation_rotates_reflections(si):
    sp = build_specimen(si, (0, 0, 1), 45.0, (0, 0), 25.0, 2 * A_SI)
    assert sp.plan.mode == "periodic" and abs(sp.plan.phi_deg - 45.0) < 1e-9
    obs = observed_zolz(sp.atoms, 0.8)
    g400 = 4 / A_SI
    # (400) rotated by +45°: (g/√2, g/√2)
    assert any(abs(gx - g400 / math.sqrt(2)) < 1e-6 and abs(gy - g400 / math.sqrt(2)) < 1e-6 for _, gx, gy in obs)


def _aflow_by_system():
    from pymatgen.analysis.prototypes import AFLOW_PROTOTYPE_LIBRARY

    picked = {}
    for entry in AFLOW_PROTOTYPE_LIBRARY:
        s = entry["snl"].structure
        if len(s) > 24:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sga = SpacegroupAnalyzer(s, symprec=0.1)
            system = sga.get_crystal_system()
            if system not in picked:
                picked[system] = sga.get_conventional_standard_structure()
    return picked


def _bulk_min_distance(s):
    big = s.copy()
    big.make_supercell([3, 3, 3])
    d = big.distance_matrix
    return float(d[d > 1e-8].min())


def _slab_min_distance(atoms):
    pos = atoms.positions.copy()
    if atoms.pbc[0]:
        box = [atoms.cell[0, 0], atoms.cell[1, 1], 1e6]
        pos[:, 2] += 1.0  # cKDTree's periodic box needs coordinates in [0, box)
        tree = cKDTree(pos, boxsize=box)
    else:
        tree = cKDTree(pos)
    d, _ = tree.query(pos, k=2)
    return float(d[:, 1].min())


def test_every_crystal_system_distances_and_density():
    systems = _aflow_by_system()
    assert len(systems) == 7
    for system, s in systems.items():
        for uvw in distinct_zone_axes(s, 1)[:3]:
            plan = plan_cell(s.lattice.matrix, uvw, 0.0, 30.0, phi_tol_deg=180.0)  # any φ: want periodic
            t = plan.period_z_A * max(1, math.ceil(12.0 / plan.period_z_A))
            sp = build_specimen(s, uvw, plan.phi_deg, (0, 0), 30.0, t, plan=plan)
            bulk = _bulk_min_distance(s)
            assert _slab_min_distance(sp.atoms) >= bulk * (1 - 2 * plan.strain) - 1e-3, (system, uvw)
            if plan.mode == "periodic":
                rho_bulk = len(s) / s.volume
                rho = len(sp.atoms) / sp.atoms.get_volume()
                assert abs(rho / rho_bulk - 1) <= 3 * plan.strain + 1e-9, (system, uvw, rho, rho_bulk)


def test_beam_tilt_keeps_atoms_and_atoms_tilt_rotates_rigidly(si):
    flat = build_specimen(si, (0, 0, 1), 0.0, (0, 0), 22.0, 4 * A_SI)
    beam = build_specimen(si, (0, 0, 1), 0.0, (20.0, -10.0), 22.0, 4 * A_SI)
    assert np.array_equal(flat.atoms.positions, beam.atoms.positions) and beam.plan.mode == "periodic"
    assert beam.info["tilt_mode"] == "beam" and beam.tilt_mrad == (20.0, -10.0)
    rot = build_specimen(si, (0, 0, 1), 0.0, (20.0, -10.0), 22.0, 4 * A_SI, tilt_mode="atoms")
    assert rot.plan.mode == "cut"
    # independent: the [001] lattice vector ends along (tan θx, tan θy, 1)
    t = np.array([0, 0, A_SI]) @ rot.rotation.T
    assert np.allclose(t / np.linalg.norm(t), np.array([math.tan(0.02), math.tan(-0.01), 1]) /
                       math.sqrt(1 + math.tan(0.02) ** 2 + math.tan(0.01) ** 2), atol=1e-12)
    assert np.allclose(rot.rotation @ rot.rotation.T, np.eye(3), atol=1e-12)  # rigid: no strain
    assert _slab_min_distance(rot.atoms) >= _bulk_min_distance(si) - 1e-6


def test_deterministic(si):
    a = build_specimen(si, (1, 1, 0), 30.0, (5.0, 5.0), 30.0, [50.0, 100.0])
    b = build_specimen(si, (1, 1, 0), 30.0, (5.0, 5.0), 30.0, [100.0, 50.0])
    assert np.array_equal(a.atoms.positions, b.atoms.positions)
    assert np.array_equal(a.atoms.numbers, b.atoms.numbers)


def test_cut_fallback_when_no_periodic_cell(si):
    plan = plan_cell(si.lattice.matrix, (1, 2, 3), 0.0, 30.0, fallback="cut")
    sp = build_specimen(si, (1, 2, 3), 0.0, (0, 0), 30.0, 30.0, plan=plan)
    assert sp.plan.mode == "cut" and not sp.atoms.pbc[0] and sp.plan.phi_deg == 0.0
    nearest = plan_cell(si.lattice.matrix, (1, 2, 3), 0.0, 40.0)  # default: the nearest periodic φ
    assert nearest.mode == "periodic" and nearest.strain <= 0.005
    with pytest.raises(FourdError, match="no periodic cell"):
        plan_cell(si.lattice.matrix, (1, 2, 3), 0.0, 30.0, fallback="error")
    assert _slab_min_distance(sp.atoms) >= _bulk_min_distance(si) - 1e-6


def test_distinct_zone_axes_cubic_and_hexagonal(si):
    assert distinct_zone_axes(si, 1) == [(1, 0, 0), (1, 1, 0), (1, 1, 1)]
    mg = Structure(Lattice.hexagonal(3.209, 5.211), ["Mg", "Mg"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    axes = distinct_zone_axes(mg, 1)
    assert (0, 0, 1) in axes and len(axes) == len(set(axes))
    # 6-fold axis: a1, a2 and a1+a2 are one family; a1-a2 (length a√3) is another
    assert sum(a in axes for a in [(1, 0, 0), (0, 1, 0), (1, 1, 0)]) == 1
    assert (1, -1, 0) in axes


@pytest.mark.parametrize("kwargs, fragment", [
    ({"zone_axis": (0, 0, 0)}, "zero vector"),
    ({"zone_axis": (1, 0.5, 0)}, "expected three integers"),
    ({"tilt_mrad": (40.0, 40.0)}, "exceeds the small-angle limit of 50 mrad"),
    ({"lateral_size_A": 3.0}, "cannot hold one unit cell"),
    ({"thickness_A": -5.0}, "expected a positive thickness"),
])
def test_errors(si, kwargs, fragment):
    args = dict(zone_axis=(0, 0, 1), phi_deg=0.0, tilt_mrad=(0, 0), lateral_size_A=20.0, thickness_A=20.0)
    args.update(kwargs)
    with pytest.raises(FourdError, match=fragment):
        build_specimen(si, **args)
