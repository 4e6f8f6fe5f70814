"""The whole detector at the model's pixel size, where the data are: grid, usable region, dead areas, masks,
and peak positions refined on the probe correlation."""

from __future__ import annotations

import numpy as np
import pytest

from fourdcrystal.detection.baseline import BaselineConfig, refine_positions
from fourdcrystal.prediction.calibration import Resampler, dead_lines, detector_grid_shape, usable_region
from fourdcrystal.detection.peaks import PeakConfig, find_peaks

from .test_peaks_baseline import N, _disk


@pytest.mark.parametrize("k_in, centre, dk_out, multiple", [
    ((256, 256), (128.0, 128.0), 0.0296, 16), ((256, 256), (100.3, 170.8), 0.0296, 16),
    ((48, 60), (22.4, 25.7), 0.05, 4), ((515, 515), (257.0, 257.0), 0.011, 16)])
def test_grid_holds_every_detector_pixel(k_in, centre, dk_out, multiple):
    dk_in = 0.02
    h, w = detector_grid_shape(k_in, dk_in, centre, dk_out, multiple)
    assert h % multiple == 0 and w % multiple == 0
    for n, kin, c in ((h, k_in[0], centre[0]), (w, k_in[1], centre[1])):
        # the outermost detector pixel edges, in Å⁻¹ from the zero beam, against the grid's q range
        q_lo, q_hi = (-0.5 - c) * dk_in, (kin - 0.5 - c) * dk_in
        assert -(n // 2) * dk_out <= q_lo + 1e-12 and (n - 1 - n // 2) * dk_out >= q_hi - 1e-12
        # and the grid is the smallest multiple that does so
        m = n - multiple
        assert m < 1 or not (-(m // 2) * dk_out <= q_lo and (m - 1 - m // 2) * dk_out >= q_hi)
    # every detector pixel lands on the grid: the resampled detector keeps its total
    r = Resampler.build((h, w), dk_out, k_in, dk_in, centre)
    ones = np.ones((1, *k_in), np.float32)
    assert r(ones).sum() * (dk_out / dk_in) ** 2 == pytest.approx(ones.sum(), rel=2e-3)


def test_usable_region_keeps_a_margin_from_missing_data():
    cov = np.zeros((64, 64))
    cov[:, :40] = 1.0  # data in columns 0…39 only
    u = usable_region(cov, 5.0)
    cols = np.nonzero(u.any(0))[0]
    rows = np.nonzero(u.any(1))[0]
    assert cols.min() == 5 and cols.max() == 34 and rows.min() == 5 and rows.max() == 58
    assert usable_region(cov, 0.0).sum() == 64 * 40


def test_dead_lines_from_the_edges_only():
    rng = np.random.default_rng(0)
    mean = rng.uniform(1, 2, (40, 50))
    mean[:, 30:] = 0.0  # a dead right part
    mean[:3] = np.nan  # an unrecorded top frame
    mean[20] = 0.0  # an empty row inside: pixels that caught nothing, not a dead edge
    mean[10:15, 5:9] = 0.0  # an empty patch: left alone
    dead = dead_lines(mean)
    expect = np.zeros_like(dead)
    expect[:, 30:] = True
    expect[:3] = True
    np.testing.assert_array_equal(dead, expect)


def test_refinement_on_the_probe_correlation_places_noisy_disks():
    """Positions off by up to 1.2 px (a network's maxima) are moved onto disk centres drawn independently of
    any FFT, to < 0.1 px noise-free and < 0.25 px rms at ~2000 electrons per disk."""
    radius = 5.0
    centres = np.array([[48.0, 48.0], [48 + 17.37, 48 - 9.81], [48 - 12.6, 48 + 20.25], [48 + 3.3, 48 + 24.7]])
    clean = sum(_disk(tuple(c), radius) * (1.0 if k == 0 else 0.3) for k, c in enumerate(centres))
    probe = _disk((N // 2, N // 2), radius)
    start = centres + np.array([[0.6, -0.5], [-1.0, 0.4], [0.3, 0.9], [-0.7, -0.6]])
    for subpixel, tol in (("parabolic", 0.15), ("dft", 0.05)):
        cfg = BaselineConfig(corr_power=1.0, sigma_px=1.0, peaks=PeakConfig(subpixel=subpixel))
        got = refine_positions(clean[None], probe, [start], cfg, search_px=1.5)[0]
        np.testing.assert_allclose(got, centres, atol=tol, err_msg=subpixel)
    rng = np.random.default_rng(1)
    cfg = BaselineConfig(corr_power=1.0, sigma_px=1.0, peaks=PeakConfig(subpixel="dft"))
    errs = []
    for _ in range(20):
        noisy = rng.poisson(clean / clean.sum() * 2e4).astype(float)
        got = refine_positions(noisy[None], probe, [start], cfg, search_px=1.5)[0]
        errs.append(np.linalg.norm(got - centres, axis=1))
    assert np.sqrt(np.mean(np.square(errs))) < 0.25, np.sqrt(np.mean(np.square(errs)))
    # and a peak without a disk within the search radius stays within it
    far = refine_positions(clean[None], probe, [np.array([[20.0, 80.0]])], cfg, search_px=1.5)[0]
    assert np.linalg.norm(far - [20.0, 80.0]) <= 1.5 + 1.0 / 16


def test_find_peaks_only_inside_the_mask():
    y, x = np.mgrid[:N, :N]
    img = sum(np.exp(-((y - a) ** 2 + (x - b) ** 2) / 4.0) * v for a, b, v in ((30, 30, 1.0), (60, 70, 2.0)))
    mask = np.ones((N, N), bool)
    mask[:, 50:] = False
    p = find_peaks(img, PeakConfig(min_relative=0.5), mask=mask)
    # the strongest peak is masked: the threshold is relative to the strongest inside the mask
    assert len(p) == 1 and np.allclose(p.pos_px[0], [30, 30], atol=0.05)
    # a shoulder cut by the mask's edge is not a maximum
    edge = np.ones((N, N), bool)
    edge[:, 68:] = False
    assert not any(abs(q[1] - 67) < 0.5 for q in find_peaks(img, PeakConfig(min_relative=0.01), mask=edge).pos_px)


def test_interpolating_resampling_matrix_equals_the_per_pixel_rule():
    """Finer output than input: each output pixel takes its two neighbours by linear interpolation, zero outside
    the detector (the rule written out pixel by pixel, against the vectorised matrix)."""
    import numpy as np

    from fourdcrystal.prediction.calibration import resampling_matrix

    rng = np.random.default_rng(0)
    for _ in range(50):
        n_in, n_out = int(rng.integers(8, 200)), int(rng.integers(8, 200))
        d_in = float(rng.uniform(0.01, 0.05))
        d_out, centre = d_in * float(rng.uniform(0.3, 0.99)), float(rng.uniform(-5, n_in + 5))
        expected = np.zeros((n_out, n_in))
        for o in range(n_out):
            x = centre + (o - n_out // 2) * d_out / d_in
            i0 = int(np.floor(x))
            for i, w in ((i0, 1 - (x - i0)), (i0 + 1, x - i0)):
                if 0 <= i < n_in:
                    expected[o, i] = w
        np.testing.assert_allclose(resampling_matrix(n_out, d_out, n_in, d_in, centre), expected, rtol=0, atol=1e-12)


def test_model_trained_on_many_pixel_sizes_runs_on_the_detectors_own():
    """A card whose training pixel sizes span a factor ≥ 3 keeps the detector's pixels inside that range; a
    narrower card (the first release model: 0.019–0.048 Å⁻¹) or a detector outside the range is resampled."""
    from fourdcrystal.prediction.preparation import model_pixel_invA

    wide = {"input": {"k_sampling_invA": [0.02, 0.02], "range": {"k_sampling_invA": [0.008, 0.045]}}}
    narrow = {"input": {"k_sampling_invA": [0.028, 0.028], "range": {"k_sampling_invA": [0.0194, 0.0484]}}}
    assert model_pixel_invA(wide, 0.012) == (0.012, 0.012)
    assert model_pixel_invA(wide, 0.06) == (0.02, 0.02)
    assert model_pixel_invA(narrow, 0.03) == (0.028, 0.028)
    assert model_pixel_invA({"input": {"k_sampling_invA": [0.03, 0.03]}}, 0.03) == (0.03, 0.03)


def _thick_si():
    """The mean pattern of a Si [110] strain series at 1000 Å (multislice, 200 kV, 2 mrad, 0.0167 Å⁻¹ pixels),
    cropped so that its zero beam sits at (72, 69) px; a {111} reflection there is brighter than the zero beam."""
    from pathlib import Path

    d = np.load(Path(__file__).parent / "data" / "si110_1000A_mean_pattern.npz")
    return d["mean"].astype(np.float64), d["probe"].astype(np.float64), (72.0, 69.0)


def test_the_zero_beam_of_a_thick_crystal_is_not_its_brightest_disk():
    from fourdcrystal.prediction.calibration import disk_centre, disk_radius_px, zero_beam_centre

    mean, probe, truth = _thick_si()
    r = disk_radius_px(probe)
    assert np.hypot(*np.subtract(disk_centre(mean, r), truth)) > 15  # the brightest disk is a reflection
    centre, source = zero_beam_centre(mean, r)
    assert np.hypot(*np.subtract(centre, truth)) < 0.5 and source == "symmetry of the mean pattern"
    # a vacuum probe recorded on the same detector says where the zero beam is
    centre, source = zero_beam_centre(mean, r, probe_centre=(72.6, 69.4))
    assert np.hypot(*np.subtract(centre, truth)) < 0.5 and source == "vacuum probe"
    # a thin crystal: the brightest disk is the zero beam, and is named so
    thin = np.zeros((96, 96))
    ii, jj = np.mgrid[:96, :96]
    for n, a in ((0, 1.0), (1, 0.3), (-1, 0.3), (2, 0.1), (-2, 0.1)):
        thin += a * ((ii - 40 - 15 * n) ** 2 + (jj - 50 - 4 * n) ** 2 <= 25)
    centre, source = zero_beam_centre(thin, 5.0)
    assert np.hypot(centre[0] - 40, centre[1] - 50) < 0.5 and source == "bright disk of the mean pattern"


def test_a_crystal_at_the_bragg_condition_of_a_row_keeps_its_bright_zero_beam():
    """A systematic row at the Bragg condition of its 2g is symmetric about g, where a faint disk sits (the
    quickstart's demo: 000 the brightest, 00-4 at 0.69 of it, 00-2 between at 0.07): the zero beam stays the
    bright disk, not the faint one at the centre of symmetry."""
    from fourdcrystal.prediction.calibration import zero_beam_centre

    img = np.full((128, 128), 0.01)
    ii, jj = np.mgrid[:128, :128]
    c0, d, perp = np.array([50.0, 56.0]), np.array([6.0, 2.0]), np.array([-2.0, 6.0])
    for n, a in {0: 1.0, 2: 0.69, 1: 0.07, -1: 0.2, 3: 0.2, -2: 0.05, 4: 0.05, -3: 0.03, 5: 0.03}.items():
        for m, b in ((0, 1.0), (1, 0.15), (-1, 0.15)):
            c = c0 + n * d + m * perp
            img += a * b * ((ii - c[0]) ** 2 + (jj - c[1]) ** 2 <= 4.0)
    centre, source = zero_beam_centre(img, 1.9)
    assert np.hypot(*np.subtract(centre, c0)) < 0.5 and source == "bright disk of the mean pattern"


def test_predict_centres_the_zero_beam_not_the_brightest_reflection(tmp_path, caplog):
    """predict on that thick crystal: the zero beam where it is, with a warning that names the brightest disk; with
    the vacuum probe file, from the probe."""
    import h5py

    from fourdcrystal.prediction.stage import PredictConfig, predict

    mean, probe, truth = _thick_si()
    scan = np.broadcast_to((mean * 1000).astype(np.float32), (1, 2, *mean.shape))
    np.save(tmp_path / "scan.npy", np.ascontiguousarray(scan))
    np.save(tmp_path / "probe.npy", probe.astype(np.float32))
    cal = {"k_pixel_invA": 1 / 60, "energy_eV": 200e3, "semiangle_mrad": 2.0}
    with caplog.at_level("WARNING", logger="fourdcrystal"):
        res = predict(None, str(tmp_path / "scan.npy"), tmp_path / "a.h5", PredictConfig(), cal)
    with h5py.File(res["out"]) as f:
        assert np.hypot(*np.subtract(f.attrs["centre_px"], truth)) < 0.5
    assert res["centre_source"] == "symmetry of the mean pattern"
    assert any("not the brightest disk" in r.getMessage() for r in caplog.records)
    res = predict(None, str(tmp_path / "scan.npy"), tmp_path / "b.h5", PredictConfig(), cal,
                  probe=str(tmp_path / "probe.npy"))
    with h5py.File(res["out"]) as f:
        assert np.hypot(*np.subtract(f.attrs["centre_px"], truth)) < 0.5
    assert res["centre_source"] == "vacuum probe"
