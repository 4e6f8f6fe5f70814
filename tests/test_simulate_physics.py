"""Physics of the simulate stage, checked against abTEM and against hand calculations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from fourdcrystal.errors import FourdError
from fourdcrystal.simulation import engine
from fourdcrystal.simulation.cbed import Optics, simulate_specimen
from fourdcrystal.specimens.specimen import build_specimen, tilt_rotation

A_SI = 5.431  # Å


@pytest.fixture(scope="module")
def silicon():
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(A_SI), ["Si"], [[0, 0, 0]])


def _abtem_exit_wave(atoms, gpts, extent, energy, semiangle, defocus, tilt, pos, dz):
    import abtem

    pot = abtem.Potential(atoms, gpts=gpts, slice_thickness=dz, projection="infinite", parametrization="lobato")
    probe = abtem.Probe(gpts=gpts, extent=extent, energy=energy, semiangle_cutoff=semiangle, defocus=defocus,
                        tilt=tilt)
    return np.asarray(probe.multislice(pot, scan=np.array([pos]), lazy=False).array).reshape(gpts)


@pytest.mark.parametrize("tilt", [(0.0, 0.0), (12.0, -7.0)])
def test_lean_loop_equals_abtem_multislice(silicon, tilt):
    # abTEM slices the whole slab itself; the engine repeats one period's slices
    sp = build_specimen(silicon, (1, 1, 0), lateral_size_A=15, thickness_A=[40.0])
    period = sp.plan.period_z_A
    gpts = (72, 72)
    box = sp.plan.box_A
    stack = engine.build_slices(sp.atoms, gpts, 1.5, sp.thickness_A, period)
    n = (stack.num_slices // round(period / stack.slice_thickness_A)) * round(period / stack.slice_thickness_A)
    slab = sp.atoms[sp.atoms.positions[:, 2] < n * stack.slice_thickness_A - 1e-9]
    slab.set_cell([box[0], box[1], n * stack.slice_thickness_A])
    pos = (box[0] * 0.37, box[1] * 0.61)
    waves = engine.probe_waves(gpts, box, 200e3, 12.0, [pos], defocus_A=30.0, tilt_mrad=tilt)
    t = engine.transmission_functions(stack.potential, 200e3, stack.sampling_A)
    p = engine.fresnel_propagator(gpts, stack.sampling_A, stack.slice_thickness_A, 200e3, tilt)
    mine = np.fft.ifft2(engine.propagate(waves, t, stack.order, p, [n], return_waves=True)[0, 0])
    ref = _abtem_exit_wave(slab, gpts, box, 200e3, 12.0, 30.0, tilt, pos, stack.slice_thickness_A)
    assert np.linalg.norm(mine - ref) / np.linalg.norm(ref) < 1e-4


def test_thickness_series_equals_separate_runs(silicon):
    sp = build_specimen(silicon, (0, 0, 1), lateral_size_A=10, thickness_A=[30.0])
    gpts = (48, 48)
    stack = engine.build_slices(sp.atoms, gpts, 2.0, sp.thickness_A, sp.plan.period_z_A)
    waves = engine.probe_waves(gpts, sp.plan.box_A, 200e3, 10.0, [(5.0, 5.0), (1.0, 2.0)])
    t = engine.transmission_functions(stack.potential, 200e3, stack.sampling_A)
    p = engine.fresnel_propagator(gpts, stack.sampling_A, stack.slice_thickness_A, 200e3)
    series = engine.propagate(waves, t, stack.order, p, [6, 12], crop=(32, 32))
    alone = engine.propagate(waves, t, stack.order, p, [6], crop=(32, 32))
    np.testing.assert_allclose(series[0], alone[0], rtol=1e-6)
    single = engine.propagate(waves[1:], t, stack.order, p, [12], crop=(32, 32))
    np.testing.assert_allclose(series[1, 1], single[0, 0], rtol=1e-5, atol=1e-9)


@pytest.fixture(scope="module")
def si001(silicon):
    sp = build_specimen(silicon, (0, 0, 1), lateral_size_A=20, thickness_A=[60.0, 120.0])
    optics = Optics(output_px=96, semiangle_mrad=3.0)
    box = sp.plan.box_A
    return sp, optics, simulate_specimen(sp, optics, [(box[0] / 2, box[1] / 2)])


def _pixel(g_invA, k):
    """Pixel (row, col) of a reflection g = (gx, gy) in Å⁻¹ on a grid centred at H//2."""
    return int(round(g_invA[0] / k[0])), int(round(g_invA[1] / k[1]))


