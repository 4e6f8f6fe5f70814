"""Out-of-plane crystal tilt from the excitation of the zero-order disks: a classical estimate and a learned read
(pure: arrays in, numbers out; the learned read's weights are read by :func:`fourdcrystal.model.card.read_tilt_reader`).

**Convention.** The crystal tilt (θx, θy), mrad, is the direction of the crystal's zone axis relative to the
beam: the zone axis points along (tan θx, tan θy, 1), x and y along the pattern's first and second axes (the
axes of ``qx_invA`` and ``qy_invA``). A crystal rotated so that its zone axis leans towards +x reads +θx; a
beam tilted by θ over an untilted crystal reads −θ.

**Physics.** Tilted by θ, a zero-order reflection g has the excitation error

    s_g = θ·g − λ|g|²/2   (Å⁻¹; first order in θ),

so the reflections near the Laue circle |g − θ/λ| = |θ|/λ, on the +θ side of the zero beam, are bright and
their Friedel mates −g, farther from it, dim. In a convergent beam each point q of disk g stands for its own
incident direction, q − g off the mean beam, and so for its own excitation error

    s_g(q) = θ·g + (|g|²/2 − q·g)·λ.

The estimate compares, for each Friedel pair of found disks (g, −g), the measured share of the pair's
brightness in disk g, B = Ī_g / (Ī_g + Ī_−g) (mean over each disk's pixels), with that of a rocking curve
f(s) = 1 / (1 + (s/σ)²) averaged over the same pixels, and takes the θ of least squared misfit (a grid
search, then two finer grids). Friedel's law makes |V_g| = |V_−g|, so the structure factors cancel from B. The
rocking curve is a stand-in for the dynamical one: the fit over-reaches, and ``gain`` (< 1) and σ are chosen
on a validation split (``fourdcrystal tune``). A fit is NaN, and counted, when fewer than ``min_pairs`` pairs
span two directions, or the misfit is least at the edge of the search.

>>> import numpy as np
>>> lam = 0.0251  # Å, 200 kV
>>> g = np.array([[0.3, 0.0], [0.0, 0.3], [0.3, 0.3], [0.3, -0.3]])
>>> theta = np.array([2e-3, -1e-3])
>>> s = np.concatenate([g @ theta - lam * (g * g).sum(1) / 2, -g @ theta - lam * (g * g).sum(1) / 2])
>>> bool(np.all(s[:2] != s[4:6]))  # the pair (g, −g) is excited unequally
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TILT_CONVENTION = ("crystal tilt (θx, θy), mrad: the crystal's zone axis points along (tan θx, tan θy, 1) relative "
                   "to the beam; x, y along the pattern's first and second axes (as qx_invA, qy_invA)")


@dataclass(frozen=True)
class TiltSettings:
    """How the classical tilt is fitted (``fourdcrystal tune`` chooses ``sigma_invA`` and ``gain``)."""

    # defaults: what tune chose for the shipped model on its validation split (a card without tuning gets these)
    sigma_invA: float = 1e-3  # half width of the rocking curve f(s) = 1 / (1 + (s/σ)²), Å⁻¹
    gain: float = 0.87  # the least-squares tilt is multiplied by this (the rocking curve's fit over-reaches)
    floor_mrad: float = 0.89  # added in quadrature to each fit's standard error: the rocking curve's own error
    span_mrad: float = 12.0  # the search covers |θx|, |θy| ≤ this; a best fit on its edge is NaN
    min_pairs: int = 3  # fewer Friedel pairs give NaN
    min_g_disk_radii: float = 2.5  # pairs with |g| under this many disk radii (overlapping the zero disk) are left out
    # the model's q_z tilt's standard error per component where it is combined with the Laue fit on the model's
    # vectors (combine_tilts): the value whose combination measured best on the shipped model's validation
    # split (experiments/tilt_combined, grid 0.5-3 mrad)
    qz_sigma_mrad: float = 1.25

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class TiltFit:
    """One pattern's tilt: (θx, θy) and its standard error (σx, σy), mrad (NaN when the fit failed), pairs used."""

    tilt_mrad: np.ndarray
    sigma_mrad: np.ndarray
    pairs: int
    misfit: float = float("nan")  # mean squared misfit of the pairs' brightness shares at the fit

    @property
    def ok(self) -> bool:
        return bool(np.all(np.isfinite(self.tilt_mrad)))


