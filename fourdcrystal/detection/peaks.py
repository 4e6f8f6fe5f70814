"""Bragg peaks from an image: local maxima, thresholds, sub-pixel refinement.

Shared by the model's V_g images and the classical baseline's correlation maps, so both give
the same output format: ``Peaks`` with positions in pixels (axis 0, axis 1; sub-pixel) and an
intensity, converted to Å⁻¹ with :func:`to_reciprocal`. Pure numpy/scipy: no I/O.

Sub-pixel refinement:

* ``parabolic`` — a parabola through the maximum and its two neighbours, per axis: exact for a
  quadratic peak, fast.
* ``dft`` — the peak is re-evaluated on a grid ``upsample`` times finer around the maximum by a
  matrix-multiply DFT of the image's Fourier transform (Guizar-Sicairos et al. 2008, as in
  py4DSTEM's ``upsampled_correlation``). Only for band-limited images such as correlations.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class PeakConfig:
    min_relative: float = 0.02  # keep maxima ≥ this fraction of the strongest one
    min_spacing_px: float = 3.0  # maxima closer than this to a stronger one are dropped
    edge_px: int = 2  # ignore maxima this close to the border
    max_peaks: int = 100
    subpixel: str = "parabolic"  # none | parabolic | dft
    upsample: int = 16  # dft refinement: pixels are divided into this many steps


@dataclass
class Peaks:
    """Peaks of one image, strongest first: positions in pixels (float) and intensities."""

    pos_px: np.ndarray  # (n, 2): axis 0, axis 1
    intensity: np.ndarray  # (n,)

    def __len__(self) -> int:
        return len(self.intensity)

    @classmethod
    def empty(cls) -> "Peaks":
        return cls(np.zeros((0, 2)), np.zeros(0))


def maxima_above(image: np.ndarray, min_relative: float, edge_px: int = 0,
                 mask: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(integer (i, j) of every 3×3 local maximum ≥ ``min_relative`` × the strongest, strongest first; the
    strongest value). ``mask``: only maxima inside it, and the strongest value taken inside it.

    Parameters
    ----------
    image : (H, W) image.
    min_relative : threshold, fraction of the strongest value.
    edge_px : ignore maxima this close to the border, pixels.
    mask : (H, W) bool, or None for the whole image.

    Returns
    -------
    (n, 2) integer positions, strongest first, and the strongest value.
    """
    img = np.asarray(image, dtype=np.float64)
    # true local maxima (3×3); spacing is enforced by suppress_close on circles, not by a wider square
    # filter, which would hide a peak behind the shoulder of a stronger one just outside the spacing
    is_max = (img == ndimage.maximum_filter(img, size=3, mode="constant", cval=-np.inf))
    e = edge_px
    if e > 0:
        is_max[:e], is_max[-e:], is_max[:, :e], is_max[:, -e:] = False, False, False, False
    if mask is not None:
        is_max &= mask
        top = img[mask].max() if mask.any() else 0.0
    else:
        top = img.max() if img.size else 0.0
    if not np.isfinite(top) or top <= 0:
        return np.zeros((0, 2), dtype=int), 0.0
    is_max &= img >= min_relative * top
    ij = np.argwhere(is_max)
    return ij[np.argsort(-img[ij[:, 0], ij[:, 1]], kind="stable")], float(top)


def suppress_close(ij: np.ndarray, spacing_px: float) -> np.ndarray:
    """Keep-mask over maxima ``ij`` (strongest first): a maximum closer than ``spacing_px`` (on a circle) to a
    stronger kept one is dropped. The maximum filter leaves few such pairs, so only those are resolved.

    Parameters
    ----------
    ij : (n, 2) integer positions, strongest first.
    spacing_px : smallest allowed distance, pixels.

    Returns
    -------
    (n,) bool, True for the maxima kept.
    """
    drop = np.zeros(len(ij), dtype=bool)
    if len(ij) > 1 and spacing_px > 0:
        from scipy.spatial import cKDTree

        pairs = cKDTree(ij).query_pairs(r=np.nextafter(spacing_px, 0), output_type="ndarray")
        if len(pairs):
            later = defaultdict(list)
            for a, b in np.sort(pairs, axis=1):
                later[a].append(b)
            for k in sorted(later):
                if not drop[k]:
                    drop[later[k]] = True
    return ~drop