def _family(hkl_list):
    return [np.array(h[:2], float) / A_SI for h in hkl_list]


G220 = [(2, 2, 0), (2, -2, 0), (-2, 2, 0), (-2, -2, 0)]
G400 = [(4, 0, 0), (-4, 0, 0), (0, 4, 0), (0, -4, 0)]
G200 = [(2, 0, 0), (-2, 0, 0), (0, 2, 0), (0, -2, 0)]


def test_si001_vg_peaks_at_220_and_400_not_200(si001):
    sp, optics, s = si001
    k = s.k_sampling_invA
    c = optics.output_px // 2
    for t in range(len(s.thickness_A)):
        vg = s.vg[t]
        # the eight strongest local maxima off the centre are the {220} and {400} reflections
        expected = {_pixel(g, k) for g in _family(G220 + G400)}
        from scipy.ndimage import maximum_filter

        peaks = (vg == maximum_filter(vg, size=5)) & (vg > 0)
        peaks[c - 2:c + 3, c - 2:c + 3] = False
        r, q = np.nonzero(peaks)
        order = np.argsort(vg[r, q])[::-1][:8]
        found = {(int(r[i] - c), int(q[i] - c)) for i in order}
        assert found == expected
        v220 = min(vg[c + i, c + j] for i, j in (_pixel(g, k) for g in _family(G220)))
        v200 = max(vg[c + i, c + j] for i, j in (_pixel(g, k) for g in _family(G200)))
        assert v200 < 0.02 * v220  # kinematically forbidden in diamond


def test_si001_cbed_disks_at_220(si001):
    sp, optics, s = si001
    k = s.k_sampling_invA
    c = optics.output_px // 2
    from fourdcrystal.simulation.optics import disk_radius_invA

    r_px = disk_radius_invA(optics.semiangle_mrad, optics.energy_eV) / k[0]
    cbed = s.cbed[-1, 0]
    yy, xx = np.mgrid[:cbed.shape[0], :cbed.shape[1]]  # rows are k_x, columns k_y
    for g in _family(G220 + G400):
        gx, gy = g[0] / k[0], g[1] / k[1]
        mask = (yy - c - gx) ** 2 + (xx - c - gy) ** 2 <= (r_px + 1.5) ** 2
        w = cbed * mask
        # the disk's support (not its dynamical contrast) is centred on g
        support = w > 0.01 * w.max()
        cx, cy = (yy - c)[support].mean(), (xx - c)[support].mean()
        assert abs(cx - gx) < 0.5 and abs(cy - gy) < 0.5
        assert abs(support.sum() - math.pi * r_px**2) < 0.5 * math.pi * r_px**2
        assert w.sum() > 1e-3 * cbed[c - 4:c + 5, c - 4:c + 5].sum()


def test_untilted_qz_is_zero_at_zolz_reflections(si001):
    sp, optics, s = si001
    k = s.k_sampling_invA
    c = optics.output_px // 2
    for g in _family(G220 + G400):
        i, j = _pixel(g, k)
        assert abs(s.qz[-1][c + i, c + j]) < 2e-4  # Å⁻¹, vs ~1e-2 for a 20 mrad tilt


@pytest.mark.parametrize("mode,tol", [("beam", 0.03), ("atoms", 0.15)])
def test_tilted_qz_is_out_of_plane_component(silicon, mode, tol):
    tilt = (20.0, -12.0)
    sp = build_specimen(silicon, (0, 0, 1), lateral_size_A=20, thickness_A=[100.0], tilt_mrad=tilt, tilt_mode=mode)
    optics = Optics(output_px=96, semiangle_mrad=3.0)
    box = sp.plan.box_A
    s = simulate_specimen(sp, optics, [(box[0] / 2, box[1] / 2)])
    k = s.k_sampling_invA
    c = optics.output_px // 2
    r = tilt_rotation(tilt)
    beam = r @ np.array([0.0, 0.0, 1.0])  # the tilted beam direction (beam mode)
    for hkl in G220 + G400:
        g = np.array(hkl, float) / A_SI
        if mode == "beam":  # untilted crystal, tilted beam: component of g along the beam
            expected, lateral = float(g @ beam), g[:2]
        else:  # rotated crystal, beam along z: g rotates with the crystal
            rg = r @ g
            expected, lateral = float(rg[2]), rg[:2]
        i, j = _pixel(lateral, k)
        got = float(s.qz[0][c + i, c + j])
        assert abs(got - expected) < tol * abs(expected), (hkl, got, expected)


