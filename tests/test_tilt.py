"""The classical out-of-plane tilt (fourdcrystal.detection.tilt): checked against multislice patterns of tilted crystals,
its convention (a rotated crystal and a tilted beam), its failures (NaN, counted) and evaluate's tilt table."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from fourdcrystal.evaluation.evaluate import _TiltTally
from fourdcrystal.simulation.cbed import Optics, simulate_specimen
from fourdcrystal.simulation.optics import disk_radius_invA
from fourdcrystal.simulation.truth import specimen_reflections
from fourdcrystal.specimens.specimen import build_specimen
from fourdcrystal.detection.tilt import TiltSettings, crystal_tilt_mrad, friedel_pairs, laue_tilt

ENERGY, ALPHA = 200e3, 2.0


@pytest.fixture(scope="module")
def silicon() -> Structure:
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])


def _pattern(silicon, tilt, mode):
    """Multislice CBED of Si [001], 250 Å, 200 kV, 2 mrad, tilted by ``tilt`` (mrad) the ``mode`` way; the
    pattern, its pixel size and the visible zero-order reflections (Å⁻¹ from the zero beam)."""
    sp = build_specimen(silicon, (0, 0, 1), tilt_mrad=tilt, lateral_size_A=40, thickness_A=[250.0], tilt_mode=mode,
                        phi_tol_deg=0.5)
    res = simulate_specimen(sp, Optics(energy_eV=ENERGY, semiangle_mrad=ALPHA, output_px=128),
                            np.array([np.array(sp.plan.box_A) / 2]), planning="estimate")
    cbed = res.cbed[0, 0]
    refl = specimen_reflections(sp, cbed, ENERGY, ALPHA, float(res.thickness_A[0]), res.k_sampling_invA)
    visible = (refl.laue_zone == 0) & (refl.strength > 0.005)
    return cbed, res.k_sampling_invA, refl.q_invA[visible]


def _fit(silicon, tilt, mode):
    cbed, dk, g = _pattern(silicon, tilt, mode)
    return laue_tilt(cbed, (64, 64), dk, g, ENERGY, disk_radius_invA(ALPHA, ENERGY))


@pytest.mark.parametrize("tilt, mode", [((-3.0, 2.0), "beam"), ((2.0, 4.0), "beam"), ((3.0, -2.0), "atoms")])
def test_laue_tilt_recovers_the_tilt_of_multislice_patterns(silicon, tilt, mode):
    """The fit to the disks of a multislice pattern points the specimen's way (within 18°) and has its size
    within a factor 1.7 (the estimator's rms error is about half the tilt on the validation split): the
    simulation (an independent calculation: atoms, potential, multislice) against the Laue geometry. The
    standard error is at least the tuned floor."""
    fit = _fit(silicon, tilt, mode)
    truth = crystal_tilt_mrad(tilt, mode)
    assert fit.ok and fit.pairs >= 3
    assert fit.tilt_mrad @ truth / (np.linalg.norm(fit.tilt_mrad) * np.linalg.norm(truth)) > 0.95, (fit, truth)
    assert 1 / 1.7 < np.linalg.norm(fit.tilt_mrad) / np.linalg.norm(truth) < 1.7, (fit, truth)
    assert np.all(fit.sigma_mrad >= TiltSettings().floor_mrad) and np.all(fit.sigma_mrad < 3.0)


def test_untilted_crystal_reads_zero(silicon):
    fit = _fit(silicon, (0.0, 0.0), "beam")
    assert fit.ok and np.linalg.norm(fit.tilt_mrad) < 0.2


def test_rotated_crystal_reads_as_minus_the_tilted_beam(silicon):
    """The convention: a crystal whose zone axis is rotated towards (+3, −2) mrad reads (+3, −2), and so does a beam
    tilted by (−3, +2) over an untilted crystal (the same relative geometry)."""
    rotated, beam = _fit(silicon, (3.0, -2.0), "atoms"), _fit(silicon, (-3.0, 2.0), "beam")
    assert rotated.tilt_mrad[0] > 2 and rotated.tilt_mrad[1] < -1
    assert np.linalg.norm(rotated.tilt_mrad - beam.tilt_mrad) < 0.5


def test_a_fit_without_enough_pairs_or_directions_is_nan():
    img = np.ones((64, 64))
    dk, r = (0.02, 0.02), 0.05
    one_pair = laue_tilt(img, (32, 32), dk, np.array([[0.3, 0.0], [-0.3, 0.0]]), ENERGY, r)
    assert not one_pair.ok and one_pair.pairs == 1 and np.isnan(one_pair.sigma_mrad).all()
    collinear = laue_tilt(img, (32, 32), dk, np.array([[0.2, 0.0], [0.4, 0.0], [0.6, 0.0]]), ENERGY, r)
    assert not collinear.ok and collinear.pairs == 3
    assert not laue_tilt(img, (32, 32), dk, np.zeros((0, 2)), ENERGY, r).ok


def test_a_best_fit_at_the_edge_of_the_search_is_nan(silicon):
    cbed, dk, g = _pattern(silicon, (2.0, 4.0), "beam")
    narrow = TiltSettings(span_mrad=1.0)  # the true tilt, (−2, −4), lies outside it
    assert not laue_tilt(cbed, (64, 64), dk, g, ENERGY, disk_radius_invA(ALPHA, ENERGY), narrow).ok


def test_friedel_pairs_use_the_measured_mate():
    pairs = friedel_pairs(np.array([[0.3, 0.0], [-0.31, 0.0], [0.0, -0.4], [0.01, 0.0]]), 0.05, 0.1)
    assert pairs.shape == (2, 2, 2)
    np.testing.assert_allclose(pairs[0], [[0.3, 0.0], [-0.31, 0.0]])
    np.testing.assert_allclose(pairs[1], [[0.0, 0.4], [0.0, -0.4]])  # the mate of a lone −g is mirrored


def test_crystal_tilt_of_the_shards_conventions():
    assert crystal_tilt_mrad((2.0, -1.0), "beam").tolist() == [-2.0, 1.0]
    assert crystal_tilt_mrad((2.0, -1.0), "atoms").tolist() == [2.0, -1.0]
    with pytest.raises(ValueError, match="tilt mode"):
        crystal_tilt_mrad((0, 0), "sideways")


def test_tilt_tally_summary():
    t = _TiltTally()
    t.add([1.0, 0.0], [0.0, 0.0], [2.0, 2.0])  # error 1, within its sigma on both axes
    t.add([3.0, 4.0], [3.0, 1.0], [0.5, 0.5])  # error 3, x within, y not
    t.add([np.nan, np.nan], [1.0, 1.0])  # failed: counted, not scored
    s = t.summary()
    assert (s["patterns"], s["fitted"], s["failed"]) == (3, 2, 1)
    assert s["rms_mrad"] == pytest.approx(np.sqrt((1 + 9) / 2))
    assert s["zero_rms_mrad"] == pytest.approx(np.sqrt((0 + 10) / 2))
    assert s["ratio_to_zero"] == pytest.approx(s["rms_mrad"] / s["zero_rms_mrad"])
    assert s["within_1_sigma"] == pytest.approx(3 / 4) and s["median_mrad"] == pytest.approx(2.0)


def test_tune_chooses_the_width_the_gain_and_the_floor():
    """From fits at gain 1: the width whose fits err least after their gain; the gain that undoes an over-reach of
    1/0.7 (shrunk where the fits are noisy); the floor that puts 68 % of the components within their error (here the noise, 1 mrad before the gain)."""
    from fourdcrystal.evaluation.tune import choose_tilt_settings

    rng = np.random.default_rng(0)
    true = rng.uniform(-5, 5, (4000, 2))
    good = [(t / 0.7 + rng.normal(0, 1, 2), np.zeros(2), t) for t in true]
    worse = [(t / 0.7 + rng.normal(0, 3, 2), np.zeros(2), t) for t in true]
    out = choose_tilt_settings({5e-4: worse, 1e-3: good})
    st = out["settings"]
    assert st["sigma_invA"] == 1e-3 and 0.62 < st["gain"] < 0.72  # 0.7, shrunk a little by the noise

    def rms(gain):
        return np.sqrt(np.mean([np.sum((gain * e - t) ** 2) for e, _, t in good]))

    assert rms(st["gain"]) < min(rms(st["gain"] - 0.03), rms(st["gain"] + 0.03))  # the least-squares gain
    assert st["floor_mrad"] == pytest.approx(0.7, rel=0.1)
    assert out["by_sigma_invA"]["0.0005"]["rms_mrad"] > out["by_sigma_invA"]["0.001"]["rms_mrad"]


# --- the learned tilt read ---------------------------------------------------------------------------------------

def _learned(silicon, tilt, mode, transform=None):
    from fourdcrystal.detection.tilt import learned_tilt
    from fourdcrystal.model.card import read_tilt_reader

    cbed, dk, g = _pattern(silicon, tilt, mode)
    return learned_tilt(cbed, (64, 64), dk, g, ENERGY, ALPHA, disk_radius_invA(ALPHA, ENERGY), read_tilt_reader())


@pytest.mark.parametrize("tilt, mode", [((-3.0, 2.0), "beam"), ((2.0, 4.0), "beam"), ((3.0, -2.0), "atoms")])
def test_learned_read_recovers_the_tilt_of_multislice_patterns(silicon, tilt, mode):
    """The shipped learned read, on multislice patterns simulated here (Si [001], 250 Å, 200 kV, 2 mrad, 40 Å box,
    not from its training data), points the specimen's way within 18° and has the size within a factor 1.5; its
    standard error is finite and under 3 mrad."""
    fit = _learned(silicon, tilt, mode)
    truth = crystal_tilt_mrad(tilt, mode)
    assert fit.ok and fit.pairs >= 3
    assert fit.tilt_mrad @ truth / (np.linalg.norm(fit.tilt_mrad) * np.linalg.norm(truth)) > 0.95, (fit, truth)
    assert 1 / 1.5 < np.linalg.norm(fit.tilt_mrad) / np.linalg.norm(truth) < 1.5, (fit, truth)
    assert np.all(np.isfinite(fit.sigma_mrad)) and np.all(fit.sigma_mrad < 3.0)


def test_learned_read_does_not_depend_on_the_detectors_field_of_view(silicon):
    """The same pattern on a detector reaching twice as far (zero-padded to 256² around the same zero beam) reads the
    same tilt: nothing the read uses lies beyond 1 Å⁻¹ (the multislice pattern reaches 1.6 Å⁻¹)."""
    from fourdcrystal.detection.tilt import learned_tilt
    from fourdcrystal.model.card import read_tilt_reader

    cbed, dk, g = _pattern(silicon, (2.0, 4.0), "beam")
    assert 64 * np.min(dk) > 1.0
    wide = np.zeros((256, 256))
    wide[64:192, 64:192] = cbed
    reader, radius = read_tilt_reader(), disk_radius_invA(ALPHA, ENERGY)
    small = learned_tilt(cbed, (64, 64), dk, g, ENERGY, ALPHA, radius, reader)
    large = learned_tilt(wide, (128, 128), dk, g, ENERGY, ALPHA, radius, reader)
    assert small.ok
    np.testing.assert_allclose(large.tilt_mrad, small.tilt_mrad, atol=1e-9)


def test_learned_read_turns_with_the_pattern():
    """Equivariance, built into the read (odd projections, even weights, least squares over ĝ): a pattern turned by
    90° or mirrored across its diagonal reads the tilt turned or mirrored alike, to rounding."""
    from fourdcrystal.detection.tilt import learned_tilt
    from fourdcrystal.model.card import read_tilt_reader

    rng = np.random.default_rng(1)
    n = 65  # odd: the zero beam at (32, 32) stays on a pixel when the pattern turns
    dk, r = 0.02, 0.05
    g = np.array([[0.3, 0.0], [0.0, 0.3], [0.3, 0.3], [-0.3, 0.3]])
    g = np.concatenate([g, -g])
    ii, jj = np.mgrid[0:n, 0:n]
    img = np.zeros((n, n)) + 0.01
    for k, v in enumerate(g):  # disks of unequal brightness, with a gradient inside each
        inside = ((ii - 32) * dk - v[0]) ** 2 + ((jj - 32) * dk - v[1]) ** 2 <= r * r
        img[inside] += rng.uniform(0.2, 1.0) * (1 + 0.5 * ((ii[inside] - 32) * dk - v[0]) / r)
    img[((ii - 32) * dk) ** 2 + ((jj - 32) * dk) ** 2 <= r * r] += 5.0
    reader = read_tilt_reader()

    def read(image, vectors):
        return learned_tilt(image, (32, 32), dk, vectors, ENERGY, ALPHA, r, reader).tilt_mrad

    t = read(img, g)
    assert np.all(np.isfinite(t)) and np.linalg.norm(t) > 0.05
    turned = read(np.rot90(img), g @ np.array([[0, 1], [-1, 0]]))  # q → (−q_y, q_x)
    np.testing.assert_allclose(turned, [-t[1], t[0]], atol=1e-9)
    mirrored = read(img.T, g[:, ::-1])
    np.testing.assert_allclose(mirrored, t[::-1], atol=1e-9)


def test_learned_read_fails_without_two_directions_and_refuses_other_files(tmp_path):
    from fourdcrystal.detection.tilt import learned_tilt, pair_features, swap_pairs
    from fourdcrystal.model.card import read_tilt_reader

    img = np.ones((64, 64))
    reader = read_tilt_reader()
    collinear = learned_tilt(img, (32, 32), 0.02, np.array([[0.2, 0.0], [0.4, 0.0], [0.6, 0.0]]), ENERGY, ALPHA,
                             0.05, reader)
    assert not collinear.ok and collinear.pairs == 3 and np.isnan(collinear.sigma_mrad).all()
    assert not learned_tilt(img, (32, 32), 0.02, np.zeros((0, 2)), ENERGY, ALPHA, 0.05, reader).ok
    f, u = pair_features(img, (32, 32), 0.02, np.array([[0.2, 0.1], [0.0, -0.3]]), ENERGY, ALPHA, 0.05)
    p, w = reader(f)
    p_swapped, w_swapped = reader(swap_pairs(f))  # the same pairs named (−g, g): projections on −ĝ
    np.testing.assert_allclose(p_swapped, -p, atol=1e-12)
    np.testing.assert_allclose(w_swapped, w, atol=1e-12)
    bad = tmp_path / "other.json"
    bad.write_text('{"schema": "something else"}')
    with pytest.raises(ValueError, match="not a tilt read"):
        read_tilt_reader(bad)