def local_maxima(image: np.ndarray, config: PeakConfig = PeakConfig(), mask: np.ndarray | None = None) -> np.ndarray:
    """Integer (i, j) of maxima above the threshold, strongest first, at least ``min_spacing_px`` apart.

    ``mask`` (bool, image shape): maxima are kept only where it is True, and the threshold is
    relative to the strongest value inside it. Maxima are found on the whole image first, so a
    shoulder cut by the mask's edge does not become a maximum.

    Parameters
    ----------
    image : (H, W) image.
    config : threshold (fraction of the strongest), spacing and edge (pixels), cap on the count.
    mask : (H, W) bool, or None.

    Returns
    -------
    (n, 2) integer positions, strongest first.
    """
    ij, _ = maxima_above(image, config.min_relative, config.edge_px, mask)
    keep = ij[suppress_close(ij, config.min_spacing_px)][:config.max_peaks]
    return keep.astype(int).reshape(-1, 2)


def parabolic_offsets(image: np.ndarray, ij: np.ndarray) -> np.ndarray:
    """Sub-pixel offsets of maxima from a 3-point parabola per axis.

    Parameters
    ----------
    image : (H, W) image.
    ij : (n, 2) integer positions of its maxima, pixels.

    Returns
    -------
    (n, 2) offsets in pixels, each in −0.5…0.5 (0 where the neighbourhood is flat or not curved downward).

    >>> parabolic_offsets(np.array([[0.0, 1.0, 0.0], [1.0, 3.0, 2.0], [0.0, 2.0, 0.0]]), [[1, 1]])
    array([[0.16666667, 0.16666667]])
    """
    img = np.asarray(image, dtype=np.float64)
    ij = np.asarray(ij, dtype=int).reshape(-1, 2)
    h, w = img.shape
    i, j = ij[:, 0], ij[:, 1]
    b = img[i, j]
    out = np.zeros((len(ij), 2))
    for axis, (a, c) in enumerate(((img[np.maximum(i - 1, 0), j], img[np.minimum(i + 1, h - 1), j]),
                                   (img[i, np.maximum(j - 1, 0)], img[i, np.minimum(j + 1, w - 1)]))):
        denom = a - 2 * b + c
        curved = denom < 0  # a flat or convex neighbourhood gives no offset
        out[curved, axis] = np.clip(0.5 * (a - c)[curved] / denom[curved], -0.5, 0.5)
    return out


def dft_upsample(spectrum: np.ndarray, centre: np.ndarray, upsample: int, half_width_px: float = 1.5) -> np.ndarray:
    """The inverse FFT of ``spectrum`` on a grid of step 1/``upsample`` px around ``centre`` (i, j).

    Computed by two small matrix products instead of a huge zero-padded FFT.

    Parameters
    ----------
    spectrum : (H, W) FFT of the image.
    centre : (i, j) centre of the fine grid, pixels.
    upsample : fine-grid steps per pixel.
    half_width_px : half width of the fine grid, pixels.

    Returns
    -------
    (n, n) real image on the fine grid, n = ceil(2·half_width·upsample) + 1.
    """
    h, w = spectrum.shape
    n = int(np.ceil(2 * half_width_px * upsample)) + 1
    offs = (np.arange(n) - (n - 1) / 2) / upsample
    ki, kj = np.fft.fftfreq(h), np.fft.fftfreq(w)
    ei = np.exp(2j * np.pi * np.outer(centre[0] + offs, ki))  # (n, h)
    ej = np.exp(2j * np.pi * np.outer(kj, centre[1] + offs))  # (w, n)
    return np.real(ei @ spectrum @ ej) / (h * w)


