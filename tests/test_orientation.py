"""The 3D orientation per position (``strain --reference crystal`` with a tilt), checked against orientations
built independently: scipy's rotations and pymatgen's reciprocal lattice, none of fourdcrystal's geometry."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from fourdcrystal.cli import cli
from fourdcrystal.io.vectors import VectorSet
from fourdcrystal.lattice import bunge_euler_deg
from fourdcrystal.maps.strain import StrainConfig, crystal_reference, strain_maps

# (in-plane rotation φ in degrees, crystal tilt (θx, θy) in mrad) per position of a 2 × 3 scan
POSES = [(25.0, (0.0, 0.0)), (25.4, (3.0, -1.5)), (24.7, (-6.0, 2.0)),
         (25.0, (7.5, 7.0)), (26.0, (0.4, -8.0)), (24.2, (-2.5, -3.5))]


def true_orientation(cell_A: np.ndarray, uvw, phi_deg: float, tilt_mrad) -> np.ndarray:
    """Crystal Cartesian → detector frame: the zone axis laid on +z, turned by φ about z, then tilted so that it
    points along (tan θx, tan θy, 1), by the shortest rotation (scipy, not fourdcrystal)."""
    d = np.asarray(uvw, float) @ cell_A
    lay, _ = Rotation.align_vectors([[0.0, 0.0, 1.0]], [d / np.linalg.norm(d)])
    t = np.array([np.tan(tilt_mrad[0] * 1e-3), np.tan(tilt_mrad[1] * 1e-3), 1.0])
    t /= np.linalg.norm(t)
    axis = np.cross([0.0, 0.0, 1.0], t)
    tilt = Rotation.from_rotvec(axis / max(np.linalg.norm(axis), 1e-300) * np.arccos(t[2]))
    return (tilt * Rotation.from_euler("z", phi_deg, degrees=True) * lay).as_matrix()


def zolz_reflections(structure: Structure, uvw, reach_invA: float = 1.3) -> np.ndarray:
    """The zero-order Laue zone reflections (crystal Cartesian, Å⁻¹, no 2π) of the structure's Bravais lattice
    within ``reach_invA``: pymatgen's reciprocal lattice of the primitive cell."""
    recip = structure.get_primitive_structure().lattice.reciprocal_lattice_crystallographic.matrix
    r = np.arange(-8, 9)
    g = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3) @ recip
    d = np.asarray(uvw, float) @ structure.lattice.matrix
    keep = (np.abs(g @ d) < 1e-9) & (np.linalg.norm(g, axis=1) <= reach_invA)
    return g[keep]


def scan_of(structure_path, uvw, tilt_nan_at: int | None = None) -> tuple[dict, VectorSet, list, np.ndarray]:
    crystal = crystal_reference(structure_path, uvw)
    structure = Structure.from_file(str(structure_path))
    cell = structure.lattice.matrix
    # the file's cell is a conventional one: [uvw] and the orientation's crystal frame are its own
    np.testing.assert_allclose(crystal["crystal_lattice_A"], cell, atol=1e-9)
    g = zolz_reflections(structure, uvw)
    truths, qs, counts, tilts = [], [], [], []
    for phi, tilt in POSES:
        u = true_orientation(cell, uvw, phi, tilt)
        truths.append(u)
        q = (g @ u.T)[:, :2]  # where each reflection lands on the detector (x = q_x, y = q_y)
        qs.append(q)
        counts.append(len(q))
        tilts.append(tilt)
    tilts = np.array(tilts, float).reshape(2, 3, 2)
    if tilt_nan_at is not None:
        tilts.reshape(-1, 2)[tilt_nan_at] = np.nan
    q = np.concatenate(qs)
    vs = VectorSet((2, 3), np.concatenate([[0], np.cumsum(counts)]), q, np.exp(-np.linalg.norm(q, axis=1)),
                   "Å⁻¹", 0.02, "memory", "model", tilt_mrad=tilts, tilt_sigma_mrad=np.full((2, 3, 2), 0.3))
    return crystal, vs, truths, g


@pytest.fixture(scope="module")
def cifs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cifs")
    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    si.to(filename=str(d / "Si.cif"))
    # monoclinic P2/m, one atom: along [1 0 2] no symmetry of the crystal turns the zone about the beam
    mono = Structure(Lattice.monoclinic(4.1, 5.3, 6.2, 103.0), ["Si"], [[0, 0, 0]])
    mono.to(filename=str(d / "mono.cif"))
    return d