def crystal_tilt_mrad(tilt_mrad, tilt_mode: str) -> np.ndarray:
    """A simulated specimen's tilt (the shards' ``tilt_mrad`` and ``tilt_mode``) in this module's convention:
    a beam tilted by θ ("beam") is the crystal tilted by −θ; a crystal rotated ("atoms") is +θ.

    >>> crystal_tilt_mrad((2.0, -1.0), "beam").tolist()
    [-2.0, 1.0]
    """
    t = np.asarray(tilt_mrad, float).reshape(2)
    if tilt_mode not in ("beam", "atoms"):
        raise ValueError(f"tilt mode {tilt_mode!r}: expected beam or atoms")
    return -t if tilt_mode == "beam" else t


def qz_tilt(q_invA: np.ndarray, qz_invA: np.ndarray, weights: np.ndarray, span_mrad: float) -> np.ndarray:
    """The crystal tilt (mrad, this module's convention) of one pattern from the q_z of its vectors: minus the
    least-squares θ of q_z = θ·g (:func:`fourdcrystal.lattice.fit_tilt`; q_z follows the beam-tilt convention of
    the simulated labels); NaN where that fails or lies beyond ±``span_mrad`` (the range the Laue fit searches).

    >>> g = np.array([[0.3, 0.0], [0.0, 0.3], [0.3, 0.3]])
    >>> qz_tilt(g, g @ np.array([0.002, -0.001]), np.ones(3), 12.0).round(6).tolist()
    [-2.0, 1.0]
    """
    from ..lattice import fit_tilt

    tilt = -np.asarray(fit_tilt(q_invA, qz_invA, weights), float)
    return np.full(2, np.nan) if np.any(np.abs(tilt) > span_mrad) else tilt


def combine_tilts(tilts: list, sigmas: list) -> tuple[np.ndarray, np.ndarray]:
    """The inverse-variance mean of independent estimates of one pattern's tilt, per component, and its standard
    error: ``tilts`` and ``sigmas`` (each (2,), mrad; an estimate with a NaN or a non-positive σ is left out; none
    left: NaN).

    >>> t, s = combine_tilts([np.array([2.0, 0.0]), np.array([4.0, np.nan])], [np.ones(2), np.ones(2)])
    >>> t.tolist(), s.round(3).tolist()
    ([3.0, 0.0], [0.707, 1.0])
    """
    num, den = np.zeros(2), np.zeros(2)
    for t, sg in zip(tilts, sigmas):
        t, sg = np.asarray(t, float).reshape(2), np.asarray(sg, float).reshape(2)
        ok = np.isfinite(t) & np.isfinite(sg) & (sg > 0)
        num[ok] += t[ok] / sg[ok] ** 2
        den[ok] += 1.0 / sg[ok] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan), np.where(den > 0, 1.0 / np.sqrt(den), np.nan)


def _failed(pairs: int = 0) -> TiltFit:
    return TiltFit(np.full(2, np.nan), np.full(2, np.nan), pairs)


def friedel_pairs(g_invA: np.ndarray, radius_invA: float, min_g_invA: float) -> np.ndarray:
    """(m, 2, 2) Friedel pairs [g, −g] from found vectors (Å⁻¹ from the zero beam): one pair per reflection,
    the measured mate's position where one was found within ``radius_invA`` of −g, else −g itself.

    >>> friedel_pairs(np.array([[0.3, 0.0], [-0.31, 0.0], [0.0, 0.4], [0.01, 0.0]]), 0.05, 0.1).tolist()
    [[[0.3, 0.0], [-0.31, 0.0]], [[0.0, 0.4], [-0.0, -0.4]]]
    """
    g = np.asarray(g_invA, float).reshape(-1, 2)
    g = g[np.all(np.isfinite(g), axis=1) & (np.linalg.norm(g, axis=1) >= min_g_invA)]
    # one representative per reflection, in the half plane x > 0 (or x = 0, y > 0), in the order given
    upper = (g[:, 0] > 1e-12) | ((np.abs(g[:, 0]) <= 1e-12) & (g[:, 1] > 0))
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for v, up in zip(g, upper):
        rep = v if up else -v
        if any(np.linalg.norm(rep - p) < radius_invA for p, _ in pairs):
            continue
        d_plus, d_minus = np.linalg.norm(g - rep, axis=1), np.linalg.norm(g + rep, axis=1)
        pairs.append((g[np.argmin(d_plus)] if d_plus.min() < radius_invA else rep,
                      g[np.argmin(d_minus)] if d_minus.min() < radius_invA else -rep))
    return np.array([[p, m] for p, m in pairs]).reshape(-1, 2, 2)


