"""Lattice fitting of Bragg vectors: basis finding, indexing, the 2×2 fit, strain and rotation.

Pure numpy: no I/O. Conventions (all stated once here, used by :mod:`fourdcrystal.maps.strain`):

* **Vectors** q = (q_x, q_y) in Å⁻¹ (or detector pixels: strain and rotation are
  dimensionless) from the zero beam, q_x along detector axis 0 and q_y along axis 1.
* **Reciprocal basis** ``G`` is a 2×2 array whose *columns* are g1 and g2; a reflection with
  indices (h, k) lies at q = q0 + h g1 + k g2, q0 the fitted zero-beam offset.
* **Deformation.** A real-space deformation r → F r moves every reciprocal vector by
  g → F⁻ᵀ g. With the reference basis G_ref and a measured basis G, therefore,
  F = G⁻ᵀ G_refᵀ: the real-space deformation of the crystal at that position relative to the
  reference, in the detector frame.
* **Strain and rotation** from the polar decomposition F = V R(θ) (V symmetric, R a rotation):
  θ = atan2(F_yx − F_xy, F_xx + F_yy), counter-clockwise from q_x towards q_y, and the strain
  ε = V − I in the detector frame (ε_xx = V_xx − 1, ε_yy = V_yy − 1, ε_xy = V_xy: tensor
  shear, so the engineering shear is 2 ε_xy). To first order it is the infinitesimal strain
  ½(F + Fᵀ) − I; unlike that, it is exact for a rotated *and* strained crystal: a specimen
  whose atoms move by r → (I + ε) R(θ) r (rotated, then strained along the detector axes,
  as :func:`fourdcrystal.specimens.specimen.build_specimen` does) gives back exactly ε and θ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import FourdError


@dataclass(frozen=True)
class LatticeFit:
    """The fitted lattice of one pattern.

    ``basis`` (2×2, columns g1, g2) and ``origin`` (q0) in the vectors' units; ``indices``
    (n, 2) the (h, k) of each input vector and ``used`` which of them entered the fit;
    ``residual_rms`` the weighted r.m.s. distance of the used vectors from their lattice points.
    """

    basis: np.ndarray
    origin: np.ndarray
    indices: np.ndarray
    used: np.ndarray
    residual_rms: float

    @property
    def n_used(self) -> int:
        return int(self.used.sum())


def _as_basis(g1, g2) -> np.ndarray:
    basis = np.array([np.asarray(g1, float), np.asarray(g2, float)]).T
    if basis.shape != (2, 2) or not np.all(np.isfinite(basis)):
        raise FourdError(f"basis vectors {list(g1)!r}, {list(g2)!r}: expected two finite 2-vectors")
    return basis


def check_basis(basis: np.ndarray, what: str = "g1, g2") -> np.ndarray:
    """A usable basis: finite, both vectors non-zero, and not (nearly) collinear (angle ≥ 10°).

    Parameters
    ----------
    basis : (2, 2) columns g1, g2, Å⁻¹ (or pixels).
    what : how the error message names the basis (an option, a file).

    Returns
    -------
    The basis as float64; a bad one raises :class:`FourdError`.
    """
    basis = np.asarray(basis, float)
    n1, n2 = np.linalg.norm(basis[:, 0]), np.linalg.norm(basis[:, 1])
    if not np.all(np.isfinite(basis)) or n1 == 0 or n2 == 0:
        raise FourdError(f"{what}: expected two non-zero finite vectors")
    sin = abs(float(np.linalg.det(basis))) / (n1 * n2)
    if sin < math.sin(math.radians(10.0)):
        raise FourdError(f"{what} are (nearly) collinear ({math.degrees(math.asin(min(sin, 1.0))):.1f}° apart); "
                         f"expected two independent lattice vectors")
    return basis


def reduce_basis(basis: np.ndarray) -> np.ndarray:
    """Lagrange–Gauss reduction: the shortest basis of the same 2D lattice.

    Parameters
    ----------
    basis : (2, 2) columns g1, g2 of any basis of the lattice.

    Returns
    -------
    (2, 2) columns: g1 the shorter, |g1·g2| ≤ |g1|²/2, and g1 × g2 > 0 (counter-clockwise).

    >>> reduce_basis(np.array([[1.0, 3.0], [0.0, 1.0]]))  # g1 = (1, 0), g2 = (3, 1) → (0, 1)
    array([[1., 0.],
           [0., 1.]])
    """
    a, b = np.asarray(basis, float)[:, 0].copy(), np.asarray(basis, float)[:, 1].copy()
    if a @ a > b @ b:
        a, b = b, a
    for _ in range(100):
        mu = round(float(a @ b) / float(a @ a))
        b = b - mu * a
        if b @ b >= a @ a:
            break
        a, b = b, a
    if a[0] * b[1] - a[1] * b[0] < 0:
        b = -b
    return np.array([a, b]).T


def index_vectors(q: np.ndarray, basis: np.ndarray, origin=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Nearest lattice indices of each vector, and its distance from that lattice point.

    Parameters
    ----------
    q : (n, 2) vectors, Å⁻¹.
    basis : (2, 2) columns g1, g2, same units.
    origin : the lattice point (0, 0), e.g. a fitted zero-beam offset.

    Returns
    -------
    hk : (n, 2) integer indices; resid : (n,) distances |q − origin − h g1 − k g2|, same units.

    >>> index_vectors(np.array([[2.02, 0.97]]), np.eye(2))
    (array([[2, 1]]), array([0.03605551]))
    """
    q = np.asarray(q, float).reshape(-1, 2)
    frac = np.linalg.solve(basis, (q - np.asarray(origin, float)).T).T
    hk = np.rint(frac)
    resid = np.linalg.norm(q - np.asarray(origin) - hk @ basis.T, axis=1)
    return hk.astype(int), resid


