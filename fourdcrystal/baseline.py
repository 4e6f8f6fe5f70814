"""The classical Bragg disk detector microscopists use today (py4DSTEM's ``find_Bragg_disks``).

For each pattern:

1. correlate it with the vacuum probe as template, in Fourier space, with a correlation power
   p between cross-correlation (p = 1) and phase correlation (p = 0):
   G = F·conj(P) · |F·conj(P)|^(p − 1);
2. smooth with a Gaussian of ``sigma_px`` (a multiplication of G);
3. take local maxima of the correlation with the thresholds of :mod:`fourdcrystal.peaks`;
4. refine each to sub-pixel precision: a parabola, or DFT upsampling of the unsmoothed G.

The output is :class:`~fourdcrystal.peaks.Peaks` like the model's, so every comparison runs both
on the same patterns. Pure numpy: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .peaks import PeakConfig, Peaks, find_peaks


@dataclass(frozen=True)
class BaselineConfig:
    corr_power: float = 1.0  # 1: cross-correlation, 0: phase correlation
    sigma_px: float = 1.0  # Gaussian smoothing of the correlation map, pixels (0 = none)
    peaks: PeakConfig = field(default_factory=lambda: PeakConfig(min_relative=0.01, subpixel="dft"))


def probe_kernel(probe: np.ndarray) -> np.ndarray:
    """The probe moved so that q = 0 (pixel (H//2, W//2)) sits at pixel (0, 0), normalised to sum 1.

    A disk found at pixel p of the correlation is then a disk centred at p in the pattern.
    """
    k = np.fft.ifftshift(np.asarray(probe, dtype=np.float64))
    s = k.sum()
    return k / s if s != 0 else k


def correlation_spectrum(pattern: np.ndarray, kernel_fft: np.ndarray, corr_power: float) -> np.ndarray:
    """G = F·conj(P)·|F·conj(P)|^(p−1) for a pattern and the FFT of its probe kernel."""
    g = np.fft.fft2(np.asarray(pattern, dtype=np.float64)) * np.conj(kernel_fft)
    if corr_power != 1.0:
        m = np.abs(g)
        g = np.where(m > 0, g * np.power(np.where(m > 0, m, 1.0), corr_power - 1.0), 0.0)
    return g


def gaussian_transfer(shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Fourier transform of a unit-sum Gaussian of ``sigma_px`` on an FFT grid."""
    ki = np.fft.fftfreq(shape[0])[:, None]
    kj = np.fft.fftfreq(shape[1])[None, :]
    return np.exp(-2 * np.pi**2 * sigma_px**2 * (ki**2 + kj**2))


def find_bragg_disks(pattern: np.ndarray, probe: np.ndarray, config: BaselineConfig = BaselineConfig()) -> Peaks:
    """Disk centres (pixels) and correlation intensities of one pattern, strongest first."""
    return find_bragg_disks_batch(np.asarray(pattern)[None], probe, config)[0]


def find_bragg_disks_batch(patterns: np.ndarray, probe: np.ndarray,
                           config: BaselineConfig = BaselineConfig()) -> list[Peaks]:
    """:func:`find_bragg_disks` for a stack (n, H, W) sharing one probe (its FFT is done once)."""
    patterns = np.asarray(patterns)
    shape = patterns.shape[-2:]
    if np.asarray(probe).shape != shape:
        raise ValueError(f"probe shape {np.asarray(probe).shape} differs from the patterns' {shape}")
    kf = np.fft.fft2(probe_kernel(probe))
    smooth = gaussian_transfer(shape, config.sigma_px) if config.sigma_px > 0 else None
    out = []
    for p in patterns:
        g = correlation_spectrum(p, kf, config.corr_power)
        # the kernel is centred on pixel (0, 0): a disk at p gives a correlation peak at p
        corr = np.real(np.fft.ifft2(g * smooth if smooth is not None else g))
        out.append(find_peaks(corr, config.peaks, spectrum=g))  # DFT refinement on the unsmoothed map
    return out