def _disk_pixels(shape, centre_px, dk, g, radius_invA):
    """Pixels of the disk at g: their q (Å⁻¹ from the zero beam) and flat indices."""
    c = np.asarray(centre_px, float) + g / dk
    r = radius_invA / dk
    lo = np.maximum(np.floor(c - r).astype(int), 0)
    hi = np.minimum(np.ceil(c + r).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None
    ii, jj = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]]
    q = np.stack([(ii - centre_px[0]) * dk[0], (jj - centre_px[1]) * dk[1]], -1).reshape(-1, 2)
    inside = np.sum((q - g) ** 2, axis=1) <= radius_invA ** 2
    if not inside.any():
        return None
    return q[inside], (ii.ravel() * shape[1] + jj.ravel())[inside]


def laue_tilt(pattern: np.ndarray, centre_px, dk_invA, vectors_invA: np.ndarray, energy_eV: float,
              disk_radius_invA: float, settings: TiltSettings = TiltSettings()) -> TiltFit:
    """The crystal tilt of one pattern from the brightness of its Friedel pairs of disks (see the module).

    Parameters
    ----------
    pattern : (H, W) diffraction pattern (counts or intensities; a linear scale).
    centre_px : the zero beam's (i, j) position on ``pattern``, pixels.
    dk_invA : pixel size (k_i, k_j), Å⁻¹ per pixel (or one number).
    vectors_invA : (n, 2) found Bragg vectors from the zero beam, Å⁻¹ (the zero beam itself is ignored).
    energy_eV : beam energy, eV.
    disk_radius_invA : the bright-field disk's radius, Å⁻¹.
    settings : :class:`TiltSettings`.

    Returns
    -------
    :class:`TiltFit`: (θx, θy) in mrad in the module's convention; a standard error per component, the fit's own
    (from the curvature of the misfit and its residuals, scaled by ``gain`` like the tilt) and ``floor_mrad`` added
    in quadrature; the number of pairs used.
    """
    from ..simulation.optics import wavelength_A

    img = np.asarray(pattern, float)
    dk = np.broadcast_to(np.asarray(dk_invA, float), (2,))
    centre = np.asarray(centre_px, float)
    pairs = friedel_pairs(vectors_invA, disk_radius_invA, settings.min_g_disk_radii * disk_radius_invA)
    a, b, disk, bright, kept = [], [], [], [], []
    flat = img.ravel()
    used = 0
    for plus, minus in pairs:
        got = [_disk_pixels(img.shape, centre, dk, g, disk_radius_invA) for g in (plus, minus)]
        if any(x is None for x in got):
            continue
        means = [float(np.mean(flat[idx])) for _, idx in got]
        if not (np.all(np.isfinite(means)) and sum(means) > 0):
            continue
        for side, (g, (q, _)) in enumerate(zip((plus, minus), got)):
            a.append(np.broadcast_to(g, q.shape))
            b.append(g @ g / 2 - q @ g)
            disk.append(np.full(len(q), 2 * used + side))
        bright.append(means[0] / (means[0] + means[1]))
        kept.append(plus)
        used += 1
    if used < settings.min_pairs or np.linalg.matrix_rank(np.array(kept)) < 2:  # the pairs fitted, not all found
        return _failed(used)
    a = np.concatenate(a)
    b = np.concatenate(b) * wavelength_A(energy_eV)
    disk = np.concatenate(disk)
    starts = np.r_[0, np.flatnonzero(np.diff(disk)) + 1]
    counts = np.diff(np.r_[starts, len(disk)])
    measured = np.asarray(bright)

    def shares(theta: np.ndarray) -> np.ndarray:  # (n, 2) tilts in rad -> (n, pairs) modelled brightness shares
        s = theta @ a.T + b
        f = np.add.reduceat(1.0 / (1.0 + (s / settings.sigma_invA) ** 2), starts, axis=1) / counts
        f = f.reshape(len(theta), -1, 2)
        return f[..., 0] / f.sum(-1)

    def misfit(theta: np.ndarray) -> np.ndarray:
        return np.sum((shares(theta) - measured) ** 2, axis=1)

    span = settings.span_mrad * 1e-3
    t = np.linspace(-span, span, 2 * int(math.ceil(settings.span_mrad)) + 1)  # 1 mrad steps or finer
    grid = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    best = grid[np.argmin(misfit(grid))]
    if np.any(np.abs(best) >= span - 1e-12):
        return _failed(used)
    for step in (0.2e-3, 0.04e-3):
        u = np.arange(-5, 6) * step
        grid = best + np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
        best = grid[np.argmin(misfit(grid))]
    # standard error: Gauss-Newton curvature at the optimum, residual variance over (pairs - 2) degrees of freedom
    h = 0.05e-3
    jac = np.stack([(shares((best + e)[None]) - shares((best - e)[None]))[0] / (2 * h)
                    for e in (np.array([h, 0.0]), np.array([0.0, h]))], 1)
    resid = misfit(best[None])[0]
    dof = max(used - 2, 1)
    try:
        cov = np.linalg.inv(jac.T @ jac) * resid / dof
        sigma = np.sqrt(np.clip(np.diag(cov), 0, None)) * 1e3 * abs(settings.gain)
    except np.linalg.LinAlgError:
        sigma = np.full(2, np.nan)
    sigma = np.sqrt(sigma ** 2 + settings.floor_mrad ** 2)
    return TiltFit(best * 1e3 * settings.gain, sigma, used, float(resid / used))