@pytest.mark.parametrize("name, uvw", [("Si.cif", (1, 1, 0)), ("Si.cif", (0, 0, 1)), ("mono.cif", (1, 0, 2))])
def test_the_orientation_lays_the_zone_axis_on_the_tilt_and_the_reflections_where_they_were_measured(cifs, name,
                                                                                                      uvw):
    """Per position: a proper rotation; the zone axis lands on (tan θx, tan θy, 1) of the true tilt; the
    projected zero-order reflections are the true ones (the orientation is one the projection cannot tell from
    the truth); off_axis_mrad is the tilt's angle; the Bunge angles rebuild the matrix in scipy."""
    crystal, vs, truths, g = scan_of(cifs / name, uvw)
    res = strain_maps(vs, StrainConfig(reference="crystal", **crystal))
    o = res["orientation"]
    assert o["fitted"] == 6 and o["failed"] == 0
    cell = np.asarray(crystal["crystal_lattice_A"])
    axis = np.asarray(uvw, float) @ cell
    axis /= np.linalg.norm(axis)
    for p, (u_true, (_, tilt)) in enumerate(zip(truths, POSES)):
        u = o["orientation_matrix"].reshape(-1, 3, 3)[p]
        np.testing.assert_allclose(u @ u.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(u) == pytest.approx(1.0)
        np.testing.assert_allclose(u @ axis, u_true @ axis, atol=2e-6)
        got, want = (g @ u.T)[:, :2], (g @ u_true.T)[:, :2]
        nearest = np.linalg.norm(got[:, None] - want[None], axis=2).min(axis=1)
        assert nearest.max() < 2e-6  # Å⁻¹: every reflection on a true one
        angle = 1e3 * np.arccos(1 / np.sqrt(1 + np.tan(tilt[0] * 1e-3) ** 2 + np.tan(tilt[1] * 1e-3) ** 2))
        assert o["off_axis_mrad"].ravel()[p] == pytest.approx(angle, abs=2e-3)
        euler = o["euler_bunge_deg"].reshape(-1, 3)[p]
        np.testing.assert_allclose(Rotation.from_euler("ZXZ", euler, degrees=True).as_matrix(), u, atol=1e-9)


def test_the_beam_direction_is_the_true_one_in_the_crystals_indices(cifs):
    """Si [110]: the beam's direction in the crystal, [u v w] indices, is the truth's (or its image under the
    crystal's 2-fold axis along [110], which the projection cannot tell apart): near [1 1 0] by the tilt."""
    crystal, vs, truths, _ = scan_of(cifs / "Si.cif", (1, 1, 0))
    o = strain_maps(vs, StrainConfig(reference="crystal", **crystal))["orientation"]
    cell = np.asarray(crystal["crystal_lattice_A"])
    two_fold = Rotation.from_rotvec(np.pi * np.array([1.0, 1.0, 0.0]) / np.sqrt(2)).as_matrix()
    for p, u_true in enumerate(truths):
        beam = u_true.T @ [0.0, 0.0, 1.0]  # crystal Cartesian
        got = o["beam_direction_uvw"].reshape(-1, 3)[p]
        candidates = [b @ np.linalg.inv(cell) for b in (beam, two_fold @ beam)]
        candidates = [c * 2.0 / (c[0] + c[1]) for c in candidates]  # projection on [110] is [110] (cubic)
        assert min(np.abs(got - c).max() for c in candidates) < 1e-6
    assert np.abs(o["beam_direction_uvw"].reshape(-1, 3)[0] - [1, 1, 0]).max() < 1e-9  # no tilt: on the axis


def test_bunge_angles_of_random_orientations_rebuild_them():
    rots = Rotation.random(200, random_state=3).as_matrix()
    flat = np.array([Rotation.from_euler("z", 40, degrees=True).as_matrix(),
                     Rotation.from_euler("ZXZ", [30, 180, 0], degrees=True).as_matrix()])
    for u in np.concatenate([rots, flat]):
        e = bunge_euler_deg(u[None])[0]
        assert 0 <= e[0] < 360 and 0 <= e[1] <= 180 and 0 <= e[2] < 360
        np.testing.assert_allclose(Rotation.from_euler("ZXZ", e, degrees=True).as_matrix(), u, atol=1e-9)


def test_strain_writes_the_orientation_with_units_and_nan_where_the_tilt_failed(cifs, tmp_path):
    from .test_strain import _predict_like_file

    crystal, vs, truths, _ = scan_of(cifs / "Si.cif", (1, 1, 0), tilt_nan_at=4)
    src = _predict_like_file(tmp_path / "v.h5", vs)
    with h5py.File(src, "a") as f:
        f["model"]["tilt_mrad"] = vs.tilt_mrad.astype(np.float32)
        f["model"]["tilt_sigma_mrad"] = vs.tilt_sigma_mrad.astype(np.float32)
    out = tmp_path / "o.h5"
    r = CliRunner().invoke(cli, ["strain", str(src), "--reference", "crystal", "--structure", str(cifs / "Si.cif"),
                                 "--zone-axis", "1", "1", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "3D orientation (zone axis [1 1 0] and tilt) at 5 of 6 positions" in r.output
    assert "NaN at 1 (lattice or tilt fit failed)" in r.output
    with h5py.File(out) as f:
        assert f["orientation_matrix"].shape == (2, 3, 3, 3) and f["beam_direction_uvw"].shape == (2, 3, 3)
        assert f["off_axis_mrad"].attrs["units"] == "mrad" and f["euler_bunge_deg"].attrs["units"] == "degree"
        assert "detector frame" in f["orientation_matrix"].attrs["convention"]
        assert f.attrs["orientation_failed_positions"] == 1 and list(f.attrs["zone_axis"]) == [1, 1, 0]
        np.testing.assert_allclose(f.attrs["crystal_lattice_A"], crystal["crystal_lattice_A"])
        assert np.isnan(f["orientation_matrix"][1, 1]).all() and np.isnan(f["off_axis_mrad"][1, 1])
        u = f["orientation_matrix"][0, 1]
        axis = np.array([1.0, 1.0, 0.0]) @ np.asarray(crystal["crystal_lattice_A"])
        np.testing.assert_allclose(u @ axis / np.linalg.norm(axis), truths[1] @ axis / np.linalg.norm(axis),
                                   atol=1e-5)  # float32 vectors in the file
    # without the tilt: said, and nothing written that was not measured
    plain = _predict_like_file(tmp_path / "plain.h5", vs)
    r = CliRunner().invoke(cli, ["strain", str(plain), "--reference", "crystal", "--structure",
                                 str(cifs / "Si.cif"), "--zone-axis", "1", "1", "0", "--out", str(tmp_path / "p.h5")])
    assert r.exit_code == 0 and "3D orientation: not written, the vectors carry no tilt" in r.output
    with h5py.File(tmp_path / "p.h5") as f:
        assert "orientation_matrix" not in f


def test_a_primitive_cell_file_takes_the_zone_axis_in_the_conventional_cell(tmp_path):
    """Si as its 2-atom primitive cell: [110] is the conventional cell's [110] (a cubic cell of 5.431 Å), not the
    primitive cell's; a file in a conventional setting keeps its own axes (the monoclinic case above)."""
    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]]).get_primitive_structure()
    si.to(filename=str(tmp_path / "prim.cif"))
    crystal = crystal_reference(tmp_path / "prim.cif", (1, 1, 0))
    np.testing.assert_allclose(np.abs(crystal["crystal_lattice_A"]), np.eye(3) * 5.431, atol=1e-6)
    # {111} ⟂ [110]: √3/a long
    np.testing.assert_allclose(np.linalg.norm(crystal["crystal_basis"], axis=0), np.sqrt(3) / 5.431, rtol=1e-9)


