"""Detector and dose effects a simulated CBED pattern lacks, drawn at random per sample.

Pure functions over numpy arrays (H, W), pixel grids with q = 0 at (H//2, W//2), and one
:func:`augment_sample` that draws the parameters from a seeded generator and applies them in
the order a microscope would:

1. geometry — elliptic distortion of the projector/detector (cbed, probe, vg and qz alike:
   the labels must stay on the pixels of the disks they describe) and a sub-pixel descan
   shift of the pattern (cbed, vg and qz; the vacuum probe is recorded separately);
2. a smooth inelastic (plasmon) background: a broad Lorentzian around the direct beam,
   convolved with the probe, carrying a drawn fraction of the pattern's intensity;
3. Poisson shot noise at a dose drawn log-uniformly in electrons per pattern;
4. hot and dead pixels.

Noise never touches the labels or the probe (as in crystal4D's augmentation). Same
generator state, same output: the training loop seeds it from (seed, epoch, sample).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..config import default


@dataclass(frozen=True)
class AugmentConfig:
    # defaults written once, in the config schema (fourdcrystal/config.py, train.augment)
    dose_e: tuple[float, float] | None = default("train", "augment.dose_e")  # e⁻ per pattern, log-uniform; None: none
    background: tuple[float, float] = default("train", "augment.background")  # inelastic fraction of the intensity
    background_width_px: tuple[float, float] = default("train", "augment.background_width_px")  # Lorentzian HWHM
    shift_px: float = default("train", "augment.shift_px")  # largest descan shift per axis (uniform in ±shift_px)
    ellipticity: tuple[float, float] = default("train", "augment.ellipticity")  # a/b − 1, random axis
    bad_pixel_fraction: float = default("train", "augment.bad_pixel_fraction")  # hot plus dead pixels, fraction
    probability: float = default("train", "augment.probability")  # chance that a sample is augmented at all

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "enabled"})

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def distortion_matrix(ellipticity: float, angle_rad: float) -> np.ndarray:
    """2×2 map from output pixel offsets to input offsets for an ellipse with axes ratio 1+ε.

    The pattern is stretched by sqrt(1+ε) along ``angle_rad`` and shrunk by the same factor
    across it, so areas (and total intensity) are kept: a/b = 1 + ε, a·b = 1.
    """
    a = np.sqrt(1.0 + ellipticity)
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    rot = np.array([[c, -s], [s, c]])
    forward = rot @ np.diag([a, 1.0 / a]) @ rot.T  # output = forward · input (about the centre)
    return np.linalg.inv(forward)


def warp(image: np.ndarray, inverse: np.ndarray, shift_px: tuple[float, float] = (0.0, 0.0),
         order: int = 1) -> np.ndarray:
    """Resample ``image`` so that output pixel p shows input pixel centre + inverse·(p − centre − shift).

    Bilinear (``order=1``) keeps peaky label images non-negative, unlike Fourier shifts.
    """
    centre = np.array(image.shape, dtype=float) // 2
    offset = centre - inverse @ (centre + np.asarray(shift_px, dtype=float))
    return ndimage.affine_transform(image, inverse, offset=offset, order=order, mode="constant", cval=0.0,
                                    prefilter=False).astype(image.dtype, copy=False)


def inelastic_background(cbed: np.ndarray, probe: np.ndarray, fraction: float, width_px: float) -> np.ndarray:
    """``cbed`` plus a Lorentzian halo (HWHM ``width_px``) ⊛ probe holding ``fraction`` of the total."""
    if fraction <= 0:
        return cbed
    h, w = cbed.shape
    y, x = np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing="ij")
    halo = 1.0 / (1.0 + (x**2 + y**2) / width_px**2)
    halo = np.real(np.fft.ifft2(np.fft.fft2(np.fft.ifftshift(halo)) * np.fft.fft2(probe)))
    halo = np.clip(halo, 0.0, None)
    total = float(cbed.sum())
    halo *= fraction * total / max(float(halo.sum()), 1e-30)
    return ((1.0 - fraction) * cbed + halo).astype(cbed.dtype, copy=False)


def shot_noise(cbed: np.ndarray, dose_e: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts for ``dose_e`` electrons in the pattern, returned on the pattern's own scale."""
    total = float(cbed.sum())
    if dose_e <= 0 or total <= 0:
        return cbed
    counts = rng.poisson(np.clip(cbed, 0, None) * (dose_e / total))
    return (counts * (total / dose_e)).astype(cbed.dtype)


def bad_pixels(cbed: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Set a random ``fraction`` of pixels dead (0) or hot (5–50× the pattern's maximum), half each."""
    n = rng.binomial(cbed.size, fraction) if fraction > 0 else 0
    if n == 0:
        return cbed
    out = cbed.copy()
    flat = out.reshape(-1)
    where = rng.choice(cbed.size, size=n, replace=False)
    hot = rng.random(n) < 0.5
    flat[where[~hot]] = 0.0
    flat[where[hot]] = float(cbed.max()) * rng.uniform(5.0, 50.0, int(hot.sum()))
    return out


def augment_sample(sample: dict[str, np.ndarray], config: AugmentConfig,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Return an augmented copy of ``{"cbed", "probe", "vg", "qz"}`` (each H×W float32)."""
    if rng.random() >= config.probability:
        return dict(sample)
    cbed, probe, vg, qz = (sample[k] for k in ("cbed", "probe", "vg", "qz"))
    ell = rng.uniform(*config.ellipticity)
    inverse = distortion_matrix(ell, rng.uniform(0, np.pi))
    shift = tuple(rng.uniform(-config.shift_px, config.shift_px, 2)) if config.shift_px > 0 else (0.0, 0.0)
    if ell > 0 or any(shift):
        probe = warp(probe, inverse)
        cbed, vg, qz = (warp(a, inverse, shift) for a in (cbed, vg, qz))
    cbed = inelastic_background(cbed, probe, rng.uniform(*config.background), rng.uniform(*config.background_width_px))
    if config.dose_e is not None:
        lo, hi = config.dose_e
        cbed = shot_noise(cbed, float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), rng)
    cbed = bad_pixels(cbed, config.bad_pixel_fraction, rng)
    return {"cbed": cbed, "probe": probe, "vg": vg, "qz": qz}
