"""The classical Bragg disk detector microscopists use today (py4DSTEM's ``find_Bragg_disks``).

For each pattern:

1. correlate it with the vacuum probe as template, in Fourier space, with a correlation power
   p between cross-correlation (p = 1) and phase correlation (p = 0):
   G = F·conj(P) · |F·conj(P)|^(p − 1);
2. smooth with a Gaussian of ``sigma_px`` (a multiplication of G);
3. take local maxima of the correlation with the thresholds of :mod:`fourdcrystal.detection.peaks`;
4. refine each to sub-pixel precision: a parabola, or DFT upsampling of the unsmoothed G.

The output is :class:`~fourdcrystal.detection.peaks.Peaks` like the model's, so every comparison runs both
on the same patterns. Pure numpy: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from .peaks import PeakConfig, Peaks, dft_refine, find_peaks, parabolic_offsets


KERNELS = ("flat", "gaussian", "sigmoid")


@dataclass(frozen=True)
class BaselineConfig:
    corr_power: float = 1.0  # 1: cross-correlation, 0: phase correlation
    sigma_px: float = 1.0  # Gaussian smoothing of the correlation map, pixels (0 = none)
    peaks: PeakConfig = field(default_factory=lambda: PeakConfig(min_relative=0.01, subpixel="dft", max_peaks=400))
    kernel: str = "flat"  # flat | gaussian | sigmoid: the probe alone, or minus a zero-sum surround
    kernel_width: float = 2.0  # gaussian: its sigma in units of the probe's rms radius
    kernel_radii: tuple = (1.0, 2.0)  # sigmoid: where the subtracted disk's edge starts and ends, in disk radii


def probe_kernel(probe: np.ndarray, config: BaselineConfig | None = None) -> np.ndarray:
    """The correlation template: the probe moved so that q = 0 (pixel (H//2, W//2)) sits at pixel (0, 0),
    normalised to sum 1; for the ``gaussian`` and ``sigmoid`` kernels a normalised surround is subtracted,
    so the template sums to zero.

    A disk found at pixel p of the correlation is then a disk centred at p in the pattern. A
    zero-sum template (py4DSTEM's edge-filtering kernels) answers to disk edges rather than to
    the mean level, which takes out slowly varying backgrounds and the zero beam's halo:
    ``gaussian`` subtracts a Gaussian of ``kernel_width`` times the probe's rms radius,
    ``sigmoid`` a disk of ``kernel_radii[0]`` disk radii whose edge falls as cos² to zero at
    ``kernel_radii[1]``.
    """
    p = np.asarray(probe, dtype=np.float64)
    k = np.fft.ifftshift(p)
    s = k.sum()
    k = k / s if s != 0 else k
    mode = "flat" if config is None else config.kernel
    if mode == "flat" or s == 0:
        return k
    h, w = p.shape
    di = np.fft.fftfreq(h, 1.0 / h)[:, None]  # signed pixel offsets from pixel (0, 0), wrapped
    dj = np.fft.fftfreq(w, 1.0 / w)[None, :]
    r2 = di**2 + dj**2
    if mode == "gaussian":
        rms2 = float((r2 * k).sum())  # the probe's second moment about q = 0, px²
        surround = np.exp(-r2 / (2 * rms2 * config.kernel_width**2))
    elif mode == "sigmoid":
        radius = np.sqrt((p >= 0.5 * p.max()).sum() / np.pi)  # the disk's radius from its area, px
        ri, ro = (f * radius for f in config.kernel_radii)
        t = np.clip((np.sqrt(r2) - ri) / max(ro - ri, 1e-9), 0.0, 1.0)
        surround = np.cos(np.pi / 2 * t) ** 2
    else:
        raise ValueError(f"kernel must be one of {KERNELS}, got {mode!r}")
    return k - surround / surround.sum()


def correlation_spectrum(pattern: np.ndarray, kernel_fft: np.ndarray, corr_power: float) -> np.ndarray:
    """G = F·conj(P)·|F·conj(P)|^(p−1) for a pattern (or a stack (n, H, W)) and the FFT of its probe kernel."""
    g = sfft.fft2(np.asarray(pattern, dtype=np.float64), workers=-1) * np.conj(kernel_fft)
    if corr_power != 1.0:
        m = np.abs(g)
        g = np.where(m > 0, g * np.power(np.where(m > 0, m, 1.0), corr_power - 1.0), 0.0)
    return g


def gaussian_transfer(shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Fourier transform of a unit-sum Gaussian of ``sigma_px`` on an FFT grid."""
    ki = np.fft.fftfreq(shape[0])[:, None]
    kj = np.fft.fftfreq(shape[1])[None, :]
    return np.exp(-2 * np.pi**2 * sigma_px**2 * (ki**2 + kj**2))


def find_bragg_disks(pattern: np.ndarray, probe: np.ndarray, config: BaselineConfig = BaselineConfig(),
                     mask: np.ndarray | None = None) -> Peaks:
    """Disk centres (pixels) and correlation intensities of one pattern, strongest first."""
    return find_bragg_disks_batch(np.asarray(pattern)[None], probe, config, mask)[0]


CORRELATION_BATCH = 32  # patterns transformed together: one multi-threaded FFT call, ~50 MB of spectra at 256²


def correlations(patterns: np.ndarray, probe: np.ndarray, config: BaselineConfig):
    """(smoothed correlation map, unsmoothed spectrum G) of each pattern of a stack (n, H, W), in order.

    ``probe`` is (H, W), shared (its FFT is done once), or (n, H, W). The FFTs run on
    :data:`CORRELATION_BATCH` patterns at a time over every core (``scipy.fft`` with ``workers=-1``: 2.3× numpy's
    one-pattern-at-a-time transforms on the 2-core development machine, ``scripts/bench_predict.py``).
    """
    patterns = np.asarray(patterns)
    shape = patterns.shape[-2:]
    probe = np.asarray(probe)
    if probe.shape[-2:] != shape:
        raise ValueError(f"probe shape {probe.shape} differs from the patterns' {shape}")
    shared = sfft.fft2(probe_kernel(probe, config)) if probe.ndim == 2 else None
    smooth = gaussian_transfer(shape, config.sigma_px) if config.sigma_px > 0 else None
    for s in range(0, len(patterns), CORRELATION_BATCH):
        block = np.asarray(patterns[s:s + CORRELATION_BATCH], dtype=np.float64)
        if shared is not None:
            kf = shared
        else:
            kf = np.stack([sfft.fft2(probe_kernel(k, config)) for k in probe[s:s + len(block)]])
        g = correlation_spectrum(block, kf, config.corr_power)
        # the kernel is centred on pixel (0, 0): a disk at p gives a correlation peak at p
        corr = sfft.ifft2(g * smooth if smooth is not None else g, workers=-1).real
        yield from zip(corr, g)


def find_bragg_disks_batch(patterns: np.ndarray, probe: np.ndarray, config: BaselineConfig = BaselineConfig(),
                           mask: np.ndarray | None = None) -> list[Peaks]:
    """:func:`find_bragg_disks` for a stack (n, H, W); ``probe`` (H, W) shared or (n, H, W).

    ``mask`` (H, W) bool: disks are reported only where it is True.
    """
    # DFT refinement works on the unsmoothed spectrum
    return [find_peaks(corr, config.peaks, spectrum=g, mask=mask) for corr, g in correlations(patterns, probe, config)]


def refine_positions(patterns: np.ndarray, probe: np.ndarray, positions: list[np.ndarray],
                     config: BaselineConfig = BaselineConfig(), search_px: float = 1.5) -> list[np.ndarray]:
    """Move peaks found elsewhere (the model's) onto the probe correlation of the measured patterns.

    For each position (pixels, from the model's V_g) the maximum of the pattern's correlation
    with the probe within ``search_px`` is taken and refined to sub-pixel precision with
    ``config.peaks.subpixel`` (parabola, or DFT up-sampling of the unsmoothed correlation). Where the
    window holds no correlation maximum (no disk there) the position is kept. The
    correlation sums the counts of the whole disk, so its maximum is placed better than the
    maximum of a network output when the pattern is noisy.

    Parameters
    ----------
    patterns : (n, H, W) measured patterns, q = 0 at (H//2, W//2).
    probe : (H, W) or (n, H, W) vacuum probe(s), same grid.
    positions : n arrays (m_k, 2) of peak positions, pixels (axis 0, axis 1).
    config : correlation power and smoothing of the correlation, and the sub-pixel mode.
    search_px : radius of the search window around each position, pixels.

    Returns
    -------
    n arrays (m_k, 2): refined positions, pixels.
    """
    return [_refine_one(corr, g, pos, config, search_px)
            for (corr, g), pos in zip(correlations(patterns, probe, config), positions)]


def find_and_refine(patterns: np.ndarray, probe: np.ndarray, config: BaselineConfig, positions: list[np.ndarray],
                    search_px: float, mask: np.ndarray | None = None) -> tuple[list[Peaks], list[np.ndarray]]:
    """:func:`find_bragg_disks_batch` and :func:`refine_positions` of the same patterns and settings in one pass:
    each pattern's correlation is computed once for both (the model's peaks placed on the detector and the
    baseline's disks, when predict runs both). Equal to the two calls."""
    found, moved = [], []
    for (corr, g), pos in zip(correlations(patterns, probe, config), positions):
        found.append(find_peaks(corr, config.peaks, spectrum=g, mask=mask))
        moved.append(_refine_one(corr, g, pos, config, search_px))
    return found, moved


def edge_map(images: np.ndarray, sigma_px: float = 1.0) -> np.ndarray:
    """The gradient magnitude |∇(G_σ * I)| of an image or of each image of a stack (over the last two axes).

    A CBED disk's edge is where the condenser aperture cuts it, wherever the intensity inside it lies; in a
    thick crystal that intensity is uneven (the rocking curve across the disk), which pulls a correlation of the
    whole disk off its centre. The probe's edge map is a ring; correlated with the pattern's, it places a disk
    by its rim. The Gaussian (``sigma_px`` pixels, 0: none) keeps shot noise from dominating the gradient.

    >>> yy, xx = np.mgrid[:32, :32]
    >>> disk = ((yy - 16.0) ** 2 + (xx - 16.0) ** 2 <= 36).astype(float)
    >>> e = edge_map(disk, 1.0)
    >>> bool(e[16, 16] < 0.01 < e[16, 22])  # flat inside, large on the rim
    True
    """
    x = np.asarray(images, dtype=np.float64)
    if sigma_px > 0:
        x = ndimage.gaussian_filter(x, [0] * (x.ndim - 2) + [sigma_px] * 2)
    gi, gj = np.gradient(x, axis=(-2, -1))
    return np.hypot(gi, gj)


def place_on_edges(patterns: np.ndarray, probe: np.ndarray, positions: list[np.ndarray],
                   config: BaselineConfig = BaselineConfig(), search_px: float = 1.5,
                   sigma_px: float = 1.0) -> list[np.ndarray]:
    """:func:`refine_positions` on the disks' edges: the correlation of the patterns' :func:`edge_map` with the
    probe's, with the same kernel, power and sub-pixel mode (``config``) and search radius.

    Measured on the strain surveys' fine detectors (1/60 Å⁻¹, disks 4.8 px in radius), where a disk placed so
    follows the dynamical contrast inside it less (``experiments/disk_edges``); ``predict`` places disks so
    (``fine_detector_refine="edges"``) only on a detector finer than the model's grid, in patterns that are not
    dominated by shot noise. A ``sigma_px`` over a fifth of the disk radius blurs the rim into the inside again.

    >>> yy, xx = np.mgrid[:64, :64]
    >>> probe = ((yy - 32.0) ** 2 + (xx - 32.0) ** 2 <= 25).astype(float)
    >>> rim = ((yy - 32.0) ** 2 + (xx - 44.0) ** 2 <= 25).astype(float)
    >>> pattern = probe + rim * (1.0 + 0.15 * (xx - 44.0))  # a disk at (32, 44), brighter on its far side
    >>> config = BaselineConfig(kernel="sigmoid", peaks=PeakConfig(subpixel="parabolic"))
    >>> whole = refine_positions(pattern[None], probe, [np.array([[32.0, 44.0]])], config, 2.0)[0][0]
    >>> edges = place_on_edges(pattern[None], probe, [np.array([[32.0, 44.0]])], config, 2.0, sigma_px=0.0)[0][0]
    >>> print(f"{whole[1] - 44:.2f} px off by the whole disk, {edges[1] - 44:.2f} px by its edges")
    1.01 px off by the whole disk, -0.05 px by its edges
    """
    return refine_positions(edge_map(patterns, sigma_px), edge_map(probe, sigma_px), positions, config, search_px)


def _refine_one(corr: np.ndarray, g: np.ndarray, pos: np.ndarray, config: BaselineConfig,
                search_px: float) -> np.ndarray:
    """:func:`refine_positions` for one pattern's correlation map ``corr`` and unsmoothed spectrum ``g``."""
    pos = np.asarray(pos, float).reshape(-1, 2)
    if len(pos) == 0:
        return pos
    r = int(np.ceil(search_px))
    di, dj = np.mgrid[-r:r + 1, -r:r + 1]
    inside = (di**2 + dj**2 <= search_px**2).ravel()
    di, dj = di.ravel()[inside], dj.ravel()[inside]
    h, w = corr.shape
    base = np.rint(pos).astype(int)
    ci = np.clip(base[:, :1] + di[None], 0, h - 1)
    cj = np.clip(base[:, 1:] + dj[None], 0, w - 1)
    k = np.argmax(corr[ci, cj], axis=1)
    ij = np.stack([ci[np.arange(len(pos)), k], cj[np.arange(len(pos)), k]], axis=1)
    if config.peaks.subpixel == "none":
        new = ij.astype(float)
    elif config.peaks.subpixel == "dft":
        new = dft_refine(g, ij + parabolic_offsets(corr, ij), config.peaks.upsample)
    else:
        new = ij + parabolic_offsets(corr, ij)
    # no correlation maximum inside the window (the window's best is on its rim, or the
    # refinement left it): no disk to refine on, the position stays where it was. A 3×3 maximum
    # is read at the found pixels only (a filter over the whole map cost more than the rest).
    peak = _is_local_max(corr, ij)
    stay = ~peak | (np.linalg.norm(new - pos, axis=1) > search_px)
    new[stay] = pos[stay]
    return new


def _is_local_max(img: np.ndarray, ij: np.ndarray) -> np.ndarray:
    """Whether each pixel ``ij`` (m, 2) is ≥ its 3×3 neighbours (the border repeated beyond the edge, as
    ``ndimage.maximum_filter(size=3, mode="nearest")``)."""
    h, w = img.shape
    d = np.array([(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)])
    ni = np.clip(ij[:, None, 0] + d[None, :, 0], 0, h - 1)
    nj = np.clip(ij[:, None, 1] + d[None, :, 1], 0, w - 1)
    return img[ij[:, 0], ij[:, 1]] >= img[ni, nj].max(axis=1)
