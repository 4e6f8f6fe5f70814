"""Peak finding and the classical baseline against patterns with known disk centres."""

from __future__ import annotations

import numpy as np
import pytest

from fourdcrystal.detection.baseline import BaselineConfig, find_bragg_disks
from fourdcrystal.detection.peaks import PeakConfig, find_peaks, match_peaks, to_reciprocal

N = 96


def _disk(centre: tuple[float, float], radius: float, oversample: int = 16) -> np.ndarray:
    """A uniform disk, anti-aliased by counting sub-pixel samples inside it (independent of any FFT)."""
    s = (np.arange(N * oversample) + 0.5) / oversample - 0.5  # sub-sample centres in pixel units
    y, x = np.meshgrid(s, s, indexing="ij")
    inside = (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius**2
    return inside.reshape(N, oversample, N, oversample).mean(axis=(1, 3))


def test_gaussian_peaks_subpixel():
    y, x = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    truth = np.array([[30.3, 40.7], [60.55, 20.2], [48.0, 48.0]])
    img = sum(a * np.exp(-((y - c[0]) ** 2 + (x - c[1]) ** 2) / (2 * 1.5**2)) for c, a in zip(truth, (1.0, 0.5, 2.0)))
    for mode, tol in (("parabolic", 0.08), ("dft", 0.03)):
        p = find_peaks(img, PeakConfig(subpixel=mode))
        assert len(p) == 3
        np.testing.assert_allclose(p.pos_px, truth[[2, 0, 1]], atol=tol)
    # thresholds: relative intensity, edge margin, maximum count
    assert len(find_peaks(img, PeakConfig(min_relative=0.4))) == 2
    assert len(find_peaks(img, PeakConfig(max_peaks=1))) == 1
    assert len(find_peaks(img, PeakConfig(edge_px=45))) == 1  # only the one at (48, 48) is 45 px from every edge
    q = to_reciprocal(find_peaks(img), (N, N), 0.01)
    np.testing.assert_allclose(q[0], [0.0, 0.0], atol=1e-6)  # (48, 48) is q = 0 on a 96 grid


def test_baseline_finds_two_disk_centres_to_005_px():
    radius = 6.0
    centres = [(N // 2 + 0.0, N // 2 + 0.0), (N // 2 + 17.37, N // 2 - 9.81)]
    pattern = _disk(centres[0], radius) + 0.6 * _disk(centres[1], radius)
    probe = _disk((N // 2, N // 2), radius)
    # the default (cross-correlation, σ = 1 px, DFT refinement), and a half-way phase correlation
    # unsmoothed, whose ringing needs a higher threshold
    for config in (BaselineConfig(), BaselineConfig(corr_power=0.5, sigma_px=0.0,
                                                    peaks=PeakConfig(min_relative=0.1, subpixel="dft"))):
        peaks = find_bragg_disks(pattern, probe, config)
        assert len(peaks) == 2, peaks
        np.testing.assert_allclose(peaks.pos_px, centres, atol=0.05)
    with pytest.raises(ValueError, match="probe shape"):
        find_bragg_disks(pattern, probe[:-1])


def test_match_peaks_one_to_one_closest_first():
    pred = np.array([[10.0, 10.0], [10.4, 10.0], [50.0, 50.0]])
    true = np.array([[10.3, 10.0], [30.0, 30.0]])
    mp, mt = match_peaks(pred, true, radius_px=1.0)
    assert mp.tolist() == [1] and mt.tolist() == [0]  # the closer prediction takes the label peak


def _exact(px, status, strength, radius=2.0):
    from fourdcrystal.evaluation.evaluate import ExactTruth

    px = np.asarray(px, float)
    g = np.linalg.norm(px - px[0], axis=1) * 0.02  # the first is the zero beam; 0.02 Å⁻¹ pixels
    return ExactTruth(px, np.asarray(status, np.int8), g, np.asarray(strength, float),
                      np.asarray(strength, float), radius)


def test_score_counts_and_errors():
    """score() against the physical truth: found, false and missed peaks, errors in px and Å⁻¹; a peak on an
    ignored reflection counts neither way."""
    from fourdcrystal.evaluation.evaluate import score
    from fourdcrystal.detection.peaks import Peaks
    from fourdcrystal.simulation.truth import ABSENT, IGNORED, REQUIRED

    truth = _exact([[48.0, 48.0], [48.0, 60.0], [60.0, 48.0], [30.0, 30.0], [70.0, 70.0], [20.0, 70.0]],
                   [REQUIRED, REQUIRED, REQUIRED, REQUIRED, IGNORED, ABSENT], [1.0, 0.3, 0.2, 0.1, 0.005, 0.0], 1.0)
    # three of four found, 0.3 px off; one on the ignored reflection; one on the absent one; one far away
    pred = Peaks(np.array([[48.0, 48.3], [48.3, 60.0], [60.0, 47.7], [70.2, 70.0], [20.0, 70.4], [80.0, 80.0]]),
                 np.array([1.0, 0.31, 0.19, 0.01, 0.05, 0.05]))
    s = score(pred, truth, (0.02, 0.02), None, None, None)
    assert (s["true"], s["pred"], s["matched"]) == (4, 5, 3)
    np.testing.assert_allclose(s["err_px"], 0.3, atol=1e-12)
    np.testing.assert_allclose(s["err_invA"], 0.006, atol=1e-12)
    assert sorted(s["i_true"].tolist()) == [0.2, 0.3]  # the zero beam is left out of intensities
    np.testing.assert_allclose(sorted(s["g_invA"]), [0.0, 0.24, 0.24])


def test_evaluation_counts_misses_by_strength_and_false_peaks_by_what_lies_under_them():
    """score(): recall per bin of the strength in the pattern (zero beam left out) and each false peak by what
    lies under it: nothing of the lattice, an absent reflection, a visible reflection another peak took."""
    from fourdcrystal.evaluation.evaluate import add_scores, Tally, score
    from fourdcrystal.detection.peaks import Peaks
    from fourdcrystal.simulation.truth import ABSENT, REQUIRED

    spots = {(16, 16): 1.0, (4, 4): 0.02, (4, 28): 0.05, (28, 4): 0.2, (28, 28): 0.8, (10, 22): 0.02, (22, 10): 0.001}
    status = [REQUIRED] * 6 + [ABSENT]
    truth = _exact(list(spots), status, list(spots.values()))
    pred = Peaks(np.array([(16.4, 16.0), (4.5, 28.0), (28.0, 4.6), (28.0, 28.0), (22.0, 10.5), (12.0, 12.0),
                           (10.0, 23.0), (10.0, 21.0)]), np.ones(8))
    s = score(pred, truth, 0.02, None, None, None)
    assert s["matched"] == 5 and s["true"] == 6 and s["pred"] == 8
    t = Tally()
    add_scores(t, s)
    by = t.summary()["recall_by_strength"]
    assert {k: (v["true_peaks"], v["recall"]) for k, v in by.items()} == {
        "< 0.03": (2, 0.5), "0.03-0.1": (1, 1.0), "0.1-0.3": (1, 1.0), ">= 0.3": (1, 1.0)}
    # false: (22, 10.5) on the absent reflection, (12, 12) off the lattice, one of (10, 23)/(10, 21) on a
    # reflection the other took
    assert t.summary()["false_peaks_by_kind"] == {"off the lattice": 1, "on an absent reflection": 1,
                                                  "on a reflection another peak found": 1}
    assert t.summary()["position_by_g_invA"]["< 0.5"]["matched"] == 5


def _gaussians(spots: list[tuple[tuple[int, int], float]], n: int = 64, sigma: float = 1.2) -> np.ndarray:
    y, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return sum(a * np.exp(-((y - c[0]) ** 2 + (x - c[1]) ** 2) / (2 * sigma**2)) for c, a in spots)


def test_model_threshold_of_the_strongest_maximum_or_of_the_zero_beam():
    """threshold_of="zero_beam" reads the threshold in the network's own unit (V_g / V_g(0)), whatever the
    strongest maximum is; "strongest" as a fraction of that maximum. A map whose maximum is under a zero-beam
    threshold keeps no peak."""
    from fourdcrystal.detection.detect import DetectionSettings, ModelPeakSettings, model_peaks

    # the zero-beam pixel (32, 32) is under-predicted (a network trained without it in its loss), one
    # reflection overshoots: 0.3, 0.1 (zero beam), 0.03, 0.01
    vg = _gaussians([((20, 20), 0.3), ((32, 32), 0.1), ((44, 40), 0.03), ((20, 44), 0.01)])
    pattern = np.zeros_like(vg)

    def count(threshold_of, t):
        s = DetectionSettings(model=ModelPeakSettings(min_relative=t, threshold_of=threshold_of))
        return len(model_peaks(vg[None], pattern[None], pattern, s)[0])

    assert count("strongest", 0.05) == 3  # ≥ 0.015: 0.3, 0.1, 0.03
    assert count("zero_beam", 0.05) == 2  # ≥ 0.05: 0.3, 0.1
    assert count("zero_beam", 0.02) == 3
    assert count("zero_beam", 0.005) == 4
    assert count("zero_beam", 0.5) == 0
    with pytest.raises(ValueError, match="threshold_of"):
        count("median", 0.05)


def test_tune_sweep_counts_what_model_peaks_finds():
    """tune scores every threshold from one search for maxima; with thresholds in the map's own unit it must count
    exactly the peaks that model_peaks then finds with those settings, and count them as evaluate's score does
    (peaks on ignored reflections left out)."""
    from fourdcrystal.detection.detect import DetectionSettings, ModelPeakSettings, model_peaks
    from fourdcrystal.evaluation.evaluate import score
    from fourdcrystal.simulation.truth import IGNORED, REQUIRED
    from fourdcrystal.evaluation.tune import _Grid, _threshold_sweep

    rng = np.random.default_rng(1)
    spots = [((int(i), int(j)), float(a)) for i, j, a in zip(rng.integers(4, 60, 40), rng.integers(4, 60, 40),
                                                             rng.uniform(0.005, 0.4, 40))]
    vg = _gaussians(spots) + 0.002 * rng.standard_normal((64, 64))
    visible = [(c, a) for c, a in spots if a >= 0.02]
    pos = np.array([c for c, _ in visible], float) + rng.uniform(-0.4, 0.4, (len(visible), 2))
    status = [IGNORED if k % 3 == 0 else REQUIRED for k in range(len(visible))]
    truth = _exact(pos, status, [a for _, a in visible], 2.0)
    assert (truth.status == IGNORED).sum() >= 3
    mask = np.zeros((64, 64), bool)
    mask[3:61, 3:61] = True
    thresholds, spacings = (0.01, 0.02, 0.05, 0.1), (2.0, 3.0)
    for ref in ("zero_beam", "strongest"):
        grid = _Grid()
        _threshold_sweep(grid, lambda t, sp: (t, sp), vg, mask, spacings, thresholds, truth, "clean",
                         threshold_of=ref)
        for t in thresholds:
            for sp in spacings:
                s = DetectionSettings(model=ModelPeakSettings(min_relative=t, min_spacing_px=sp, threshold_of=ref))
                pk = model_peaks(vg[None], vg[None], vg, s, mask)[0]
                sc = score(pk, truth, 0.02, None, None, None)
                assert tuple(grid.counts[((t, sp), "clean")]) == (sc["matched"], sc["pred"], sc["true"]), (ref, t, sp)


def test_low_dose_patterns_get_their_own_threshold():
    """With a low-dose threshold in the settings, a pattern whose counts say it holds fewer electrons than
    low_dose_e is read at that threshold, a noise-free one (no counts) at the main one; the dose is estimated
    from the pattern itself, or given (predict gives it from the raw frames)."""
    from dataclasses import replace

    from fourdcrystal.detection.detect import DetectionSettings, ModelPeakSettings, estimate_dose, model_peaks
    from fourdcrystal.training.augment import shot_noise

    vg = _gaussians([((32, 32), 1.0), ((32, 44), 0.5), ((44, 32), 0.2), ((20, 20), 0.15)])
    clean = _gaussians([((32, 32), 1.0), ((32, 44), 0.3)], sigma=3.0) + 0.01
    noisy = shot_noise(clean, 2e3, np.random.default_rng(0))
    assert np.isinf(estimate_dose(clean[None])[0]) and 1.5e3 < estimate_dose(noisy[None])[0] < 2.5e3
    st = DetectionSettings(model=ModelPeakSettings(min_relative=0.3, min_spacing_px=2.0, threshold_of="zero_beam",
                                                   low_dose_e=3e4, low_dose_min_relative=0.1))
    n_clean, n_noisy = (len(p) for p in model_peaks(np.stack([vg, vg]), np.stack([clean, noisy]), clean, st))
    assert (n_clean, n_noisy) == (2, 4)
    assert len(model_peaks(vg[None], clean[None], clean, st, dose_e=np.array([1e3]))[0]) == 4  # a given dose wins
    off = replace(st, model=replace(st.model, low_dose_e=0.0))
    assert len(model_peaks(vg[None], noisy[None], clean, off)[0]) == 2  # no low-dose threshold: one for all


def test_one_pass_of_detection_and_refinement_equals_the_two_calls(monkeypatch):
    """find_and_refine (predict's shared correlation for the baseline and the model's peaks on the detector)
    gives what find_bragg_disks_batch and refine_positions give apart; across the FFT batches too (the batch made
    smaller than the stack), with one probe per pattern as with a shared one."""
    import fourdcrystal.detection.baseline as bl

    monkeypatch.setattr(bl, "CORRELATION_BATCH", 2)
    rng = np.random.default_rng(3)
    radius = 5.0
    probe = _disk((N // 2, N // 2), radius)
    stack, starts = [], []
    for k in range(5):
        c2 = (N // 2 + rng.uniform(-20, 20), N // 2 + rng.uniform(-20, 20))
        stack.append(rng.poisson(200 * (_disk((N // 2, N // 2), radius) + 0.5 * _disk(c2, radius))).astype(float))
        starts.append(np.array([[N / 2 + 0.4, N / 2 - 0.3], [c2[0] + 0.6, c2[1] - 0.5]]))
    stack = np.stack(stack)
    config = BaselineConfig(peaks=PeakConfig(min_relative=0.05, subpixel="parabolic"), sigma_px=0.0)
    for pr in (probe, np.stack([probe] * len(stack))):
        found, moved = bl.find_and_refine(stack, pr, config, starts, 1.5)
        want_found = bl.find_bragg_disks_batch(stack, pr, config)
        want_moved = bl.refine_positions(stack, pr, starts, config, 1.5)
        for f, w in zip(found, want_found):
            np.testing.assert_array_equal(f.pos_px, w.pos_px)
        for m, w, s in zip(moved, want_moved, starts):
            np.testing.assert_array_equal(m, w)
            assert np.all(np.linalg.norm(m - s, axis=1) > 0.2)  # the two disks moved onto their centres
    # the batched FFTs equal one pattern at a time
    one = [bl.find_bragg_disks(p, probe, config) for p in stack]
    for f, w in zip(found, one):
        np.testing.assert_allclose(f.pos_px, w.pos_px, atol=1e-9)