def test_probe_is_disk_of_radius_alpha_over_lambda(silicon):
    sp = build_specimen(silicon, (0, 0, 1), lateral_size_A=30, thickness_A=[20.0])
    optics = Optics(output_px=128, semiangle_mrad=12.0, energy_eV=300e3)
    box = sp.plan.box_A
    s = simulate_specimen(sp, optics, [(box[0] / 2, box[1] / 2)])
    lam = 12.398419843320026 / math.sqrt(300.0 * (2 * 510.99895 + 300.0))  # Å, relativistic, independent form
    radius = optics.semiangle_mrad * 1e-3 / lam  # Å⁻¹
    probe = s.probe[0]
    assert probe.max() == pytest.approx(1.0)
    area = (probe > 0.5).sum() * s.k_sampling_invA[0] * s.k_sampling_invA[1]
    assert math.sqrt(area / math.pi) == pytest.approx(radius, rel=0.02)
    c = optics.output_px // 2
    yy, xx = np.mgrid[:128, :128]
    assert (probe * (yy - c)).sum() / probe.sum() == pytest.approx(0.0, abs=0.05)
    assert (probe * (xx - c)).sum() / probe.sum() == pytest.approx(0.0, abs=0.05)


def test_semiangle_too_large_names_the_limit(silicon):
    sp = build_specimen(silicon, (0, 0, 1), lateral_size_A=20, thickness_A=[20.0])
    with pytest.raises(FourdError, match=r"largest allowed is \d+\.\d mrad"):
        simulate_specimen(sp, Optics(output_px=32, semiangle_mrad=40.0), [(10.0, 10.0)])
    with pytest.raises(FourdError, match="positive beam energy"):
        simulate_specimen(sp, Optics(energy_eV=0.0), [(10.0, 10.0)])


def test_frozen_phonons_are_seeded_and_smear_vg(silicon):
    sp = build_specimen(silicon, (0, 0, 1), lateral_size_A=11, thickness_A=[20.0])
    optics = Optics(output_px=48, semiangle_mrad=5.0)
    pos = [(5.4, 5.4)]
    a = simulate_specimen(sp, optics, pos, frozen_phonons=2, phonon_sigma_A=0.1, seed=3)
    b = simulate_specimen(sp, optics, pos, frozen_phonons=2, phonon_sigma_A=0.1, seed=3)
    c = simulate_specimen(sp, optics, pos, frozen_phonons=2, phonon_sigma_A=0.1, seed=4)
    static = simulate_specimen(sp, optics, pos)
    np.testing.assert_array_equal(a.cbed, b.cbed)
    assert not np.array_equal(a.cbed, c.cbed)
    k = a.k_sampling_invA
    i, j = _pixel(np.array([4.0, 0.0]) / A_SI, k)
    cc = 24
    assert a.vg[0][cc + i, cc + j] < static.vg[0][cc + i, cc + j]  # Debye–Waller damping of (400)


def test_potential_bits_are_the_same_in_every_process(monkeypatch):
    # abTEM plans its FFTs with FFTW_MEASURE by default, which times algorithms and so picks a
    # different one (different rounding) from one process to the next: the same specimen gave
    # potentials, hence labels and patterns, that differed in the last bits between two runs
    # (1 run in 3 for this Si slab, measured). The potential must be built with timing-free plans.
    import subprocess
    import sys

    import abtem

    seen = []
    build = abtem.Potential.build

    def spy(self, *args, **kwargs):
        seen.append(abtem.config.get("fftw.planning_effort"))
        return build(self, *args, **kwargs)

    monkeypatch.setattr(abtem.Potential, "build", spy)
    from ase.build import bulk

    engine.build_slices(bulk("Si", "diamond", a=5.431, cubic=True).repeat((2, 2, 1)), (32, 32), 2.0, 5.431)
    assert seen == ["FFTW_ESTIMATE"]
    code = ("import hashlib; from ase.build import bulk; from fourdcrystal.simulation.engine import build_slices; "
            "s = build_slices(bulk('Si', 'diamond', a=5.431, cubic=True).repeat((4, 4, 2)), (128, 128), 2.0, 10.0); "
            "print(hashlib.sha256(s.potential.tobytes()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
               for _ in range(3)}
    assert len(digests) == 1, digests


