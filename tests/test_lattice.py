"""Lattice fitting, strain and rotation, checked against lattices computed independently
(pymatgen's lattice, numpy inverses) and against the atoms build_specimen makes."""

import math
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from fourdcrystal import lattice as L
from fourdcrystal.errors import FourdError
from fourdcrystal.specimens.specimen import build_specimen, rotation_z, zone_axis_frame


def _si():
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])


def _inplane_reciprocal(real_2d: np.ndarray) -> np.ndarray:
    """2D reciprocal basis (columns) of real-space in-plane lattice vectors (columns): Gᵀ A = I."""
    return np.linalg.inv(real_2d).T


def _deform(eps, theta_deg):
    c, s = math.cos(math.radians(theta_deg)), math.sin(math.radians(theta_deg))
    e = np.array([[1 + eps[0], eps[2]], [eps[2], 1 + eps[1]]])
    return e @ np.array([[c, -s], [s, c]])  # rotate, then strain along the detector axes


@pytest.mark.parametrize("structure,uvw", [
    (_si(), (0, 0, 1)),
    (_si(), (1, 1, 0)),
    (Structure(Lattice.hexagonal(3.21, 5.21), ["Mg", "Mg"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]), (0, 0, 1)),
])
def test_exact_lattice_points_give_back_the_applied_strain(structure, uvw):
    """Lattice points of a strained, rotated cell (real-space vectors from pymatgen, deformed, inverted
    by numpy) → the fit recovers ε to < 0.005 % and θ to < 1e-4°, for random tensors within ±3 %."""
    rot = rotation_z(17.0) @ zone_axis_frame(structure.lattice.matrix, uvw)
    # two in-plane lattice vectors: the shortest lattice vectors perpendicular to the beam
    cands = [np.array(v) for v in np.ndindex(5, 5, 5)]
    vecs = []
    for c in cands:
        idx = np.array(c) - 2
        v = idx @ structure.lattice.matrix @ rot.T
        if np.linalg.norm(v) > 1e-6 and abs(v[2]) < 1e-6:
            vecs.append(v[:2])
    vecs.sort(key=lambda v: np.linalg.norm(v))
    a1 = vecs[0]
    a2 = next(v for v in vecs if abs(a1[0] * v[1] - a1[1] * v[0]) > 1e-3)
    real = np.array([a1, a2]).T
    g_ref = _inplane_reciprocal(real)
    hk, q_ref = L.lattice_points(g_ref, 2.0)
    rng = np.random.default_rng(0)
    w = rng.uniform(0.2, 1.0, len(q_ref)) * np.exp(-np.linalg.norm(q_ref, axis=1) / 0.5)  # fading with |q|
    w[(hk == 0).all(axis=1)] = 10.0
    start = L.find_basis(*L.spots(q_ref, w, 0.01))
    ref_fit = L.fit_lattice(q_ref, start, w)
    assert ref_fit.n_used == len(q_ref)
    for _ in range(5):
        eps = rng.uniform(-0.03, 0.03, 3)
        theta = rng.uniform(-4, 4)
        f = _deform(eps, theta)
        g = _inplane_reciprocal(f @ real)  # the deformed crystal's reciprocal lattice, computed directly
        q = hk @ g_ref.T  # the same reflections ...
        q = (np.linalg.solve(g_ref, q.T).T) @ g.T  # ... at their deformed positions
        fit = L.fit_lattice(q, ref_fit.basis, w)
        exx, eyy, exy, th = L.strain_rotation(L.deformation(fit.basis, ref_fit.basis))
        np.testing.assert_allclose([exx, eyy, exy], eps, atol=5e-5)
        assert abs(th - theta) < 1e-4


def test_strain_and_rotation_of_a_pure_rotation_and_a_reflection():
    f = _deform((0, 0, 0), 30.0)
    np.testing.assert_allclose(L.strain_rotation(f), (0, 0, 0, 30.0), atol=1e-12)
    assert all(math.isnan(v) for v in L.strain_rotation(np.diag([1.0, -1.0])))


