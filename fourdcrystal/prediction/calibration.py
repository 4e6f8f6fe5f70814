"""Detector calibration and resampling of measured patterns onto a model's grid. Pure numpy, no I/O.

A trained model expects patterns of H×W pixels of a fixed size ``dk`` (Å⁻¹) with q = 0 at pixel
(H//2, W//2). A detector has its own pixel size and its zero beam wherever the optics put it.
:class:`Resampler` maps one onto the other with two small matrices per pattern,
``A @ pattern @ B.T``: area-weighted averaging where the model's pixels are larger than the
detector's (no aliasing), linear interpolation where they are smaller.

Units: reciprocal lengths in Å⁻¹ (no 2π), angles in mrad, energies in eV, pixels as floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..simulation.optics import disk_radius_invA, wavelength_A


def k_pixel_from_camera_length(camera_length_mm: float, detector_pixel_um: float, energy_eV: float) -> float:
    """Detector pixel size from the camera length: the angle one pixel subtends, p / L, divided by λ.

    Parameters
    ----------
    camera_length_mm : effective camera length L, mm.
    detector_pixel_um : detector pixel pitch p, µm.
    energy_eV : beam energy, eV.

    Returns
    -------
    k = p / (L·λ) in Å⁻¹ per pixel (small angles).

    >>> round(k_pixel_from_camera_length(110.0, 55.0, 200e3), 5)
    0.01994
    """
    return (detector_pixel_um * 1e-6) / (camera_length_mm * 1e-3) / wavelength_A(energy_eV)


def resampling_matrix(n_out: int, d_out: float, n_in: int, d_in: float, centre_in: float) -> np.ndarray:
    """(n_out, n_in) weights taking one detector axis to one model axis.

    Output pixel o sits at q = (o − n_out//2)·d_out, i.e. at input coordinate
    x = centre_in + q / d_in (input pixels). Where d_out ≥ d_in the output pixel averages the
    input pixels it overlaps, weighted by overlap (box filter, rows sum to 1 inside the
    detector); where d_out < d_in it interpolates linearly. Outside the detector the weight is 0.

    Parameters
    ----------
    n_out, d_out : model pixels along the axis and their size, Å⁻¹.
    n_in, d_in : detector pixels along the axis and their size, Å⁻¹.
    centre_in : the zero beam on this detector axis, pixels.

    Returns
    -------
    (n_out, n_in) float64 weights.

    >>> resampling_matrix(3, 2.0, 6, 1.0, 2.5)  # model pixels twice the size: pairs averaged
    array([[0.5, 0.5, 0. , 0. , 0. , 0. ],
           [0. , 0. , 0.5, 0.5, 0. , 0. ],
           [0. , 0. , 0. , 0. , 0.5, 0.5]])
    """
    x = centre_in + (np.arange(n_out) - n_out // 2) * (d_out / d_in)
    m = np.zeros((n_out, n_in))
    r = d_out / d_in
    if r >= 1:
        lo, hi = x - r / 2, x + r / 2
        k = np.arange(n_in)
        overlap = np.clip(np.minimum(hi[:, None], k[None, :] + 0.5) - np.maximum(lo[:, None], k[None, :] - 0.5), 0, None)
        m = overlap / r
    else:
        i0 = np.floor(x).astype(int)
        f = x - i0
        rows = np.arange(n_out)
        for i, w in ((i0, 1 - f), (i0 + 1, f)):  # two neighbours: distinct columns, so plain assignment
            ok = (i >= 0) & (i < n_in)
            m[rows[ok], i[ok]] = w[ok]
    return m


@dataclass(frozen=True)
class Resampler:
    """Detector patterns (n, K_x, K_y) → model patterns (n, H, W), q = 0 moved to (H//2, W//2)."""

    a: np.ndarray  # (H, K_x)
    b: np.ndarray  # (W, K_y)

    @classmethod
    def build(cls, out_shape: tuple[int, int], out_dk_invA, in_shape: tuple[int, int], in_dk_invA,
              centre_px) -> "Resampler":
        dko = np.broadcast_to(np.asarray(out_dk_invA, float), (2,))
        dki = np.broadcast_to(np.asarray(in_dk_invA, float), (2,))
        return cls(resampling_matrix(out_shape[0], dko[0], in_shape[0], dki[0], centre_px[0]).astype(np.float32),
                   resampling_matrix(out_shape[1], dko[1], in_shape[1], dki[1], centre_px[1]).astype(np.float32))

    def __call__(self, patterns: np.ndarray) -> np.ndarray:
        p = np.asarray(patterns, dtype=np.float32)
        return np.matmul(np.matmul(self.a, p), self.b.T)

    @property
    def shape(self) -> tuple[int, int]:
        return self.a.shape[0], self.b.shape[0]

    def coverage(self, detector_valid: np.ndarray | None = None) -> np.ndarray:
        """(H, W) fraction of each model pixel that lies on valid detector pixels (1 well inside).

        ``detector_valid`` (K_x, K_y; True or 1 where the detector recorded data) defaults to the
        whole detector.
        """
        if detector_valid is None:
            return np.outer(self.a.sum(1), self.b.sum(1))
        return self(np.asarray(detector_valid, np.float32)[None])[0]


def detector_grid_shape(in_shape: tuple[int, int], in_dk_invA, centre_px, out_dk_invA,
                        multiple: int = 1) -> tuple[int, int]:
    """The smallest model grid that holds the whole detector.

    Parameters
    ----------
    in_shape : detector pixels (K_x, K_y).
    in_dk_invA : detector pixel size, Å⁻¹ (one number or one per axis).
    centre_px : the zero beam on the detector, pixels (axis 0, axis 1).
    out_dk_invA : the model's pixel size, Å⁻¹.
    multiple : each side is rounded up to a multiple of this (2^depth for a U-Net).

    Returns
    -------
    (H, W) with q = 0 at (H//2, W//2) and every detector pixel's q on the grid: output pixel o
    sits at q = (o − n//2)·dk_out, so n//2 must reach the far edge below the centre and
    n − 1 − n//2 the far edge above it.
    """
    dki = np.broadcast_to(np.asarray(in_dk_invA, float), (2,))
    dko = np.broadcast_to(np.asarray(out_dk_invA, float), (2,))
    out = []
    for n_in, c, di, do in zip(in_shape, centre_px, dki, dko):
        below = (c + 0.5) * di / do  # q-distance from the zero beam to the detector's outer pixel edges, model px
        above = (n_in - 0.5 - c) * di / do
        n = max(2 * int(np.ceil(below - 1e-9)), 2 * int(np.ceil(above - 1e-9)) + 1, 1)
        out.append(int(np.ceil(n / multiple) * multiple))
    return out[0], out[1]


def usable_region(coverage: np.ndarray, margin_px: float, min_coverage: float = 0.99) -> np.ndarray:
    """Model pixels where peaks may be reported: fully on recorded data, and ``margin_px`` from anything else.

    A disk whose centre lies less than its radius from the edge of the data is cut: its
    correlation peak and the network's output there are biased, so the default margin is about
    one disk radius. Beyond the grid counts as no data.

    Parameters
    ----------
    coverage : (H, W) fraction of each model pixel on valid detector pixels (:meth:`Resampler.coverage`).
    margin_px : distance to keep from anything not covered, model pixels.
    min_coverage : a pixel counts as covered from this fraction.

    Returns
    -------
    (H, W) bool, True where peaks may be reported.

    >>> usable_region(np.ones((7, 7)), 2.0).sum()  # a 3×3 centre survives a 2-pixel margin
    np.int64(9)
    """
    valid = np.asarray(coverage) >= min_coverage
    r = int(np.ceil(margin_px))
    if r > 0:
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        valid = ndimage.binary_erosion(valid, structure=yy**2 + xx**2 <= margin_px**2, border_value=0)
    return valid


def dead_lines(mean_pattern: np.ndarray) -> np.ndarray:
    """Detector pixels of whole rows or columns, running in from an edge, that recorded nothing.

    A row or column is empty when its mean counts are zero (or non-finite) everywhere; the empty
    ones counted from each edge of the detector up to the first that is not are dead. That is
    how a dead half or the unrecorded frame around a cropped acquisition looks. Zeros elsewhere
    are left alone: between sharp Bragg disks, or at low dose, pixels that caught no electron
    are not dead, and masking them (with the margin kept around dead areas) would hide real
    disks next to them. Other bad areas (a chip gap, a beam stop): ``predict --mask``.

    Parameters
    ----------
    mean_pattern : (K_x, K_y) mean of many detector frames.

    Returns
    -------
    (K_x, K_y) bool, True on dead rows and columns.
    """
    empty = ~(np.isfinite(mean_pattern) & (mean_pattern != 0))
    dead = np.zeros(empty.shape, bool)
    for axis, lines in ((0, empty.all(axis=1)), (1, empty.all(axis=0))):
        run = np.zeros(len(lines), bool)
        run |= np.logical_and.accumulate(lines)  # from the first edge inward
        run |= np.logical_and.accumulate(lines[::-1])[::-1]  # from the last edge inward
        if axis == 0:
            dead[run, :] = True
        else:
            dead[:, run] = True
    return dead


def aperture_disk(shape: tuple[int, int], dk_invA, radius_invA: float, supersample: int = 8) -> np.ndarray:
    """The vacuum probe of an ideal aperture: a disk of ``radius_invA`` centred on (H//2, W//2).

    Each pixel holds the fraction of its area inside the disk (``supersample``² sub-pixels), so
    the edge is anti-aliased like a measured probe. Maximum 1.

    Parameters
    ----------
    shape : (H, W) pixels, q = 0 at (H//2, W//2).
    dk_invA : pixel size, Å⁻¹ (one number or one per axis).
    radius_invA : disk radius α/λ, Å⁻¹.
    supersample : sub-pixels per pixel side for the edge.

    Returns
    -------
    (H, W) float32, the fraction of each pixel inside the disk.
    """
    dk = np.broadcast_to(np.asarray(dk_invA, float), (2,))
    s = (np.arange(supersample) + 0.5) / supersample - 0.5
    qi = ((np.arange(shape[0]) - shape[0] // 2)[:, None] + s[None, :]).ravel() * dk[0]
    qj = ((np.arange(shape[1]) - shape[1] // 2)[:, None] + s[None, :]).ravel() * dk[1]
    inside = (qi[:, None] ** 2 + qj[None, :] ** 2) <= radius_invA**2
    return inside.reshape(shape[0], supersample, shape[1], supersample).mean(axis=(1, 3)).astype(np.float32)


def synthesised_probe(shape: tuple[int, int], dk_invA, energy_eV: float, semiangle_mrad: float) -> np.ndarray:
    """Vacuum probe from the optics alone: an aperture disk of radius α/λ.

    Parameters
    ----------
    shape : (H, W) pixels, q = 0 at (H//2, W//2).
    dk_invA : pixel size, Å⁻¹ (one number or one per axis).
    energy_eV : beam energy, eV.
    semiangle_mrad : convergence semi-angle α, mrad.

    Returns
    -------
    (H, W) float32, 1 inside the disk, anti-aliased at its edge (:func:`aperture_disk`).
    """
    return aperture_disk(shape, dk_invA, disk_radius_invA(semiangle_mrad, energy_eV))


def disk_centre(image: np.ndarray, radius_px: float | None = None) -> tuple[float, float]:
    """Centre (pixels, axis 0/1) of the brightest disk of ``image``: the zero beam of a mean pattern.

    With ``radius_px`` the image is first correlated with a disk of that radius (finding the
    disk, not a hot pixel or a sharp Kikuchi crossing); the position is then refined as the
    intensity centroid of the pixels above half the maximum inside 1.5 radii.

    Parameters
    ----------
    image : (H, W) pattern, e.g. the mean of a scan.
    radius_px : the disk's radius, pixels (None: no disk correlation, a 1-pixel Gaussian smoothing).

    Returns
    -------
    (i, j) in pixels, sub-pixel.
    """
    img = np.asarray(image, dtype=np.float64)
    img = img - np.median(img)
    score = _disk_score(img, radius_px) if radius_px and radius_px > 0.5 else ndimage.gaussian_filter(img, 1.0)
    i, j = np.unravel_index(np.argmax(score), img.shape)
    return _centroid(img, i, j, radius_px if radius_px else 3.0)


# a disk other than the brightest is taken for the zero beam only where it is at least this bright (disk score,
# against the brightest's): the thick Si [110] pattern's zero beam is at 0.85 of its brightest reflection
ZERO_BEAM_MIN_BRIGHTNESS = 0.2


def zero_beam_centre(mean: np.ndarray, radius_px: float, probe_centre: tuple[float, float] | None = None,
                     candidates: int = 24) -> tuple[tuple[float, float], str]:
    """The zero beam in a scan's mean pattern, and how it was found.

    In a thick crystal a reflection is often brighter than the zero beam, so the brightest disk is
    not enough. With ``probe_centre`` (a vacuum probe recorded on the same detector: it already
    shows where the undiffracted beam lands) the disk nearest it, within one radius, is taken.
    Otherwise the diffraction pattern's own symmetry decides: the intensity envelope of a
    pattern falls off around the zero beam, so among the ``candidates`` brightest disks the one
    about which the pattern, its own disk left out, best matches its point reflection
    (I(c + x) against I(c − x), normalised correlation) is taken, where it is clearly more symmetric than the
    brightest disk and at least :data:`ZERO_BEAM_MIN_BRIGHTNESS` as bright.

    Parameters
    ----------
    mean : (H, W) mean pattern.
    radius_px : the disks' radius, pixels.
    probe_centre : (i, j) of the vacuum probe's disk on the same detector, or None.

    Returns
    -------
    ((i, j) sub-pixel, source): source names the rule ("vacuum probe", "symmetry of the mean pattern" or
    "bright disk of the mean pattern" when the brightest disk is also the most symmetric one).
    """
    img = np.asarray(mean, dtype=np.float64)
    img = img - np.median(img)
    r = max(float(radius_px), 1.0)
    score = _disk_score(img, r)
    if probe_centre is not None:
        ii, jj = np.mgrid[:img.shape[0], :img.shape[1]]
        near = (ii - probe_centre[0]) ** 2 + (jj - probe_centre[1]) ** 2 <= r**2
        i, j = np.unravel_index(np.argmax(np.where(near, score, -np.inf)), img.shape)
        return _centroid(img, i, j, r), "vacuum probe"
    peaks = ndimage.maximum_filter(score, size=2 * int(r) + 1, mode="constant") == score
    order = np.argsort(score[peaks])[::-1][:candidates]
    cand = np.argwhere(peaks)[order]
    cand = cand[score[cand[:, 0], cand[:, 1]] > 0.05 * score.max()]
    if not len(cand):
        i, j = np.unravel_index(np.argmax(score), img.shape)
        return _centroid(img, i, j, r), "bright disk of the mean pattern"

    def symmetry(c) -> float:
        # the point reflection through c: pixel c + d ↔ c − d, on the overlap, the disk at c left out
        h, w = img.shape
        di = min(c[0], h - 1 - c[0])
        dj = min(c[1], w - 1 - c[1])
        if di < 2 * r or dj < 2 * r:
            return -np.inf  # too near the edge to see the pattern around it
        a = img[c[0] - di:c[0] + di + 1, c[1] - dj:c[1] + dj + 1]
        b = a[::-1, ::-1]
        y, x = np.mgrid[-di:di + 1, -dj:dj + 1]
        keep = y**2 + x**2 > (1.5 * r) ** 2
        a, b = a[keep] - a[keep].mean(), b[keep] - b[keep].mean()
        den = np.sqrt((a * a).sum() * (b * b).sum())
        return float((a * b).sum() / den) if den > 0 else -np.inf

    sym = np.array([symmetry(c) for c in cand])
    k = int(np.argmax(sym)) if np.isfinite(sym.max()) else 0
    # another disk only when it is clearly the centre of the pattern (simulated thick crystals: ≥ 0.86 against
    # ≤ 0.13 for a brighter reflection); a pattern without Friedel pairs keeps its brightest disk. And only a bright
    # one: a crystal at the Bragg condition of a systematic row's g is symmetric about g/2, where a faint reflection
    # can sit (the quickstart's demo: 000 the brightest disk, 00-4 at 0.69 of it, 00-2 between them at 0.07)
    if k != 0 and not (sym[k] >= max(sym[0], 0.0) + 0.3
                       and score[tuple(cand[k])] >= ZERO_BEAM_MIN_BRIGHTNESS * score[tuple(cand[0])]):
        k = 0
    i, j = cand[k]
    return _centroid(img, i, j, r), ("bright disk of the mean pattern" if k == 0 else "symmetry of the mean pattern")


def _disk_score(img: np.ndarray, radius_px: float) -> np.ndarray:
    """``img`` correlated with a flat disk of ``radius_px``: high on disks, low on hot pixels and sharp lines."""
    r = float(radius_px)
    yy, xx = np.mgrid[-int(r) - 1:int(r) + 2, -int(r) - 1:int(r) + 2]
    return ndimage.convolve(img, (yy**2 + xx**2 <= r**2).astype(float), mode="constant")


def _centroid(img: np.ndarray, i: int, j: int, radius_px: float) -> tuple[float, float]:
    """Intensity centroid of the pixels above half the local maximum within 1.5 radii of (i, j)."""
    r = 1.5 * radius_px
    ii, jj = np.mgrid[:img.shape[0], :img.shape[1]]
    near = (ii - i) ** 2 + (jj - j) ** 2 <= r**2
    w = np.where(near & (img >= 0.5 * img[near].max()), img, 0.0)
    total = w.sum()
    if total <= 0:
        return float(i), float(j)
    return float((w * ii).sum() / total), float((w * jj).sum() / total)


def disk_radius_px(probe: np.ndarray) -> float:
    """Radius of a vacuum probe's bright disk: √(area above half maximum / π).

    Parameters
    ----------
    probe : (H, W) vacuum pattern, any intensity scale.

    Returns
    -------
    The radius in pixels (0 for an empty image).

    >>> round(disk_radius_px(aperture_disk((64, 64), 0.01, 0.1)), 2)  # a disk of radius 10 pixels
    9.92
    """
    p = np.asarray(probe, dtype=np.float64)
    return float(np.sqrt((p >= 0.5 * p.max()).sum() / np.pi)) if p.max() > 0 else 0.0