def dft_refine(spectrum: np.ndarray, start_px: np.ndarray, upsample: int) -> np.ndarray:
    """Positions (m, 2) moved to the maximum of the inverse FFT of ``spectrum`` on a grid of
    1/``upsample`` px within ±1.5 px of ``start_px``.

    Parameters
    ----------
    spectrum : (H, W) FFT of the image.
    start_px : (m, 2) starting positions, pixels.
    upsample : fine-grid steps per pixel.

    Returns
    -------
    (m, 2) refined positions, pixels.
    """
    start_px = np.asarray(start_px, float).reshape(-1, 2)
    pos = np.empty_like(start_px)
    for n, start in enumerate(start_px):
        local = dft_upsample(spectrum, start, upsample)
        k = np.unravel_index(np.argmax(local), local.shape)
        pos[n] = start + (np.array(k) - (local.shape[0] - 1) / 2) / upsample
    return pos


def find_peaks(image: np.ndarray, config: PeakConfig = PeakConfig(), spectrum: np.ndarray | None = None,
               mask: np.ndarray | None = None) -> Peaks:
    """Peaks of an image: local maxima above a threshold, at least a spacing apart, refined to sub-pixel.

    Parameters
    ----------
    image : (H, W) image (a predicted V_g map or a correlation map).
    config : threshold (fraction of the strongest maximum), spacing and edge (pixels), the cap on
        their number, and the sub-pixel method (none, parabolic, dft).
    spectrum : for ``subpixel="dft"``, the FFT of the unsmoothed image (computed when None).
    mask : (H, W) bool; maxima only where True.

    Returns
    -------
    :class:`Peaks`, strongest first: positions in pixels (axis 0, axis 1) and the image's values there.
    """
    img = np.asarray(image, dtype=np.float64)
    ij = local_maxima(img, config, mask)
    if len(ij) == 0:
        return Peaks.empty()
    if config.subpixel == "none":
        pos = ij.astype(float)
    elif config.subpixel == "parabolic":
        pos = ij + parabolic_offsets(img, ij)
    elif config.subpixel == "dft":
        spec = np.fft.fft2(img) if spectrum is None else spectrum
        pos = dft_refine(spec, ij + parabolic_offsets(img, ij), config.upsample)
    else:
        raise ValueError(f"subpixel must be none, parabolic or dft, got {config.subpixel!r}")
    return Peaks(pos, img[ij[:, 0], ij[:, 1]])


def to_reciprocal(peaks: Peaks, shape: tuple[int, int], k_sampling_invA) -> np.ndarray:
    """Peak positions as reciprocal-space vectors.

    Parameters
    ----------
    peaks : positions in pixels.
    shape : (H, W) of the image the peaks came from; q = 0 is pixel (H//2, W//2).
    k_sampling_invA : pixel size, Å⁻¹ (one number or one per axis).

    Returns
    -------
    (n, 2) q in Å⁻¹ along axes 0 and 1.

    >>> to_reciprocal(Peaks(np.array([[66.0, 64.0]]), np.ones(1)), (128, 128), 0.03)
    array([[0.06, 0.  ]])
    """
    dk = np.broadcast_to(np.asarray(k_sampling_invA, dtype=float), (2,))
    centre = np.array([shape[0] // 2, shape[1] // 2], dtype=float)
    return (peaks.pos_px - centre) * dk


def match_peaks(pred_px: np.ndarray, true_px: np.ndarray, radius_px: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches of found peaks to true peaks, closest pairs first.

    Parameters
    ----------
    pred_px, true_px : (n, 2) and (m, 2) positions, pixels.
    radius_px : largest distance of a match, pixels.

    Returns
    -------
    Two equal-length integer arrays: indices into ``pred_px`` and into ``true_px`` of the matched pairs.

    >>> match_peaks(np.array([[0.0, 0.0], [5.0, 5.0]]), np.array([[0.5, 0.0], [9.0, 9.0]]), 2.0)
    (array([0]), array([0]))
    """
    if len(pred_px) == 0 or len(true_px) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    d = np.linalg.norm(pred_px[:, None, :] - true_px[None, :, :], axis=-1)
    pi, ti = np.nonzero(d <= radius_px)
    order = np.argsort(d[pi, ti], kind="stable")
    used_p, used_t, mp, mt = set(), set(), [], []
    for k in order:
        a, b = int(pi[k]), int(ti[k])
        if a not in used_p and b not in used_t:
            used_p.add(a)
            used_t.add(b)
            mp.append(a)
            mt.append(b)
    return np.array(mp, dtype=int), np.array(mt, dtype=int)