def test_specimen_atoms_carry_the_applied_strain():
    """build_specimen's atoms (periodic, normal strain; cut box with shear) diffract at F⁻ᵀ g:
    the kinematic structure factor of the projected atoms is full at the strained reflections."""
    si = _si()
    eps = (0.02, -0.015, 0.01)
    for strain in (eps[:2] + (0.0,), eps):
        sp = build_specimen(si, (0, 0, 1), 0.0, lateral_size_A=60.0, thickness_A=5.431, strain=strain)
        assert sp.plan.mode == ("cut" if strain[2] else "periodic")
        xy = sp.atoms.positions[:, :2]
        f = np.array([[1 + strain[0], strain[2]], [strain[2], 1 + strain[1]]])
        g_ref = np.array([[2.0, 2.0], [2.0, -2.0]]) / 5.431  # Si [001]: the (220) and (2-20) reflections
        for hk in ([3, 0], [0, 3], [3, 2], [-2, 3]):  # high order: a missed strain dephases them
            g = g_ref @ np.array(hk, float)
            g_strained = np.linalg.inv(f).T @ g
            amp = abs(np.exp(2j * np.pi * xy @ g_strained).sum()) / len(xy)
            amp_unstrained = abs(np.exp(2j * np.pi * xy @ g).sum()) / len(xy)
            assert amp > 0.9, (strain, hk, amp)
            assert amp_unstrained < 0.5 * amp, (strain, hk, amp_unstrained)


def test_find_basis_with_missing_reflections_and_noise():
    g = np.array([[0.319, 0.0], [0.0, 0.368]]).T
    hk, q = L.lattice_points(g, 1.5)
    rng = np.random.default_rng(3)
    keep = rng.uniform(size=len(q)) > 0.3
    keep[(hk == 0).all(axis=1)] = True
    hk, q = hk[keep], q[keep]
    many = np.concatenate([q + rng.normal(0, 0.003, q.shape) for _ in range(20)])
    w = np.ones(len(many))
    basis = L.find_basis(*L.spots(many, w, 0.01))
    assert abs(abs(np.linalg.det(basis)) - abs(np.linalg.det(g))) < 0.02 * abs(np.linalg.det(g))
    np.testing.assert_allclose(sorted(np.linalg.norm(basis, axis=0)), [0.319, 0.368], atol=0.003)


def test_find_basis_is_not_fooled_by_two_nearly_parallel_difference_vectors():
    # SrTiO3 [110] at 600 A under 1e5 e- (the strain survey's spots, tests/data): dynamical scattering moves the
    # (1-10) disks 0.02 A^-1 towards the zero beam, so differences of strong spots give two vectors 11 degrees
    # apart, (+-0.023, 0.247). Their lattice is fine along x (0.047 A^-1): with a tolerance taken from their own
    # length (0.25 A^-1) it indexed every spot and, being the smaller cell, won. The true one: 0.2535 x 0.363.
    d = np.loadtxt(Path(__file__).parent / "data" / "sto110_600A_1e5_spots.txt")
    basis = L.find_basis(d[:, :2], d[:, 2])
    np.testing.assert_allclose(sorted(np.linalg.norm(basis, axis=0)), [0.2535, 0.363], atol=0.003)
    np.testing.assert_allclose(abs(np.linalg.det(basis)), 0.2535 * 0.363, rtol=0.02)


def test_find_basis_does_not_take_a_finer_lattice_for_one_stray_spot():
    # Si [001] at 1000 A, noise-free, 240 A box (tests/data): the model placed one stray spot at (0.236, 0) A^-1,
    # 4 % of the weight. A lattice three times finer than the crystal's indexes it too; two thirds of its own points
    # near the zero beam are empty. The crystal's: {220} at 0.516 A^-1, a cell of 0.267 A^-2.
    d = np.loadtxt(Path(__file__).parent / "data" / "si001_1000A_clean_spots.txt")
    basis = L.find_basis(d[:, :2], d[:, 2])
    np.testing.assert_allclose(np.linalg.norm(basis, axis=0), [0.5176, 0.5176], atol=0.004)
    np.testing.assert_allclose(abs(np.linalg.det(basis)), 0.2679, rtol=0.02)


def test_fit_rejects_an_outlier_and_refuses_too_few_vectors():
    g = np.array([[0.3, 0.0], [0.0, 0.3]]).T
    _, q = L.lattice_points(g, 1.0)
    bad = np.vstack([q, [[0.15, 0.16]], [[0.62, 0.05]]])  # off-lattice and a shifted spot
    fit = L.fit_lattice(bad, g, None)
    assert fit.n_used == len(q)
    np.testing.assert_allclose(fit.basis, g, atol=1e-12)
    assert L.fit_lattice(q[:2], g) is None
    assert L.fit_lattice(np.array([[0, 0], [0.3, 0], [0.6, 0], [0.9, 0]]), g) is None  # collinear


def test_collinear_basis_is_refused():
    with pytest.raises(FourdError, match="collinear"):
        L.check_basis(np.array([[0.3, 0.0], [0.6, 0.01]]).T)