# --- the learned tilt read -------------------------------------------------------------------------------------
# The Laue fit above compares each pair's brightness share with a kinematic rocking curve, which stands in for the
# dynamical one and over-reaches. The learned read keeps its geometry (each pair measures the tilt's projection on
# its ĝ; the pairs together fix θ by least squares) and learns the rest from simulations: a small network maps what
# each pair shows (the share, the pair's brightness against the zero disk, the first moments of the intensity inside
# its two disks and the zero disk along ĝ, each point of a disk standing for its own incident direction) to that
# projection and a weight. Trained by ``scripts/train_tilt_read.py`` on a data set's training split; the shipped
# weights are ``fourdcrystal/data/tilt-read.json``.

PAIR_FEATURES = ("|g| (Å⁻¹)", "Bragg angle λ|g|/2 (mrad)", "convergence semi-angle (mrad)",
                 "log of the pair's mean brightness over the zero disk's", "odd: (I₊ − I₋)/(I₊ + I₋)",
                 "odd: m₊ + m₋, the two disks' first moments along ĝ (disk radii)", "even: m₊ − m₋",
                 "odd: the zero disk's first moment along ĝ (disk radii)",
                 "log of the zero disk's mean brightness over the pattern's within |q| ≤ 1 Å⁻¹", "odd: (I₊ − I₋)/I₀")
# the thickness proxy (feature 8) averages the pattern within this radius: the same on any detector that reaches
# it, where the mean over the whole pattern would change with the detector's field of view
PROXY_RADIUS_INVA = 1.0
ODD_FEATURES = np.array([4, 5, 7, 9])  # the features that change sign when the pair is named (−g, g) instead of (g, −g)


def _disk_values(img: np.ndarray, centre: np.ndarray, dk: np.ndarray, g: np.ndarray, radius_invA: float):
    """(q − g (Å⁻¹), intensity) of the pixels inside the disk at g; None where fewer than 3 lie on the pattern."""
    got = _disk_pixels(img.shape, centre, dk, g, radius_invA)
    if got is None or len(got[1]) < 3:
        return None
    q, idx = got
    return q - g, img.ravel()[idx]