def _solve(q: np.ndarray, hk: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Weighted least squares of q = q0 + h g1 + k g2 (each coordinate separately)."""
    design = np.column_stack([np.ones(len(q)), hk.astype(float)])
    if np.linalg.matrix_rank(design) < 3:
        return None
    sw = np.sqrt(w)[:, None]
    coef, *_ = np.linalg.lstsq(design * sw, q * sw, rcond=None)
    return coef[1:].T, coef[0]  # basis (columns g1, g2), origin


def fit_lattice(q: np.ndarray, basis: np.ndarray, weights: np.ndarray | None = None, origin=(0.0, 0.0),
                tolerance: float = 0.25, max_order: int = 2, outlier_sigma: float = 4.0,
                min_vectors: int = 3, weighted_outliers: bool = False) -> LatticeFit | None:
    """Index the vectors of one pattern and fit its lattice (basis and zero-beam offset).

    Parameters
    ----------
    q : (n, 2) vectors, Å⁻¹ (or pixels), from the zero beam.
    basis : 2×2 starting basis (columns g1, g2), same units, e.g. the reference lattice.
    weights : (n,) non-negative weights (e.g. intensities); None: all equal.
    origin : starting zero-beam offset q0.
    tolerance : a vector is indexed when it lies within ``tolerance`` × |shortest g| of a
        lattice point.
    max_order : the first pass uses only reflections with |h|, |k| ≤ this, so a rotated or
        strained pattern is not mis-indexed at high order by the starting basis; later passes
        re-index everything with the fitted basis.
    outlier_sigma : after each pass, indexed vectors farther than this many weighted r.m.s.
        residuals from their lattice point are dropped.
    min_vectors : fewer indexed, non-collinear vectors than this (the fit has 6 unknowns, so
        at least 3 independent reflections) gives None.
    weighted_outliers : measure each vector's residual against its own scatter, taken as ∝ 1/√weight
        (weights that are inverse variances), instead of against the weighted r.m.s. of all: weights spanning
        orders of magnitude would otherwise drop every faint vector as an outlier of the bright ones.

    Returns
    -------
    LatticeFit, or None where the pattern cannot be fitted.
    """
    q = np.asarray(q, float).reshape(-1, 2)
    n = len(q)
    w = np.ones(n) if weights is None else np.clip(np.nan_to_num(np.asarray(weights, float)), 0.0, None)
    if n < min_vectors or not np.any(w > 0):
        return None
    basis = check_basis(basis)
    origin = np.asarray(origin, float)
    tol = tolerance * min(np.linalg.norm(basis, axis=0))
    used = np.zeros(n, bool)
    rms = np.inf
    hk = np.zeros((n, 2), int)
    for it in range(6):
        hk, resid = index_vectors(q, basis, origin)
        keep = (resid <= tol) & (w > 0)
        if it == 0:
            keep &= np.abs(hk).max(axis=1) <= max_order
        elif np.isfinite(rms) and rms > 0:
            if weighted_outliers:  # each vector against its own σ ∝ 1/√w (the weights are inverse variances)
                keep &= resid * np.sqrt(w / np.mean(w[used])) <= max(outlier_sigma * rms, 1e-12 * tol)
            else:
                keep &= resid <= max(outlier_sigma * rms, 1e-12 * tol)
        # one vector per lattice point: the strongest (a duplicate would double-count the point)
        keep &= _first_per_index(hk, w, keep)
        if keep.sum() < min_vectors:
            return None
        solved = _solve(q[keep], hk[keep], w[keep])
        if solved is None:
            return None
        new_basis, new_origin = solved
        if abs(np.linalg.det(new_basis)) < 1e-12 * np.prod(np.linalg.norm(basis, axis=0)):
            return None
        r = np.linalg.norm(q[keep] - new_origin - hk[keep] @ new_basis.T, axis=1)
        rms = float(np.sqrt(np.sum(w[keep] * r**2) / np.sum(w[keep])))
        converged = np.array_equal(keep, used) and it > 0
        basis, origin, used = new_basis, new_origin, keep
        if converged:
            break
    return LatticeFit(basis, origin, hk, used, rms)


def _first_per_index(hk: np.ndarray, w: np.ndarray, keep: np.ndarray) -> np.ndarray:
    out = np.zeros(len(hk), bool)
    best: dict[tuple[int, int], int] = {}
    for i in np.nonzero(keep)[0]:
        key = (int(hk[i, 0]), int(hk[i, 1]))
        if key not in best or w[i] > w[best[key]]:
            best[key] = i
    out[list(best.values())] = True
    return out


def reflection_offsets(fits: list[tuple[np.ndarray, LatticeFit]], min_fraction: float = 0.5) -> dict:
    """Each reflection's systematic displacement from its lattice point, in lattice coordinates.

    Dynamical scattering shifts the apparent centre of a disk away from its lattice point: the intensity
    inside a disk is not flat, and the shift differs from one reflection family to the next (tenths of a
    pixel on thick crystals). A fit whose set of found reflections changes from one position to the next
    then changes its scale with the set, not with the strain. Measured where the crystal is the reference,
    these offsets can be taken off the same reflections everywhere (:func:`corrected_fit`).

    Parameters
    ----------
    fits : (q, fit) of the reference positions: each position's vectors and :func:`fit_lattice` result
        (None entries allowed).
    min_fraction : keep a reflection found at at least this fraction of the fitted positions.

    Returns
    -------
    {(h, k): (2,) median offset (Δh, Δk), fractions of g1 and g2}; the zero beam is (0, 0) by definition.

    >>> b = np.diag([0.1, 0.1]); q = np.array([[0, 0], [0.101, 0], [0, 0.1], [0.1, 0.1]], float)
    >>> offs = reflection_offsets([(q, fit_lattice(q, b, min_vectors=3))])
    >>> sorted(offs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    True
    """
    per: dict[tuple[int, int], list[np.ndarray]] = {}
    fitted = 0
    for q, fit in fits:
        if fit is None:
            continue
        fitted += 1
        q = np.asarray(q, float).reshape(-1, 2)
        r = q[fit.used] - fit.origin - fit.indices[fit.used] @ fit.basis.T
        frac = np.linalg.solve(fit.basis, r.T).T
        for hk, d in zip(map(tuple, fit.indices[fit.used].tolist()), frac):
            per.setdefault(hk, []).append(d)
    out = {hk: np.median(np.array(d), axis=0) for hk, d in per.items() if len(d) >= min_fraction * fitted}
    if (0, 0) in out:
        out[(0, 0)] = np.zeros(2)  # the zero beam defines the origin
    return out


def reflection_variances(fits: list[tuple[np.ndarray, LatticeFit]], offsets: dict | None = None,
                         min_positions: int = 2, weights: list | None = None) -> dict:
    """Each reflection's mean squared distance from its lattice point over many positions' fits.

    Over a scan the same reflection is found again and again; how far it scatters about its fitted lattice point
    (shot noise on a faint disk, a neighbour's tail, dynamical changes from one position to the next) measures
    how much its position can be trusted, whatever the detector's own score says. ``1 / variance`` is then its
    least-squares weight (iteratively reweighted least squares with one weight per reflection).

    Parameters
    ----------
    fits : (q, fit) per position: its vectors and :func:`fit_lattice` or :func:`corrected_fit` result (None
        entries skipped).
    offsets : {(h, k): (Δh, Δk)} taken off each reflection before its residual is measured
        (:func:`reflection_offsets`), as :func:`corrected_fit` fitted them; None: no offsets.
    min_positions : keep a reflection found at this many positions or more.
    weights : per position, (n,) the weights the vectors were fitted with, or None. Given, each squared
        residual is multiplied by its vector's weight: the variance returned is then the scale of a reflection's
        variance where a vector's own variance is taken to go as 1 / its weight (a faint vector of a reflection
        scatters more than a bright one of the same reflection).

    Returns
    -------
    {(h, k): mean (weighted) squared residual}, in the vectors' units squared.

    A 5 × 5 lattice whose reflections jitter by 0.0002 rms from one position to the next, the (1, 1) reflection
    by 0.001:

    >>> rng = np.random.default_rng(0)
    >>> b = np.diag([0.1, 0.1]); hk = np.array([(h, k) for h in range(-2, 3) for k in range(-2, 3)], float)
    >>> sigma = np.where((hk == (1, 1)).all(1), 0.001, 0.0002)[:, None]
    >>> fits = []
    >>> for _ in range(20):
    ...     q = hk @ b.T + sigma * rng.normal(size=hk.shape)
    ...     fits.append((q, fit_lattice(q, b, min_vectors=3)))
    >>> v = reflection_variances(fits)
    >>> bool(v[(1, 1)] > 10 * v[(1, 0)])
    True
    """
    per: dict[tuple[int, int], list[float]] = {}
    for n, (q, fit) in enumerate(fits):
        if fit is None:
            continue
        q = np.asarray(q, float).reshape(-1, 2)
        hk = fit.indices[fit.used]
        shift = np.zeros((len(hk), 2)) if offsets is None else np.array(
            [offsets.get(tuple(h), (0.0, 0.0)) for h in hk.tolist()], float).reshape(-1, 2)
        r = q[fit.used] - (shift + hk) @ fit.basis.T - fit.origin
        w = np.ones(len(hk)) if weights is None or weights[n] is None else np.asarray(weights[n], float)[fit.used]
        for h, d, wi in zip(map(tuple, hk.tolist()), r, w):
            per.setdefault(h, []).append(float(wi * (d @ d)))
    return {h: float(np.mean(v)) for h, v in per.items() if len(v) >= min_positions}


def corrected_fit(q: np.ndarray, weights: np.ndarray | None, fit: LatticeFit, offsets: dict,
                  tolerance: float = 0.25, min_vectors: int = 3, weighted_outliers: bool = False) -> LatticeFit | None:
    """Refit one position with the reference's reflection offsets taken off (:func:`reflection_offsets`).

    Only the vectors the first fit used and whose reflection has an offset enter: each moves by
    −(Δh g1 + Δk g2) of the refitted basis (so the offset strains and rotates with the lattice).

    Parameters
    ----------
    q : (n, 2) the position's vectors, as given to :func:`fit_lattice`.
    weights : (n,) their fit weights, or None (equal).
    fit : the position's uncorrected :func:`fit_lattice` result (its indices and start).
    offsets : {(h, k): (Δh, Δk)} from :func:`reflection_offsets`.
    tolerance, min_vectors, weighted_outliers : as for :func:`fit_lattice`.

    Returns
    -------
    LatticeFit over all the input vectors (``used`` marks the corrected ones that entered), or None.
    """
    q = np.asarray(q, float).reshape(-1, 2)
    w = np.ones(len(q)) if weights is None else np.asarray(weights, float)
    keep = fit.used & np.array([tuple(h) in offsets for h in fit.indices.tolist()], bool)
    if keep.sum() < min_vectors:
        return None
    delta = np.array([offsets[tuple(h)] for h in fit.indices[keep].tolist()])
    refit = fit
    # the offsets move with the lattice, whose basis the corrected fit itself changes: a few fixed-point
    # passes (each shrinks the error by about the offsets' size, a few % of a lattice spacing)
    for _ in range(3):
        refit = fit_lattice(q[keep] - delta @ refit.basis.T, refit.basis, w[keep], refit.origin,
                            tolerance=tolerance, max_order=1 << 20, min_vectors=min_vectors,
                            weighted_outliers=weighted_outliers)
        if refit is None:
            return None
    used = np.zeros(len(q), bool)
    used[np.nonzero(keep)[0][refit.used]] = True
    indices = fit.indices.copy()
    indices[keep] = refit.indices
    return LatticeFit(refit.basis, refit.origin, indices, used, refit.residual_rms)


def deformation(basis: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Real-space deformation gradient of a measured reciprocal basis relative to a reference.

    Reciprocal vectors transform as g → F⁻ᵀ g when the crystal deforms by r → F r, so
    F = G⁻ᵀ G_refᵀ with G the 2×2 matrix of columns g1, g2.

    Parameters
    ----------
    basis : (2, 2) measured columns g1, g2, Å⁻¹.
    reference : (2, 2) reference columns, same units and order.

    Returns
    -------
    (2, 2) F, dimensionless; the identity when the two agree.

    >>> deformation(np.eye(2) / 1.01, np.eye(2))  # reflections 1 % closer: lattice 1 % larger
    array([[1.01, 0.  ],
           [0.  , 1.01]])
    """
    return np.linalg.inv(np.asarray(basis, float)).T @ np.asarray(reference, float).T


def strain_rotation(f: np.ndarray) -> tuple[float, float, float, float]:
    """Strain and rotation of a 2×2 deformation gradient by its polar decomposition F = V R(θ).

    Parameters
    ----------
    f : (2, 2) deformation gradient (:func:`deformation`).

    Returns
    -------
    (ε_xx, ε_yy, ε_xy, θ): ε = V − I as fractions in the detector frame (ε_xy the tensor shear),
    θ in degrees, counter-clockwise from axis 0 towards axis 1. A reflection (det F ≤ 0) gives NaNs.

    >>> c, s = np.cos(np.radians(2.0)), np.sin(np.radians(2.0))
    >>> [round(float(x), 6) for x in strain_rotation(np.diag([1.01, 0.99]) @ np.array([[c, -s], [s, c]]))]
    [0.01, -0.01, 0.0, 2.0]
    """
    f = np.asarray(f, float)
    if not np.all(np.isfinite(f)) or np.linalg.det(f) <= 0:
        return (math.nan,) * 4  # type: ignore[return-value]
    theta = math.atan2(f[1, 0] - f[0, 1], f[0, 0] + f[1, 1])
    c, s = math.cos(theta), math.sin(theta)
    u = f @ np.array([[c, s], [-s, c]])  # V = F Rᵀ
    return float(u[0, 0] - 1.0), float(u[1, 1] - 1.0), float(0.5 * (u[0, 1] + u[1, 0])), math.degrees(theta)


def lattice_points(basis: np.ndarray, max_q: float, origin=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """All lattice points within a radius.

    Parameters
    ----------
    basis : (2, 2) columns g1, g2, Å⁻¹.
    max_q : radius, same units.
    origin : the lattice point (0, 0).

    Returns
    -------
    hk : (m, 2) indices; q : (m, 2) positions, with |q − origin| ≤ max_q.

    >>> len(lattice_points(np.eye(2), 1.0)[0])  # (0, 0) and its four neighbours
    5
    """
    basis = np.asarray(basis, float)
    nmax = int(math.ceil(max_q / (abs(np.linalg.det(basis)) / max(np.linalg.norm(basis, axis=0))))) + 1
    h, k = np.meshgrid(np.arange(-nmax, nmax + 1), np.arange(-nmax, nmax + 1), indexing="ij")
    hk = np.column_stack([h.ravel(), k.ravel()])
    q = hk @ basis.T
    keep = np.linalg.norm(q, axis=1) <= max_q
    return hk[keep], q[keep] + np.asarray(origin)


# --- the basis from a Bragg vector map --------------------------------------------------------


def spots(q: np.ndarray, weights: np.ndarray, bin_width: float, min_relative: float = 0.02,
          max_spots: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Spots of the Bragg vector map: (m, 2) weighted centroids and (m,) summed weights, strongest first.

    The vectors of many positions are histogrammed at ``bin_width`` (the units of q), smoothed by
    one bin, and each local maximum ≥ ``min_relative`` × the strongest becomes a spot at the
    weighted mean of the vectors within 2 bins.

    Parameters
    ----------
    q : (n, 2) vectors of many scan positions, Å⁻¹ (or pixels).
    weights : (n,) their intensities (negative ones count as 0).
    bin_width : histogram bin, units of q.
    min_relative : weakest spot kept, fraction of the strongest.
    max_spots : at most this many spots.

    Returns
    -------
    (m, 2) spot positions and (m,) summed weights, strongest first.
    """
    q = np.asarray(q, float).reshape(-1, 2)
    w = np.clip(np.asarray(weights, float), 0.0, None)
    ok = np.all(np.isfinite(q), axis=1) & np.isfinite(w) & (w > 0)
    q, w = q[ok], w[ok]
    if len(q) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    extent = float(np.abs(q).max()) + 3 * bin_width
    n = int(math.ceil(2 * extent / bin_width)) + 1
    if n > 4096:
        raise FourdError(f"bin width {bin_width:g} is too fine for vectors reaching {extent:g}")
    idx = np.clip(np.floor((q + extent) / bin_width).astype(int), 0, n - 1)
    bvm = np.zeros((n, n))
    np.add.at(bvm, (idx[:, 0], idx[:, 1]), w)
    smooth = ndimage.gaussian_filter(bvm, 1.0)
    is_max = (smooth == ndimage.maximum_filter(smooth, size=3)) & (smooth >= min_relative * smooth.max())
    centres = (np.argwhere(is_max) + 0.5) * bin_width - extent
    order = np.argsort(-smooth[is_max])[:max_spots]
    centres = centres[order]
    out, total = [], []
    for c in centres:
        near = np.linalg.norm(q - c, axis=1) <= 2 * bin_width
        if near.any():
            out.append(np.average(q[near], axis=0, weights=w[near]))
            total.append(w[near].sum())
    return np.array(out).reshape(-1, 2), np.array(total)


# what an empty lattice point near the zero beam costs a candidate basis, as a share of the spots' weight: enough
# that a lattice three times finer than the crystal's (two thirds of its points empty) loses to it even where it
# also indexes a stray spot of 4 % of the weight; small beside what a sublattice loses by the rows it skips
EMPTY_POINT_COST = 0.1


def find_basis(spot_q: np.ndarray, spot_w: np.ndarray, tolerance: float = 0.12, candidates: int = 16) -> np.ndarray:
    """The reduced reciprocal basis that indexes the most spot weight, from the spots themselves.

    Candidate vectors are the spots (from the zero beam, the strongest spot near the middle)
    and the differences between the strongest spots (so a lattice is found even where its
    shortest reflections are weak or absent); the ``candidates`` shortest of them, no shorter
    than half the shortest spot, are paired as (g1, g2). A basis scores the weight of spots
    within ``tolerance`` × |shortest g| of its lattice points; the best score wins, ties going
    to the smaller cell (two spots that skip a row of reflections span a sublattice, which
    indexes fewer spots); a pair whose lattice has a vector shorter than half the shortest spot (two
    nearly parallel candidates) is not one. The share of the lattice's own points out to 2.5 × the
    shortest spot that hold no spot costs it :data:`EMPTY_POINT_COST` of the weight, so a lattice
    finer than the crystal's, which indexes a stray spot too, does not win by it. The winner is
    refined by a least-squares fit over the spots and Gauss-reduced.

    Parameters
    ----------
    spot_q : (m, 2) spot positions from :func:`spots`, Å⁻¹, zero beam included.
    spot_w : (m,) their weights.
    tolerance : indexing tolerance, fraction of |shortest g|.
    candidates : how many of the shortest candidate vectors are paired.

    Returns
    -------
    (2, 2) reduced basis, columns g1, g2, units of ``spot_q``; :class:`FourdError` where no lattice is found.
    """
    spot_q = np.asarray(spot_q, float).reshape(-1, 2)
    spot_w = np.asarray(spot_w, float)
    if len(spot_q) < 3:
        raise FourdError(f"only {len(spot_q)} Bragg spots found; a lattice needs the zero beam and two "
                         f"independent reflections (give `g1` and `g2`)")
    length0 = np.linalg.norm(spot_q, axis=1)
    strongest = int(np.argmax(spot_w))
    centre = spot_q[strongest] if length0[strongest] < 0.5 * np.median(length0) else np.zeros(2)
    rel = spot_q - centre
    length = np.linalg.norm(rel, axis=1)
    scale = float(np.median(length[length > 0])) if np.any(length > 0) else 1.0
    spot_vectors = rel[length > 0.05 * scale]
    if len(spot_vectors) < 2:
        raise FourdError("fewer than two Bragg spots besides the zero beam; no 2D lattice (give `g1` and `g2`)")
    shortest = float(np.linalg.norm(spot_vectors, axis=1).min())
    top = rel[np.argsort(-spot_w)[:16]]
    diffs = (top[:, None, :] - top[None, :, :]).reshape(-1, 2)
    pool = np.concatenate([spot_vectors, diffs])
    pool_len = np.linalg.norm(pool, axis=1)
    pool = pool[pool_len >= 0.5 * shortest]
    pool = pool[np.argsort(np.linalg.norm(pool, axis=1), kind="stable")]
    cand: list[np.ndarray] = []
    for v in pool:  # distinct up to sign
        if all(min(np.linalg.norm(v - c), np.linalg.norm(v + c)) > 0.05 * shortest for c in cand):
            cand.append(v)
        if len(cand) == candidates:
            break
    best = None
    total = float(spot_w.sum())
    reach = 2.5 * shortest
    for a in range(len(cand)):
        for b in range(a + 1, len(cand)):
            basis = np.array([cand[a], cand[b]]).T
            n1, n2 = np.linalg.norm(basis, axis=0)
            if abs(np.linalg.det(basis)) < math.sin(math.radians(10.0)) * n1 * n2:
                continue
            # two nearly parallel candidates span a lattice with a vector far shorter than either, fine
            # enough to index every spot within a tolerance taken from their lengths: no lattice vector
            # may be shorter than the candidates may be
            reduced = reduce_basis(basis)
            if np.linalg.norm(reduced, axis=0).min() < 0.5 * shortest:
                continue
            tol = tolerance * min(n1, n2)
            _, resid = index_vectors(rel, basis)
            score = float(spot_w[resid <= tol].sum())
            # the share of the lattice's points near the zero beam (out to 2.5 × the shortest spot, where a
            # crystal's reflections are strong enough to be found) that hold a spot: a lattice finer than the
            # crystal's indexes one stray spot more, but leaves most of its own points empty
            _, points = lattice_points(reduced, reach)
            near = np.linalg.norm(points[:, None, :] - rel[None, :, :], axis=2).min(axis=1) <= tol
            key = (round(score / total - EMPTY_POINT_COST * (1.0 - float(near.mean())), 6),
                   -abs(float(np.linalg.det(basis))))
            if best is None or key > best[0]:
                best = (key, basis)
    if best is None:
        raise FourdError("the Bragg spots are all on one line; no 2D lattice (give `g1` and `g2`)")
    basis = reduce_basis(best[1])
    fit = fit_lattice(spot_q, basis, spot_w, origin=centre, tolerance=tolerance * 2, max_order=3)
    return reduce_basis(fit.basis) if fit is not None else basis


# --- the crystal's own lattice as the reference ----------------------------------------------------


def zolz_frame(lattice_A: np.ndarray, beam: np.ndarray, max_index: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Reduced 2D basis of a crystal's zero-order Laue zone seen along ``beam``, and the frame it is written in.

    Parameters
    ----------
    lattice_A : (3, 3) rows a1, a2, a3 of the (primitive) lattice, Å. A primitive cell gives the
        Bravais lattice's reflections; a centred conventional cell would add extinct ones.
    beam : Cartesian beam direction (e.g. u a1' + v a2' + w a3' of the conventional cell).

    Returns
    -------
    basis : (2, 2) columns g1, g2 in Å⁻¹, coordinates along the frame's x̂ and ŷ.
    frame : (3, 3) rows x̂, ŷ, ẑ in the lattice's Cartesian frame: ẑ along ``beam``, x̂ along the
        shortest zero-order reflection, ŷ = ẑ × x̂ (right-handed).

    Examples
    --------
    A cubic P lattice along [001]: the basis is (100), (010) and the frame the Cartesian axes.

    >>> basis, frame = zolz_frame(np.eye(3) * 4.0, np.array([0.0, 0.0, 1.0]))
    >>> np.abs(basis).round(3).tolist(), np.abs(frame).round(3).tolist()
    ([[0.25, 0.0], [0.0, 0.25]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    """
    recip = np.linalg.inv(np.asarray(lattice_A, float)).T  # rows b_i, a_i · b_j = δ_ij (no 2π)
    z = np.asarray(beam, float) / np.linalg.norm(beam)
    r = np.arange(-max_index, max_index + 1)
    hkl = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    g = hkl @ recip
    length = np.linalg.norm(g, axis=1)
    inplane = (length > 0) & (np.abs(g @ z) <= 1e-8 * np.maximum(length, 1e-12))
    g, length = g[inplane], length[inplane]
    if len(g) < 2:
        raise FourdError("no zero-order Laue zone reflections along this zone axis within the index range")
    order = np.argsort(length, kind="stable")
    x = g[order[0]] / length[order[0]]
    y = np.cross(z, x)
    g2d = np.stack([g @ x, g @ y], axis=1)[order]
    first = g2d[0]
    second = next((v for v in g2d[1:] if abs(first[0] * v[1] - first[1] * v[0]) > 1e-9 * (first @ first)), None)
    if second is None:
        raise FourdError("the zero-order Laue zone reflections are collinear")
    return reduce_basis(np.array([first, second]).T), np.array([x, y, z])


def zolz_basis(lattice_A: np.ndarray, beam: np.ndarray, max_index: int = 6) -> np.ndarray:
    """Reduced 2D basis (columns, Å⁻¹) of a crystal's zero-order Laue zone seen along ``beam``.

    Parameters
    ----------
    lattice_A, beam, max_index : as :func:`zolz_frame`.

    Returns
    -------
    (2, 2) :func:`zolz_frame`'s basis (its orientation is arbitrary: see :func:`align_basis`).
    """
    return zolz_frame(lattice_A, beam, max_index)[0]


def align_rotation(crystal: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The in-plane rotation R and change of basis M that best map the crystal's basis onto ``measured``.

    Every change of basis M with entries in {−1, 0, 1} and det M = ±1 is tried; for each the
    rotation R minimising |R C M − G| (Kabsch, proper rotations only) is found. M only re-chooses
    which of the crystal's reflections are g1 and g2; R is how the crystal's zone is turned on the detector.

    Parameters
    ----------
    crystal : (2, 2) the crystal's zero-order Laue zone basis C (columns, Å⁻¹, any in-plane orientation).
    measured : (2, 2) the measured basis G (columns, Å⁻¹).

    Returns
    -------
    R (2, 2), M (2, 2) and the relative mismatch |R C M − G| / |G|.
    """
    crystal, measured = np.asarray(crystal, float), np.asarray(measured, float)
    best = None
    for entries in np.ndindex(3, 3, 3, 3):
        m = np.array(entries, float).reshape(2, 2) - 1
        if abs(abs(np.linalg.det(m)) - 1) > 1e-9:
            continue
        c = crystal @ m
        u, _, vt = np.linalg.svd(measured @ c.T)
        if np.linalg.det(u @ vt) < 0:
            continue  # would need a mirror: a different handedness, not this choice of basis
        err = float(np.linalg.norm(u @ vt @ c - measured) / np.linalg.norm(measured))
        if best is None or err < best[2]:
            best = (u @ vt, m, err)
    if best is None:
        raise FourdError("the crystal's lattice cannot be aligned with the measured one")
    return best


def align_basis(crystal: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, float]:
    """The crystal's basis, rotated (and re-chosen among equivalent bases) to best match ``measured``:
    R C M of :func:`align_rotation`, and the relative mismatch |R C M − G| / |G|. Strain measured
    against it is absolute, as good as the detector's pixel-size calibration.

    Parameters
    ----------
    crystal, measured : as :func:`align_rotation`.

    Returns
    -------
    The aligned crystal basis R C M (2, 2) and the relative mismatch |R C M − G| / |G|.
    """
    rot, m, err = align_rotation(crystal, measured)
    return rot @ np.asarray(crystal, float) @ m, err


# --- the 3D orientation per position ------------------------------------------------------------------


def rotation_z(phi_deg: float) -> np.ndarray:
    """Rotation about +z by φ, counter-clockwise seen from +z.

    Parameters
    ----------
    phi_deg : φ, degrees.

    Returns
    -------
    (3, 3) rotation matrix acting on column vectors.

    >>> rotation_z(90.0).round(12) @ [1.0, 0.0, 0.0]
    array([0., 1., 0.])
    """
    c, s = math.cos(math.radians(phi_deg)), math.sin(math.radians(phi_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def tilt_rotation(tilt_mrad) -> np.ndarray:
    """Rigid rotation taking +z to (tan θx, tan θy, 1)/norm about the axis ẑ × n (the shortest such rotation).

    Parameters
    ----------
    tilt_mrad : (θx, θy), mrad.

    Returns
    -------
    (3, 3) rotation matrix acting on column vectors.

    >>> (tilt_rotation((10.0, 0.0)) @ [0.0, 0.0, 1.0]).round(6).tolist()
    [0.01, 0.0, 0.99995]
    """
    tx, ty = (math.tan(float(x) * 1e-3) for x in tilt_mrad)
    n = np.array([tx, ty, 1.0]) / math.sqrt(1 + tx * tx + ty * ty)
    axis = np.cross([0.0, 0.0, 1.0], n)
    s = np.linalg.norm(axis)
    if s < 1e-15:
        return np.eye(3)
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - n[2]) * kx @ kx


def orientations(frame: np.ndarray, rotation: np.ndarray, theta_deg: np.ndarray, tilt_mrad: np.ndarray) -> np.ndarray:
    """The crystal's 3D orientation at each position: U = T(θx, θy) · Rz(θ) R · frame.

    U maps a vector in the crystal's Cartesian frame to the detector frame (x = q_x, y = q_y, z the beam's
    direction, right-handed): the crystal's zone axis lands on (tan θx, tan θy, 1) (the crystal tilt of
    :data:`fourdcrystal.detection.tilt.TILT_CONVENTION`), its zero-order reflections on the measured lattice.

    Parameters
    ----------
    frame : (3, 3) rows x̂, ŷ, ẑ of :func:`zolz_frame` (ẑ the zone axis), in the crystal's Cartesian frame.
    rotation : (2, 2) the in-plane rotation R that lays the crystal's basis on the reference lattice
        (:func:`align_rotation`).
    theta_deg : (n,) each position's in-plane rotation relative to that reference (``strain``'s θ map), degrees.
    tilt_mrad : (n, 2) each position's crystal tilt (θx, θy), mrad.

    Returns
    -------
    (n, 3, 3) rotation matrices; NaN where θ or the tilt is NaN.
    """
    theta = np.asarray(theta_deg, float).ravel()
    tilt = np.asarray(tilt_mrad, float).reshape(-1, 2)
    out = np.full((len(theta), 3, 3), np.nan)
    laid = np.eye(3)
    laid[:2, :2] = rotation
    laid = laid @ frame  # the crystal on the reference lattice, its zone axis along z
    for p in np.nonzero(np.isfinite(theta) & np.isfinite(tilt).all(axis=1))[0]:
        out[p] = tilt_rotation(tilt[p]) @ rotation_z(theta[p]) @ laid
    return out


def beam_direction_uvw(orientation: np.ndarray, lattice_A: np.ndarray, zone_axis) -> np.ndarray:
    """The beam's direction in the crystal, as direction indices [u v w] of ``lattice_A``'s cell, scaled so that
    its projection on the nominal ``zone_axis`` is that zone axis (on the axis: exactly [u v w]).

    Parameters
    ----------
    orientation : (n, 3, 3) crystal Cartesian → detector frame (:func:`orientations`).
    lattice_A : (3, 3) rows a1, a2, a3 of the cell the indices refer to (Å, the orientation's crystal frame).
    zone_axis : [u v w] the nominal zone axis.

    Returns
    -------
    (n, 3) direction indices (NaN where the orientation is).

    >>> beam_direction_uvw(np.eye(3)[None], np.eye(3) * 5.431, (0, 0, 1)).round(12).tolist()
    [[0.0, 0.0, 1.0]]
    """
    lat = np.asarray(lattice_A, float)
    beam = np.asarray(orientation, float)[:, 2, :]  # Uᵀ ẑ: the beam's direction in crystal Cartesian coordinates
    uvw = beam @ np.linalg.inv(lat)  # d = u a1 + v a2 + w a3
    nominal = np.asarray(zone_axis, float)
    metric = lat @ lat.T  # the projection on the nominal axis in real space, not in index space
    scale = (nominal @ metric @ nominal) / (uvw @ metric @ nominal)
    return uvw * scale[:, None]


def off_axis_mrad(orientation: np.ndarray, lattice_A: np.ndarray, zone_axis) -> np.ndarray:
    """The angle between the beam and the crystal's nominal zone axis.

    Parameters
    ----------
    orientation : (n, 3, 3) crystal Cartesian → detector frame (:func:`orientations`).
    lattice_A : (3, 3) rows a1, a2, a3 of the cell ``zone_axis`` refers to, Å.
    zone_axis : [u v w].

    Returns
    -------
    (n,) angles in mrad (NaN where the orientation is NaN).
    """
    axis = np.asarray(zone_axis, float) @ np.asarray(lattice_A, float)
    cos = np.asarray(orientation, float)[:, 2, :] @ (axis / np.linalg.norm(axis))
    return 1e3 * np.arccos(np.clip(np.abs(cos), -1.0, 1.0))


def bunge_euler_deg(orientation: np.ndarray) -> np.ndarray:
    """Bunge Euler angles (φ1, Φ, φ2) in degrees of g = Uᵀ, the matrix taking detector-frame (sample)
    coordinates to crystal coordinates: g = Rz(φ2)ᵀ Rx(Φ)ᵀ Rz(φ1)ᵀ (texture analysis' convention; MTEX and
    EBSD software use it).

    Parameters
    ----------
    orientation : (n, 3, 3) U, crystal Cartesian → detector frame (:func:`orientations`).

    Returns
    -------
    (n, 3) φ1, Φ, φ2 in degrees: φ1, φ2 in [0, 360), Φ in [0, 180]; NaN where the orientation is NaN.

    >>> bunge_euler_deg(np.eye(3)[None]).tolist()
    [[0.0, 0.0, 0.0]]
    """
    g = np.swapaxes(np.asarray(orientation, float), -1, -2)
    big_phi = np.arccos(np.clip(g[:, 2, 2], -1.0, 1.0))
    # g₃₁ = sin φ1 sin Φ, g₃₂ = −cos φ1 sin Φ, g₁₃ = sin φ2 sin Φ, g₂₃ = cos φ2 sin Φ
    phi1 = np.arctan2(g[:, 2, 0], -g[:, 2, 1])
    phi2 = np.arctan2(g[:, 0, 2], g[:, 1, 2])
    flat = np.abs(np.sin(big_phi)) < 1e-9  # Φ = 0 or 180°: only φ1 ± φ2 is defined; φ2 = 0 by convention
    phi1 = np.where(flat, np.arctan2(g[:, 0, 1], g[:, 0, 0]), phi1)
    phi2 = np.where(flat, 0.0, phi2)
    out = np.degrees(np.stack([phi1, big_phi, phi2], axis=1))
    out[:, [0, 2]] %= 360.0
    return out


def fit_tilt(q: np.ndarray, qz: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """The crystal tilt that best explains the out-of-plane components of the Bragg vectors of one pattern.

    A crystal tilted by (θx, θy) out of the zone axis moves a reflection at lateral g to
    q_z = θx·g_x + θy·g_y (first order, beam frame; the convention of the simulated labels), so θ is
    the weighted least-squares solution of q_z = θ·g over the reflections.

    Parameters
    ----------
    q : (n, 2) lateral vectors g, Å⁻¹, from the zero beam (the zero beam itself carries no tilt; pass it or not).
    qz : (n,) their q_z, Å⁻¹.
    weights : (n,) non-negative weights (e.g. V_g); None: all equal.

    Returns
    -------
    (θx, θy) in mrad; NaN when fewer than two non-collinear reflections away from the zero beam.

    >>> g = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    >>> [round(t, 6) for t in fit_tilt(g, g @ np.array([0.002, -0.001]))]
    [2.0, -1.0]
    """
    q = np.asarray(q, float).reshape(-1, 2)
    qz = np.asarray(qz, float).reshape(-1)
    w = np.ones(len(q)) if weights is None else np.clip(np.asarray(weights, float).reshape(-1), 0.0, None)
    ok = np.isfinite(qz) & np.all(np.isfinite(q), axis=1) & (np.linalg.norm(q, axis=1) > 0) & (w > 0)
    if ok.sum() < 2 or np.linalg.matrix_rank(q[ok]) < 2:
        return math.nan, math.nan
    sw = np.sqrt(w[ok])[:, None]
    theta, *_ = np.linalg.lstsq(q[ok] * sw, qz[ok] * sw[:, 0], rcond=None)
    return float(theta[0] * 1e3), float(theta[1] * 1e3)