def test_a_tilted_series_excites_the_side_its_truth_says_and_stores_the_orientation(tmp_path):
    """simulate_series with crystal tilts (atoms rotated): a zone axis tilted to (θ, 0, 1) gives reflections at +g_x
    an excitation error s = θ g_x − λ g²/2 nearer 0 than those at −g_x (the Ewald sphere through the origin, beam
    along +z), so the +q_x half of the pattern is the brighter for θ = +6 mrad and the dimmer for −6 mrad; the
    series' truth holds the tilt, and an orientation that lays the zone axis along (tan θx, tan θy, 1)."""
    from fourdcrystal.evaluation.strain_benchmark import write_series_file
    from fourdcrystal.simulation.cbed import Optics
    from fourdcrystal.simulation.series import simulate_series

    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    tilts = np.array([[6.0, 0.0], [-6.0, 0.0], [0.0, 0.0], [0.0, 6.0]])
    s = simulate_series(si, (0, 0, 1), np.zeros((4, 3)), np.zeros(4), Optics(200e3, 2.0, output_px=128), [150.0],
                        40.0, tilts_mrad=tilts)
    n = s.cbed.shape[-1]
    q = (np.arange(n) - n // 2) * s.k_pixel_invA
    qx, qy = np.meshgrid(q, q, indexing="ij")  # q_x along axis 0
    outside = np.hypot(qx, qy) > 0.3  # off the zero disk
    halves = [(c[outside & (qx > 0)].sum(), c[outside & (qx < 0)].sum()) for c in s.cbed[0]]
    assert halves[0][0] > 1.2 * halves[0][1] and halves[1][1] > 1.2 * halves[1][0]
    assert halves[2][0] == pytest.approx(halves[2][1], rel=0.05) and halves[3][0] == pytest.approx(halves[3][1],
                                                                                                   rel=0.05)
    top = [c[outside & (qy > 0)].sum() / c[outside & (qy < 0)].sum() for c in s.cbed[0]]
    assert top[3] > 1.2 and top[0] == pytest.approx(1.0, rel=0.05)  # θy: the +q_y half
    np.testing.assert_allclose(s.tilt_mrad, tilts)
    axis = np.array([0.0, 0.0, 1.0]) @ si.lattice.matrix
    for u, (tx, ty) in zip(s.orientation, tilts):
        want = np.array([np.tan(tx * 1e-3), np.tan(ty * 1e-3), 1.0])
        np.testing.assert_allclose(u @ axis / np.linalg.norm(axis), want / np.linalg.norm(want), atol=1e-12)
    path = tmp_path / "series.h5"
    write_series_file(path, s.cbed[0], s, s.strain, s.rotation_deg, (2, 2), 200e3, 2.0, {"dose": "clean"})
    with h5py.File(path) as f:
        np.testing.assert_allclose(f["truth/tilt_mrad"][()].reshape(4, 2), tilts)
        np.testing.assert_allclose(f["truth/orientation_matrix"][()].reshape(4, 3, 3), s.orientation)
