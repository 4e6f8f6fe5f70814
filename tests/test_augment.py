"""Augmentation checked against independent calculations: image moments, counting statistics."""

from __future__ import annotations

import numpy as np

from fourdcrystal.training import augment
from fourdcrystal.training.augment import AugmentConfig, augment_sample

N = 128


def _gaussian(sigma_x: float, sigma_y: float, centre=(N // 2, N // 2)) -> np.ndarray:
    y, x = np.meshgrid(np.arange(N) - centre[0], np.arange(N) - centre[1], indexing="ij")
    return np.exp(-(y**2) / (2 * sigma_x**2) - (x**2) / (2 * sigma_y**2)).astype(np.float32)


def _moments(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (axis 0, axis 1) and 2×2 covariance of an image treated as a distribution."""
    img = img.astype(np.float64)
    i, j = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    m = img.sum()
    c = np.array([(i * img).sum() / m, (j * img).sum() / m])
    di, dj = i - c[0], j - c[1]
    cov = np.array([[(di * di * img).sum(), (di * dj * img).sum()], [(di * dj * img).sum(), (dj * dj * img).sum()]]) / m
    return c, cov


def test_elliptic_distortion_has_the_requested_axes_ratio_and_keeps_intensity():
    disk = _gaussian(8, 8)
    for eps, angle in ((0.15, 0.0), (0.1, np.pi / 5), (0.05, 2.0)):
        out = augment.warp(disk, augment.distortion_matrix(eps, angle))
        _, cov = _moments(out)
        evals, evecs = np.linalg.eigh(cov)
        # the image's second moments scale with the square of the stretch: ratio of axes = 1 + eps
        np.testing.assert_allclose(np.sqrt(evals[1] / evals[0]), 1 + eps, rtol=0.01)
        major = evecs[:, 1]  # (axis 0, axis 1) components; the stretch is along (cos a, sin a)
        assert abs(abs(major @ [np.cos(angle), np.sin(angle)]) - 1) < 1e-3
        np.testing.assert_allclose(out.sum(), disk.sum(), rtol=2e-3)  # a·b = 1: area kept


def test_subpixel_shift_moves_the_centroid():
    img = _gaussian(3, 5)
    c0, _ = _moments(img)
    out = augment.warp(img, np.eye(2), shift_px=(0.3, -0.7))
    c1, _ = _moments(out)
    np.testing.assert_allclose(c1 - c0, [0.3, -0.7], atol=0.01)


def test_shot_noise_counts_and_variance():
    rng = np.random.default_rng(1)
    clean = _gaussian(10, 10) + 0.01
    dose = 5e4
    noisy = np.stack([augment.shot_noise(clean, dose, rng) for _ in range(200)])
    scale = clean.sum() / dose  # intensity per electron
    counts = noisy / scale
    assert np.allclose(counts, np.round(counts), atol=1e-2)  # whole electrons
    np.testing.assert_allclose(noisy.mean(0).sum(), clean.sum(), rtol=0.01)
    # Poisson: variance of the counts equals their mean, pixel by pixel (checked where counts are many)
    mean_counts = clean / scale
    bright = mean_counts > 20
    ratio = counts.var(0)[bright] / mean_counts[bright]
    assert 0.9 < ratio.mean() < 1.1


def test_background_carries_its_fraction_and_keeps_the_total():
    cbed = _gaussian(3, 3)
    probe = _gaussian(3, 3)
    out = augment.inelastic_background(cbed, probe, 0.2, 16.0)
    np.testing.assert_allclose(out.sum(), cbed.sum(), rtol=1e-5)
    np.testing.assert_allclose((out - 0.8 * cbed).sum() / cbed.sum(), 0.2, rtol=1e-4)
    assert (out - 0.8 * cbed)[0, 0] > 0  # the halo reaches the corners, unlike the disk


def test_bad_pixels_fraction():
    rng = np.random.default_rng(0)
    img = np.ones((N, N), np.float32)
    out = augment.bad_pixels(img, 0.01, rng)
    changed = out != 1
    assert 100 < changed.sum() < 230  # binomial(16384, 0.01): 164 ± 13
    assert ((out[changed] == 0) | (out[changed] >= 5)).all()


def test_augment_sample_is_seeded_and_noise_spares_labels_and_probe():
    rng = np.random.default_rng(0)
    sample = {"cbed": _gaussian(4, 4) + 0.001, "probe": _gaussian(4, 4), "vg": _gaussian(1, 1) * 7,
              "qz": _gaussian(2, 2) * 0.01}
    cfg = AugmentConfig(ellipticity=(0.0, 0.0), shift_px=0.0)
    a = augment_sample(sample, cfg, np.random.default_rng(5))
    b = augment_sample(sample, cfg, np.random.default_rng(5))
    c = augment_sample(sample, cfg, np.random.default_rng(6))
    for k in sample:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["cbed"], c["cbed"])
    for k in ("probe", "vg", "qz"):  # no geometry drawn: labels and probe untouched by the noise
        np.testing.assert_array_equal(a[k], sample[k])
    # with geometry: the labels move with the pattern, the probe is distorted but not shifted
    geo = AugmentConfig(ellipticity=(0.0, 0.0), shift_px=2.0, dose_e=None, background=(0.0, 0.0),
                        bad_pixel_fraction=0.0)
    sample = {**sample, "cbed": _gaussian(4, 4), "vg": _gaussian(2, 2) * 7}
    g = augment_sample(sample, geo, rng)
    shift_cbed = _moments(g["cbed"])[0] - _moments(sample["cbed"])[0]
    shift_vg = _moments(g["vg"])[0] - _moments(sample["vg"])[0]
    np.testing.assert_allclose(shift_cbed, shift_vg, atol=0.02)
    assert np.abs(shift_cbed).max() > 0.05
    np.testing.assert_allclose(_moments(g["probe"])[0], [N // 2, N // 2], atol=1e-6)
