"""The physical truth: exact reflections checked against the atoms and against simulated patterns, stored in
shards by simulate, added to old data sets by `fourdcrystal truth`, and what evaluate scores on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from fourdcrystal.simulation import shards
from fourdcrystal.simulation.cbed import Optics, simulate_specimen
from fourdcrystal.simulation.optics import disk_radius_invA
from fourdcrystal.simulation.truth import (
    ABSENT,
    IGNORED,
    REQUIRED,
    Reflections,
    VisibilityRule,
    reflections,
    specimen_reflections,
    zone_basis,
)
from fourdcrystal.specimens.specimen import build_specimen

from .conftest import run_cli


@pytest.fixture(scope="module")
def silicon() -> Structure:
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])


@pytest.fixture(scope="module")
def wurtzite() -> Structure:  # hexagonal: a non-cubic check of the reciprocal geometry
    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"],
                                     [[1 / 3, 2 / 3, 0.0], [1 / 3, 2 / 3, 0.382]])


def _projected_structure_factor(atoms, q: np.ndarray) -> np.ndarray:
    """|Σ_atoms exp(2πi q·r)| over the atoms' lateral positions, at lateral wave vectors q (n, 2) in Å⁻¹: the
    kinematic amplitude of the slab, computed from the atoms alone (no lattice)."""
    xy = atoms.positions[:, :2]
    return np.abs(np.exp(2j * np.pi * (q @ xy.T)).sum(axis=1))


@pytest.mark.parametrize("case", ["si-periodic", "si-cut-strained-sheared-atoms-tilt", "zno-periodic-strained"])
def test_exact_g_are_the_maxima_of_the_atoms_structure_factor(case, silicon, wurtzite):
    """Independent of the lattice algebra: the slab's own atoms scatter most at each predicted ZOLZ g (strong
    reflections), more than a fifth of a reciprocal box pixel away in any direction."""
    if case == "si-periodic":
        sp = build_specimen(silicon, (1, 1, 0), phi_deg=17.0, lateral_size_A=40, thickness_A=40.0)
    elif case == "zno-periodic-strained":
        sp = build_specimen(wurtzite, (0, 0, 1), phi_deg=33.0, lateral_size_A=40, thickness_A=30.0,
                            strain=(0.01, -0.02, 0.0))
    else:
        sp = build_specimen(silicon, (1, 1, 0), phi_deg=17.0, tilt_mrad=(8.0, -5.0), lateral_size_A=40,
                            thickness_A=40.0, strain=(0.01, -0.005, 0.004), tilt_mode="atoms", phi_tol_deg=0.01)
    assert (sp.plan.mode == "periodic") == case.endswith("periodic") or "strained" in case
    box = np.array(sp.plan.box_A)
    refl = reflections(sp.lattice_A, sp.zone_axis, list(sp.cell_symbols), sp.cell_frac, 200e3, 2.0, 40.0,
                       (96, 96), tuple(1 / box), (0.0, 0.0))
    zolz = refl.laue_zone == 0
    strong = zolz & (refl.vg_V >= 0.2 * refl.vg_V[0]) & (np.linalg.norm(refl.q_invA, axis=1) < 1.2)
    assert strong.sum() >= 6
    q = refl.q_invA[strong]
    at = _projected_structure_factor(sp.atoms, q)
    assert np.all(at > 0.3 * len(sp.atoms) * refl.vg_V[strong] / refl.vg_V[0] * 0.5)  # a Bragg peak, not a gap
    for shift in ([1, 0], [-1, 0], [0, 1], [0, -1], [0.7, 0.7]):
        off = _projected_structure_factor(sp.atoms, q + 0.2 * np.asarray(shift) / box)
        assert np.all(at > off), (case, shift)
    if "atoms-tilt" in case:  # a crystal tilted off the beam: its ZOLZ reflections leave the plane q_z = 0
        assert np.abs(refl.gz_invA[strong]).max() > 1e-3
        # first order in θ: q_z = −θx g_x − θy g_y (fourdcrystal.specimens.specimen)
        np.testing.assert_allclose(refl.gz_invA[strong], -(8e-3 * q[:, 0] - 5e-3 * q[:, 1]), atol=2e-4)


def test_disk_centres_of_a_simulated_pattern_are_at_the_exact_g(silicon):
    """Multislice CBED of a rotated, strained, sheared cut box with a tilted beam: the centre of every strong
    disk's support (where it has intensity: its edge, not its dynamical contrast) lies at its exact position;
    the zero beam stays at the pattern centre."""
    sp = build_specimen(silicon, (1, 1, 0), phi_deg=19.5, tilt_mrad=(3.0, -2.0), lateral_size_A=40,
                        thickness_A=[100.0], strain=(0.01, -0.005, 0.004), phi_tol_deg=0.01)
    assert sp.plan.mode == "cut"
    optics = Optics(energy_eV=200e3, semiangle_mrad=3.0, output_px=128)
    res = simulate_specimen(sp, optics, np.array([np.array(sp.plan.box_A) / 2]), planning="estimate")
    cbed = res.cbed[0, 0]
    refl = specimen_reflections(sp, cbed, 200e3, 3.0, float(res.thickness_A[0]), res.k_sampling_invA)
    dk = np.array(res.k_sampling_invA)
    radius_px = disk_radius_invA(3.0, 200e3) / dk[0]
    ii, jj = np.meshgrid(np.arange(128), np.arange(128), indexing="ij")
    offsets = []
    for k in np.nonzero((refl.laue_zone == 0) & (refl.strength > 0.05))[0]:
        p = refl.q_invA[k] / dk + 64
        if not (10 < p[0] < 118 and 10 < p[1] < 118):
            continue
        near = np.hypot(ii - p[0], jj - p[1]) <= radius_px + 2
        w = near & (cbed > 1e-3 * cbed[near].max())  # the disk's support
        centroid = np.array([(w * ii).sum(), (w * jj).sum()]) / w.sum()
        offsets.append(centroid - p)
    # a pixel-quantised edge (its centre scatters by ~0.1 px): each within 0.2 px, no common shift, rms under
    # 0.1 px; a swapped axis, a sign of the rotation or a beam tilt moving the pattern would be pixels off
    offsets = np.array(offsets)
    assert len(offsets) >= 8 and np.linalg.norm(offsets, axis=1).max() < 0.2, offsets
    assert np.abs(offsets.mean(axis=0)).max() < 0.04 and np.sqrt((offsets ** 2).sum(axis=1).mean()) < 0.1
    assert np.all(refl.hkl[0] == 0) and refl.strength[0] == pytest.approx(1.0)


def test_strength_and_the_visibility_rule(silicon):
    """Si [001]: {220} are strong and required; {100} and {110}, absences of the F lattice, are not listed;
    {200}, forbidden by the glide, is listed but absent in the pattern (no zero-layer path fills it); a
    reflection off the scored region is ignored; a crowded pattern (disks overlapping) requires nothing."""
    sp = build_specimen(silicon, (0, 0, 1), lateral_size_A=5.431 * 6, thickness_A=[60.0])
    optics = Optics(energy_eV=200e3, semiangle_mrad=2.0, output_px=96)
    res = simulate_specimen(sp, optics, np.array([np.array(sp.plan.box_A) / 2]), planning="estimate")
    refl = specimen_reflections(sp, res.cbed[0, 0], 200e3, 2.0, float(res.thickness_A[0]), res.k_sampling_invA)
    hkl = [tuple(int(x) for x in r) for r in refl.hkl]
    s = dict(zip(hkl, refl.strength))
    assert s[(2, 2, 0)] > 0.01 and s[(0, 0, 0)] == pytest.approx(1.0)
    assert (1, 0, 0) not in s and (1, 1, 0) not in s and (2, 1, 0) not in s
    assert s[(2, 0, 0)] < 0.002 and s[(0, 2, 0)] < 0.002
    v = dict(zip(hkl, refl.vg_V))
    assert v[(2, 0, 0)] < 1e-6 * v[(0, 0, 0)] and v[(2, 2, 0)] > 0.05 * v[(0, 0, 0)]
    rd = disk_radius_invA(2.0, 200e3)
    pixel = max(res.k_sampling_invA)
    scored = np.linalg.norm(refl.q_invA, axis=1) < 0.6  # {220} at 0.52 Å⁻¹ inside, {400} at 0.74 outside
    status = VisibilityRule().classify(refl, scored, rd, pixel)
    st = dict(zip(hkl, status))
    assert st[(2, 2, 0)] == REQUIRED and st[(0, 0, 0)] == REQUIRED and st[(2, 0, 0)] == ABSENT
    outer = [h for h, q in zip(hkl, refl.q_invA) if np.linalg.norm(q) > 0.6 and s[h] >= 0.01]
    assert outer and all(st[h] == IGNORED for h in outer)
    crowded = VisibilityRule(min_separation_radii=1e3).classify(refl, scored, rd, pixel)
    assert not (crowded == REQUIRED).any() and (crowded == IGNORED).any()


def test_zone_basis_spans_the_zero_layer():
    for uvw in [(1, 0, 0), (1, 1, 0), (1, 1, 1), (2, 1, 0), (2, 1, 1), (1, -2, 1)]:
        basis, offset = zone_basis(uvw)
        assert np.all(basis @ np.array(uvw) == 0) and offset @ np.array(uvw) == 1
        assert abs(np.cross(basis[0], basis[1]) @ np.array(uvw)) == np.dot(uvw, uvw)  # ± [uvw]: primitive


def _tiny_dataset(base: Path) -> Path:
    cat, spec, out = base / "cat", base / "spec", base / "ds"
    assert run_cli("-q", "select", "--max-crystals", "3", "--out", str(cat)).exit_code == 0
    assert run_cli("-q", "supercell", str(cat), "--out", str(spec), "--zone-axes", "1", "--thickness", "20,40",
                   "--lateral-size", "12", "--max-index", "1").exit_code == 0
    res = run_cli("-q", "simulate", str(spec), "--out", str(out), "--output-px", "32", "--specimens-per-shard", "2",
                  "--semiangle", "3")
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_dataset(tmp_path_factory.mktemp("truth"))


def test_simulate_writes_truth_and_the_truth_command_adds_the_same_to_old_shards(tiny, tmp_path):
    ds = tiny
    index = json.loads((ds / "index.json").read_text())
    files = [e["file"] for e in index["shards"]]
    before = {}
    for name in files:
        with shards.Shard(ds / name) as sh:
            assert sh.has_truth
            before[name] = [sh.reflections(i) for i in range(len(sh))]
            assert all(len(r) >= 1 and np.all(r.hkl[0] == 0) for r in before[name])
            cbed_before = sh.file["cbed"][...]
    # a data set from before the truth: the group removed, everything else as it was
    old = tmp_path / "old"
    shutil.copytree(ds, old)
    for name in files:
        with h5py.File(old / name, "r+") as f:
            del f["truth"]
    res = run_cli("evaluate", "release", str(old), "--out", str(tmp_path / "ev"))
    assert res.exit_code == 2 and res.output.startswith("error: ") and "fourdcrystal truth" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "ev").exists()
    res = run_cli("truth", str(old))
    assert res.exit_code == 0, res.output
    assert f"truth added to {len(files)} of {len(files)} shards" in res.output
    for name in files:
        with shards.Shard(old / name) as sh:
            for i, r in enumerate(before[name]):
                got = sh.reflections(i)
                for field in Reflections.names():
                    np.testing.assert_array_equal(getattr(got, field), getattr(r, field), err_msg=field)
        with shards.Shard(old / files[-1]) as sh:
            np.testing.assert_array_equal(sh.file["cbed"][...], cbed_before)  # the patterns untouched
    assert "truth added to 0 of" in run_cli("truth", str(old)).output  # a rerun has nothing left to do
    # the wrong specimens folder is refused by its hash, before any work
    other = tmp_path / "other-spec"
    shutil.copytree(tiny.parent / "spec", other)
    (other / "specimens.csv").write_text((other / "specimens.csv").read_text().replace("\n", "\n", 1) + "\n")
    res = run_cli("truth", str(old), "--specimens", str(other), "--overwrite")
    assert res.exit_code == 2 and "is not the specimens folder" in res.output


def test_training_on_the_truth_target(tiny, tmp_path):
    """train.target truth_presence / truth_vg: the vg the network learns is a Gaussian at the exact position of
    every visible reflection (zero beam 1); train records the target in the card, and refuses shards without
    the truth before it writes anything."""
    from fourdcrystal.simulation.truth import target_map
    from fourdcrystal.training.data import ShardDataset, open_dataset

    _, where, _ = open_dataset(tiny)
    name, row = where["train"][0]
    item = ShardDataset(tiny, where["train"][:1], 1.0, target="truth_presence")[0]["vg"][0].numpy()
    with shards.Shard(tiny / name) as sh:
        refl, dk = sh.reflections(row), sh.meta("k_sampling_invA")[row]
    h, w = item.shape
    assert item[h // 2, w // 2] == pytest.approx(1.0) and item.max() == pytest.approx(1.0)
    keep = (refl.laue_zone == 0) & (refl.strength >= 0.002) & (refl.vg_V >= 0.01 * refl.vg_V[0])
    px = refl.q_invA[keep] / dk + [h // 2, w // 2]
    on = np.all((px > 0.5) & (px < [h - 1.5, w - 1.5]), axis=1)
    ij = np.rint(px[on]).astype(int)
    assert len(ij) >= 3 and np.all(item[ij[:, 0], ij[:, 1]] > 0.5)  # every visible reflection carries a peak
    vg = ShardDataset(tiny, where["train"][:1], 1.0, target="truth_vg")[0]["vg"][0].numpy()
    np.testing.assert_allclose(vg, target_map(refl, (h, w), dk, 0.75, "vg"))
    cfg = tmp_path / "t.yaml"
    cfg.write_text(json.dumps({"train": {"target": "truth_vg", "patience": 0}}))
    out = tmp_path / "m"
    res = run_cli("-q", "train", str(tiny), "--config", str(cfg), "--width", "4", "--depth", "2", "--batch-size", "4",
                  "--loader-workers", "0", "--epochs", "1", "--out", str(out))
    assert res.exit_code == 0, res.output
    card = json.loads((out / "model.json").read_text())
    assert card["training"]["config"]["target"] == "truth_vg"
    old = tmp_path / "old"
    shutil.copytree(tiny, old)
    for entry in json.loads((old / "index.json").read_text())["shards"]:
        with h5py.File(old / entry["file"], "r+") as f:
            del f["truth"]
    res = run_cli("train", str(old), "--config", str(cfg), "--epochs", "1", "--out", str(tmp_path / "m2"))
    assert res.exit_code == 2 and "fourdcrystal truth" in res.output and not (tmp_path / "m2").exists()


def test_holz_reflections_lie_on_the_folz_ring():
    """A cell 40 Å long along the beam: its first-order Laue zone cuts the Ewald sphere on a ring of radius
    √(2H/λ), H = 1/40 Å⁻¹ (1.41 Å⁻¹ at 200 kV), independent of the lattice algebra; the truth keeps the
    excited HOLZ reflections there and marks them ignored, never required."""
    from fourdcrystal.simulation.optics import wavelength_A

    lattice = np.diag([4.0, 4.0, 40.0])
    frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.3]])
    lam = wavelength_A(200e3)
    refl = reflections(lattice, (0, 0, 1), ["Si", "Si"], frac, 200e3, 2.0, 200.0, (128, 128), (0.03, 0.03))
    # the beam runs along +z: the sphere bends to g_z < 0, so the layer h·[uvw] = −1 meets it
    folz = refl.laue_zone == -1
    assert folz.sum() >= 8 and not np.any(refl.laue_zone == 1)
    radius = np.sqrt(2 * (1 / 40.0) / lam)
    q = np.linalg.norm(refl.q_invA[folz], axis=1)
    # kept where the disk's directions and the slab's width reach the sphere: |s| ≤ α|g| + 1/t, a band of
    # half-width (α|g| + 1/t) / (λR) about the ring
    assert np.all(np.abs(q - radius) <= (2e-3 * q + 1 / 200.0) / (lam * radius) * 1.05), (q.min(), q.max(), radius)
    assert q.min() < radius < q.max()
    refl.strength = np.where(folz, 0.05, np.where(refl.laue_zone == 0, 0.5, 0.0)).astype(np.float32)
    status = VisibilityRule().classify(refl, np.ones(len(refl), bool), 0.08, 0.03)
    assert np.all(status[folz] == IGNORED) and not np.any(status[refl.laue_zone != 0] == REQUIRED)