def test_periodic_z_transform_equals_the_fft_of_the_whole_stack():
    """The labels of a periodic slab (a few distinct slices, repeated: the matrix-product z-transform) equal those
    of the same slab given slice by slice (every slice distinct: the FFT along z), to float32 rounding."""
    from fourdcrystal.simulation import engine, labels
    from fourdcrystal.specimens.specimen import build_specimen

    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    sp = build_specimen(si, (0, 0, 1), 0.0, lateral_size_A=11.0, thickness_A=[40.0, 80.0])
    stack = engine.build_slices(sp.atoms, (96, 96), 2.0, sp.thickness_A, sp.plan.period_z_A)
    assert len(stack.potential) * 4 <= stack.num_slices  # the periodic path is taken
    n = stack.num_slices
    exits = sorted({n // 2 | 1, (n // 2 + 2) & ~1, n})  # odd and even slice counts (the half-spectrum sums)
    assert {e % 2 for e in exits} == {0, 1} and min(exits) >= len(stack.potential) * 4
    tilt = {"beam_tilt_mrad": (3.0, -2.0), "k_sampling_invA": (0.09, 0.09)}
    vg, qz = labels.bragg_labels(stack.potential, stack.order, stack.slice_thickness_A, exits, (64, 64), **tilt)
    vg_ref, qz_ref = labels.bragg_labels(stack.potential[stack.order], np.arange(stack.num_slices),
                                         stack.slice_thickness_A, exits, (64, 64), **tilt)
    np.testing.assert_allclose(vg, vg_ref, rtol=0, atol=1e-6 * vg_ref.max())
    strong = vg_ref > 1e-3 * vg_ref.max()
    np.testing.assert_allclose(qz[strong], qz_ref[strong], rtol=0, atol=1e-6)


def test_sheared_cut_box_repeats_one_period_along_z(silicon, monkeypatch):
    # A sheared crystal is a cut box, not a periodic cell, but the zone axis stays along z, so one
    # period's slices repeated must give what slicing the whole slab gives (same slice thickness here:
    # the slab is four periods of |[110]| = a√2).
    from fourdcrystal.simulation import cbed

    period = A_SI * math.sqrt(2.0)
    sp = build_specimen(silicon, (1, 1, 0), phi_deg=17.0, tilt_mrad=(3.0, -2.0), lateral_size_A=16.0,
                        thickness_A=[2 * period, 4 * period], strain=(0.02, -0.01, 0.015))
    assert sp.plan.mode == "cut" and cbed.z_period_A(sp) == pytest.approx(period)
    optics = Optics(energy_eV=200e3, semiangle_mrad=8.0, output_px=48, slice_thickness_A=2.0)
    pos = [(8.0, 8.0)]
    fast = simulate_specimen(sp, optics, pos)
    monkeypatch.setattr(cbed, "z_period_A", lambda specimen: None)
    slab = simulate_specimen(sp, optics, pos)
    assert fast.slice_thickness_A == pytest.approx(slab.slice_thickness_A)
    np.testing.assert_allclose(fast.thickness_A, slab.thickness_A)
    for a, b in ((fast.cbed, slab.cbed), (fast.vg, slab.vg)):
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-4


def test_crystal_tilted_off_the_beam_has_no_z_period(silicon):
    from fourdcrystal.simulation.cbed import z_period_A

    tilted = build_specimen(silicon, (0, 0, 1), tilt_mrad=(5.0, 0.0), lateral_size_A=12.0, thickness_A=[20.0],
                            tilt_mode="atoms")
    assert tilted.plan.mode == "cut" and z_period_A(tilted) is None
    beam = build_specimen(silicon, (0, 0, 1), tilt_mrad=(5.0, 0.0), lateral_size_A=12.0, thickness_A=[20.0])
    assert beam.plan.mode == "periodic" and z_period_A(beam) == pytest.approx(A_SI)