def _moment(disk, unit: np.ndarray, radius_invA: float) -> float:
    dq, v = disk
    total = v.sum()
    return float((v * (dq @ unit)).sum() / (total * radius_invA)) if total > 0 else 0.0


def pair_features(pattern: np.ndarray, centre_px, dk_invA, vectors_invA: np.ndarray, energy_eV: float,
                  semiangle_mrad: float, disk_radius_invA: float,
                  min_g_disk_radii: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """What each Friedel pair of found disks shows about the tilt (:data:`PAIR_FEATURES`), and its direction.

    Parameters as :func:`laue_tilt` (``semiangle_mrad``: the probe's convergence semi-angle). Pairs are those of
    :func:`friedel_pairs` whose two disks lie on the pattern.

    Returns
    -------
    features : (m, 10) one row per pair, columns as :data:`PAIR_FEATURES`.
    units : (m, 2) ĝ of each pair's first reflection (the features' "+" side).

    >>> import numpy as np
    >>> img = np.ones((64, 64)); img[40:46, 29:35] = 3.0          # the disk at +g brighter than at −g
    >>> f, u = pair_features(img, (32, 32), 0.02, np.array([[0.22, 0.0]]), 200e3, 2.0, 0.05)
    >>> u.tolist(), bool(f[0, 4] > 0)
    ([[1.0, 0.0]], True)
    """
    from ..simulation.optics import wavelength_A

    img = np.asarray(pattern, float)
    dk = np.broadcast_to(np.asarray(dk_invA, float), (2,))
    centre = np.asarray(centre_px, float)
    r = float(disk_radius_invA)
    lam = wavelength_A(energy_eV)
    empty = np.zeros((0, len(PAIR_FEATURES))), np.zeros((0, 2))
    zero = _disk_values(img, centre, dk, np.zeros(2), r)
    if zero is None or not zero[1].mean() > 0:
        return empty
    near = _disk_values(img, centre, dk, np.zeros(2), PROXY_RADIUS_INVA)
    i0, mean_near = zero[1].mean(), max(float(near[1].mean()), 1e-30)
    rows, units = [], []
    for plus, minus in friedel_pairs(vectors_invA, r, min_g_disk_radii * r):
        dp, dm = _disk_values(img, centre, dk, plus, r), _disk_values(img, centre, dk, minus, r)
        if dp is None or dm is None:
            continue
        ip, im = dp[1].mean(), dm[1].mean()
        if not ip + im > 0:
            continue
        gn = float(np.hypot(*plus))
        u = plus / gn
        mp, mm = _moment(dp, u, r), _moment(dm, u, r)
        rows.append([gn, lam * gn / 2 * 1e3, semiangle_mrad, np.log((ip + im) / (2 * i0) + 1e-4), (ip - im) / (ip + im),
                     mp + mm, mp - mm, _moment(zero, u, r), np.log(i0 / mean_near), (ip - im) / i0])
        units.append(u)
    if not rows:
        return empty
    return np.array(rows, float), np.array(units, float)


def swap_pairs(features: np.ndarray) -> np.ndarray:
    """The features of the same pairs named the other way round, (−g, g): the odd columns change sign.

    >>> swap_pairs(np.arange(10.0)[None])[0, [3, 4, 5, 7, 9]].tolist()
    [3.0, -4.0, -5.0, -7.0, -9.0]
    """
    out = np.array(features, float, copy=True)
    out[:, ODD_FEATURES] *= -1
    return out


@dataclass(frozen=True)
class TiltReader:
    """The learned tilt read's network (numpy; :meth:`from_dict` of what ``scripts/train_tilt_read.py`` stores,
    :func:`fourdcrystal.model.card.read_tilt_reader` reads the shipped one): pair features → (projection θ·ĝ in
    mrad, weight), odd and even under :func:`swap_pairs` by construction, and the ridge λ and error scale of the
    pattern's least-squares solve (:func:`learned_tilt`)."""

    mean: np.ndarray  # (10,) feature standardisation
    scale: np.ndarray
    layers: tuple  # ((W (n_in, n_out), b (n_out,)), ...): SiLU between layers, 2 outputs
    ridge: float  # added to the normal matrix's diagonal: a pull towards zero tilt where the pairs say little
    projection_mrad: float  # the network's first output times this is the projection, mrad
    sigma_scale: float  # (normal matrix)^-½ times this is a fit's standard error, mrad (68 % coverage, validation)
    min_pairs: int = 2
    source: str = ""

    @classmethod
    def from_dict(cls, d: dict, source: str = "") -> "TiltReader":
        """The reader a ``fourdcrystal.tilt-read/1`` dict describes; ValueError for another schema or other pair
        features than :data:`PAIR_FEATURES`."""
        if d.get("schema") != "fourdcrystal.tilt-read/1" or d.get("features") != list(PAIR_FEATURES):
            raise ValueError(f"{source or 'the dict'}: not a tilt read for these pair features "
                             f"(schema fourdcrystal.tilt-read/1)")
        return cls(np.asarray(d["mean"], float), np.asarray(d["scale"], float),
                   tuple((np.asarray(w, float), np.asarray(b, float)) for w, b in d["layers"]), float(d["ridge"]),
                   float(d["projection_mrad"]), float(d["sigma_scale"]), int(d.get("min_pairs", 2)), source)

    def _net(self, x: np.ndarray) -> np.ndarray:
        h = (x - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = h * np.exp(-np.logaddexp(0.0, -h))  # SiLU, h·sigmoid(h), without overflow
        return h

    def __call__(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(projection θ·ĝ in mrad, weight > 0) of each pair."""
        o1, o2 = self._net(features), self._net(swap_pairs(features))
        p = self.projection_mrad * (o1[:, 0] - o2[:, 0]) / 2
        z = (o1[:, 1] + o2[:, 1]) / 2
        return p, np.logaddexp(0.0, z) + 1e-3  # softplus


def learned_tilt(pattern: np.ndarray, centre_px, dk_invA, vectors_invA: np.ndarray, energy_eV: float,
                 semiangle_mrad: float, disk_radius_invA: float, reader: TiltReader,
                 settings: TiltSettings = TiltSettings()) -> TiltFit:
    """The crystal tilt of one pattern read by the learned tilt read (see above; parameters as :func:`laue_tilt`).

    Each Friedel pair's projection p = θ·ĝ and weight w come from ``reader``; θ solves (Σ w ĝĝᵀ + λI) θ = Σ w p ĝ.
    Its standard error per component is ``reader.sigma_scale`` times the square root of that matrix's inverse
    diagonal. NaN, and counted, with fewer than ``reader.min_pairs`` pairs, pairs along one direction only, or a
    tilt beyond ``settings.span_mrad``.
    """
    f, u = pair_features(pattern, centre_px, dk_invA, vectors_invA, energy_eV, semiangle_mrad, disk_radius_invA,
                         settings.min_g_disk_radii)
    return pairs_tilt(f, u, reader, settings.span_mrad)


def pairs_tilt(features: np.ndarray, units: np.ndarray, reader: TiltReader, span_mrad: float) -> TiltFit:
    """The tilt ``reader`` gives one pattern's pairs (:func:`pair_features`' output), as :func:`learned_tilt`."""
    f, u = np.asarray(features, float), np.asarray(units, float).reshape(-1, 2)
    # pairs within about 11° of one direction (the smaller eigenvalue of the mean ĝĝᵀ under sin²(5.7°)) fix one
    # component only
    if len(f) < reader.min_pairs or np.linalg.eigvalsh(u.T @ u / len(u))[0] < 0.01:
        return _failed(len(f))
    p, w = reader(f)
    inv = np.linalg.inv((u * w[:, None]).T @ u + reader.ridge * np.eye(2))
    tilt = inv @ ((w * p) @ u)
    if np.any(np.abs(tilt) > span_mrad):
        return _failed(len(f))
    return TiltFit(tilt, reader.sigma_scale * np.sqrt(np.diag(inv)), len(f))
