"""The physical truth of a simulated pattern: every reflection's exact position, from the specimen's lattice.

Pure arrays, no I/O. The reflections of a pattern follow from the lattice its atoms realise
(:attr:`fourdcrystal.specimens.specimen.Specimen.lattice_A`: orientation, in-plane rotation, atoms-mode tilt
and strain already in it), the beam (energy, convergence semi-angle, beam tilt) and the detector
grid. Nothing here is snapped to pixels: positions are in Å⁻¹.

Conventions (those of the shards): q_x is detector axis 1 (the specimen's x), q_y axis 2, q = 0 at
pixel (H//2, W//2); lengths Å, reciprocal lengths Å⁻¹ without 2π, angles mrad, potentials V.

For each reflection g = h b1 + k b2 + l b3 (b_i the reciprocal rows of the realised lattice):

* ``laue_zone`` n = h u + k v + l w for the zone axis [uvw] (0: zero-order Laue zone, ZOLZ);
* ``q_invA`` its lateral components (g_x, g_y), where its disk's centre lands relative to the zero
  beam's (the multislice frame moves with the incident beam, so a beam tilt moves no disk);
* ``vg_V`` the kinematic |V_g| = (h²/2πm₀e) / Ω · |Σ_j f_j(|g|) exp(2πi hkl·x_j)| in volts (non-
  relativistic constant 47.878 V·Å², Lobato electron scattering factors, static lattice), 0 for a
  forbidden reflection;
* ``excitation_error_invA`` s_g = −(K̂·g) − λ|g|²/2 at the beam's central direction K̂ (first
  order in λ|g|), negative outside the Ewald sphere;
* ``strength`` the mean intensity of the clean simulated pattern inside a circle about the
  reflection over the same for the zero beam: what the pattern itself shows, double diffraction
  included (:func:`strength_radius_invA` gives the circle).

Lattice absences (reflections a centring translation of the cell forbids, :func:`centring_translations`)
are left out: no disk is ever there. Kept: every other ZOLZ reflection whose disk centre lies on the
pattern, and every higher-order (HOLZ)
reflection on the pattern that the convergent beam excites: |s_g| ≤ α|g_xy| + 1/t (the range
the disk's directions sweep, plus the kinematic width 1/t of a slab of thickness t) with a
kinematic |V_g| above ``HOLZ_MIN_VG_FRACTION`` of the zero beam's.

The visibility rule (:func:`classify`) turns these into what a detector is scored on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache
from itertools import product

import numpy as np

from .optics import wavelength_A

# h²/(2π m₀ e) in V·Å²: V_g = this / Ω · F_g for electron scattering factors F_g in Å
VG_CONSTANT_VA2 = 47.878
HOLZ_MIN_VG_FRACTION = 0.01
SCHEMA = "fourdcrystal.truth/1"


@dataclass
class Reflections:
    """The reflections of one pattern (m rows)."""

    hkl: np.ndarray  # (m, 3) int32, conventional-cell indices
    q_invA: np.ndarray  # (m, 2) float64, (q_x, q_y) of the disk centre, Å⁻¹
    gz_invA: np.ndarray  # (m,) float64, component along the beam axis (+z), Å⁻¹
    laue_zone: np.ndarray  # (m,) int32, h u + k v + l w
    vg_V: np.ndarray  # (m,) float32, kinematic |V_g|, V
    excitation_error_invA: np.ndarray  # (m,) float32
    strength: np.ndarray  # (m,) float32, mean disk intensity / zero beam's (NaN where not measured)

    def __len__(self) -> int:
        return len(self.hkl)

    @property
    def vg0_V(self) -> float:
        """The zero beam's kinematic |V_0| (its row h k l = 0 0 0; the largest |V_g| where it is missing)."""
        zero = np.all(self.hkl == 0, axis=1)
        return float(self.vg_V[zero][0]) if zero.any() else float(np.max(self.vg_V, initial=1.0))

    @staticmethod
    def names() -> tuple[str, ...]:
        return tuple(f.name for f in fields(Reflections))


def reciprocal_lattice(lattice_A: np.ndarray) -> np.ndarray:
    """Rows b1, b2, b3 with a_i · b_j = δ_ij (Å⁻¹, no 2π).

    >>> reciprocal_lattice(4.0 * np.eye(3)).diagonal().tolist()
    [0.25, 0.25, 0.25]
    """
    return np.linalg.inv(np.asarray(lattice_A, float)).T


@lru_cache(maxsize=256)
def zone_basis(uvw: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(basis, offset): two integer vectors spanning {hkl : h u + k v + l w = 0} and one with the sum 1.

    A pair (b1, b2) spans the whole zero layer exactly when b1 × b2 = ±[uvw] (gcd 1).

    >>> b, o = zone_basis((1, 1, 0)); int(np.dot(o, (1, 1, 0)))
    1
    """
    u = np.array(uvw, int)
    span = max(2, int(np.abs(u).max()) + 1)
    cands = [np.array(c) for c in product(range(-span, span + 1), repeat=3) if any(c)]
    zero = sorted((c for c in cands if c @ u == 0), key=lambda c: (int(c @ c), tuple(-c)))
    for i, a in enumerate(zero):
        for b in zero[i + 1:]:
            cr = np.cross(a, b)
            if np.array_equal(cr, u) or np.array_equal(cr, -u):
                one = min((c for c in cands if c @ u == 1), key=lambda c: (int(c @ c), tuple(-c)))
                return np.array([a, b]), one
    raise ValueError(f"no integer basis found for the zone {uvw}")  # pragma: no cover - gcd 1 always has one


def scattering_factors_A(symbols: list[str], g2_invA2: np.ndarray) -> np.ndarray:
    """Lobato electron scattering factors f_j(|g|) in Å, (n_atoms, m), from abTEM's parametrisation."""
    from abtem.parametrizations import LobatoParametrization

    par = LobatoParametrization()
    table = {s: np.asarray(par.scattering_factor(s)(g2_invA2), float) for s in set(symbols)}
    return np.stack([table[s] for s in symbols])


def kinematic_vg(hkl: np.ndarray, lattice_A: np.ndarray, symbols: list[str], frac: np.ndarray) -> np.ndarray:
    """|V_g| in V of reflections ``hkl`` (m, 3) of a crystal with fractional coordinates ``frac`` (n, 3).

    The phase h·x_j needs no lattice; |g| (for the scattering factors) and the cell volume use the
    realised lattice.
    """
    g = np.asarray(hkl, float) @ reciprocal_lattice(lattice_A)
    f = scattering_factors_A(list(symbols), np.einsum("ij,ij->i", g, g))
    phase = np.exp(2j * np.pi * (np.asarray(frac, float) @ np.asarray(hkl, float).T))  # (n, m)
    volume = abs(float(np.linalg.det(lattice_A)))
    return (VG_CONSTANT_VA2 / volume * np.abs((f * phase).sum(axis=0))).astype(np.float32)


def centring_translations(symbols: list[str], frac: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """Pure translations (fractional, (k, 3), zero excluded) that map the cell's atoms onto atoms of the same
    element: the centring of the lattice (I, F, C, R ... in a conventional cell).

    A reflection h with h·τ not an integer for such a τ is absent whatever the scattering: no double
    diffraction fills a lattice absence (unlike those of glides and screw axes).

    >>> fcc = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    >>> len(centring_translations(["Cu"] * 4, fcc))
    3
    """
    frac = np.mod(np.asarray(frac, float), 1.0)
    sym = np.asarray(symbols)
    rare = min(set(symbols), key=lambda e: (symbols.count(e), e))  # fewest candidates: the rarest element
    first = frac[np.nonzero(sym == rare)[0][0]]
    out = []
    for cand in frac[sym == rare]:
        tau = np.mod(cand - first, 1.0)
        if np.all(np.minimum(tau, 1 - tau) < tol):
            continue
        moved = np.mod(frac + tau, 1.0)
        d = np.abs(moved[:, None, :] - frac[None, :, :])
        d = np.minimum(d, 1 - d).max(axis=-1)  # (moved atom, atom)
        same = sym[:, None] == sym[None, :]
        if np.all((np.where(same, d, 1.0) < tol).any(axis=1)):
            out.append(tau)
    return np.array(out).reshape(-1, 3)


def lattice_allowed(hkl: np.ndarray, centring: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """(m,) bool: not a lattice absence (h·τ an integer for every centring translation τ)."""
    if len(centring) == 0:
        return np.ones(len(hkl), bool)
    x = np.asarray(hkl, float) @ centring.T
    return np.all(np.abs(x - np.rint(x)) < tol, axis=1)


def reflections(lattice_A: np.ndarray, zone_axis, symbols: list[str], frac: np.ndarray, energy_eV: float,
                semiangle_mrad: float, thickness_A: float, shape: tuple[int, int], k_sampling_invA,
                beam_tilt_mrad=(0.0, 0.0)) -> Reflections:
    """Every ZOLZ reflection on the pattern and every excited HOLZ reflection, exact (strength not yet measured).

    Parameters
    ----------
    lattice_A : (3, 3) rows of the conventional cell as realised, specimen frame (beam along +z), Å.
    zone_axis : [uvw] of that cell (the direction put along the beam).
    symbols, frac : the conventional cell's atoms: chemical symbols and fractional coordinates (n, 3).
    energy_eV, semiangle_mrad : the beam.
    thickness_A : the slab's thickness (sets the kinematic width 1/t of the HOLZ selection).
    shape : (H, W) of the pattern; k_sampling_invA : its (k_x, k_y) pixel size, Å⁻¹.
    beam_tilt_mrad : (θx, θy) of the incident beam relative to +z (``tilt_mode = "beam"``), mrad.

    Returns
    -------
    :class:`Reflections` with ``strength`` NaN (see :func:`measure_strength`), the zero beam first.
    """
    lam = wavelength_A(energy_eV)
    b = reciprocal_lattice(lattice_A)
    dk = np.asarray(k_sampling_invA, float).reshape(2)
    h, w = shape
    lo = -np.array([h // 2, w // 2]) * dk
    hi = (np.array([h, w]) - 1 - np.array([h // 2, w // 2])) * dk
    q_max = float(np.linalg.norm(np.maximum(-lo, hi)))
    uvw = tuple(int(x) for x in zone_axis)
    basis, offset = zone_basis(uvw)
    e = basis @ b  # (2, 3) Cartesian basis of the zero layer
    o = offset @ b
    tx, ty = (math.tan(float(t) * 1e-3) for t in beam_tilt_mrad)
    k_hat = np.array([tx, ty, 1.0]) / math.sqrt(1 + tx * tx + ty * ty)
    alpha = float(semiangle_mrad) * 1e-3
    # the Ewald sphere's height over the zero layer at the pattern's corner, plus tilt and convergence: no HOLZ
    # layer above it reaches the pattern
    layer_dz = abs(float(o @ k_hat))
    reach = lam * q_max**2 / 2 + (math.hypot(tx, ty) + alpha) * q_max + 1.0 / max(thickness_A, 1.0)
    n_layers = int(math.floor(reach / layer_dz)) if layer_dz > 0 else 0
    e_xy = e[:, :2]
    inv = np.linalg.inv(e_xy)  # rows: coefficients of a lateral vector in the basis
    rows = []
    for n in range(-n_layers, n_layers + 1):
        shift = n * o[:2]
        c0 = -shift @ inv
        span = q_max * np.linalg.norm(inv, axis=0) + 1
        i = np.arange(math.floor(c0[0] - span[0]), math.ceil(c0[0] + span[0]) + 1)
        j = np.arange(math.floor(c0[1] - span[1]), math.ceil(c0[1] + span[1]) + 1)
        ii, jj = (a.ravel() for a in np.meshgrid(i, j, indexing="ij"))
        hkl = ii[:, None] * basis[0] + jj[:, None] * basis[1] + n * offset
        rows.append(hkl)
    hkl = np.concatenate(rows).astype(np.int64)
    hkl = hkl[lattice_allowed(hkl, centring_translations(list(symbols), frac))]  # never a disk there
    g = hkl @ b
    q = g[:, :2]
    on = np.all((q >= lo - 1e-12) & (q <= hi + 1e-12), axis=1)
    hkl, g, q = hkl[on], g[on], q[on]
    zone = hkl @ np.array(uvw)
    s = -(g @ k_hat) - lam * np.einsum("ij,ij->i", g, g) / 2
    vg = kinematic_vg(hkl, lattice_A, symbols, frac)
    vg0 = float(kinematic_vg(np.zeros((1, 3), int), lattice_A, symbols, frac)[0])
    excited = np.abs(s) <= alpha * np.linalg.norm(q, axis=1) + 1.0 / max(thickness_A, 1.0)
    keep = (zone == 0) | (excited & (vg >= HOLZ_MIN_VG_FRACTION * vg0))
    order = np.lexsort((q[:, 1], q[:, 0], np.einsum("ij,ij->i", q, q), np.abs(zone)))  # zero beam first
    order = order[keep[order]]
    return Reflections(hkl=hkl[order].astype(np.int32), q_invA=q[order], gz_invA=g[order, 2],
                       laue_zone=zone[order].astype(np.int32), vg_V=vg[order],
                       excitation_error_invA=s[order].astype(np.float32),
                       strength=np.full(len(order), np.nan, np.float32))


def zolz_spacing_invA(refl: Reflections) -> np.ndarray:
    """(m,) distance from each reflection to the nearest other ZOLZ reflection (Å⁻¹; inf where there is none)."""
    q = refl.q_invA[refl.laue_zone == 0]
    if len(q) < 2:
        return np.full(len(refl), np.inf)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(q).query(refl.q_invA, k=2)
    own = d[:, 0] < 1e-12  # a ZOLZ reflection finds itself first
    return np.where(own, d[:, 1], d[:, 0])


def strength_radius_invA(refl: Reflections, disk_radius_invA: float, pixel_invA: float,
                         spacing_invA: np.ndarray | None = None) -> float:
    """The radius of :func:`measure_strength`'s circles: 0.8 disk radius, less where a circle that size would
    reach into the nearest neighbour's disk (spacing − disk radius), at least one pixel. ``spacing_invA``:
    :func:`zolz_spacing_invA` of ``refl`` where the caller has it already."""
    zolz = refl.laue_zone == 0
    spacing = zolz_spacing_invA(refl) if spacing_invA is None else spacing_invA
    nn = float(spacing[zolz].min()) if zolz.sum() > 1 else np.inf
    return max(min(0.8 * disk_radius_invA, nn - disk_radius_invA), pixel_invA)


def measure_strength(cbed: np.ndarray, refl: Reflections, k_sampling_invA, disk_radius_invA: float) -> np.ndarray:
    """Mean intensity of ``cbed`` in a circle about each reflection over that about the zero beam, (m,) float32.

    The circle (radius :func:`strength_radius_invA`, at least one pixel) holds the pixels whose centres
    lie within it; a circle that leaves the pattern averages what is on it.
    """
    dk = np.asarray(k_sampling_invA, float).reshape(2)
    h, w = cbed.shape
    centre = np.array([h // 2, w // 2])
    radius = strength_radius_invA(refl, disk_radius_invA, float(dk.max()))
    ri, rj = (int(math.ceil(radius / d)) for d in dk)
    di, dj = np.meshgrid(np.arange(-ri, ri + 1), np.arange(-rj, rj + 1), indexing="ij")

    def mean_at(q: np.ndarray) -> float:
        p = q / dk + centre
        i0, j0 = np.rint(p).astype(int)
        ii, jj = i0 + di, j0 + dj
        inside = (np.hypot((ii - p[0]) * dk[0], (jj - p[1]) * dk[1]) <= radius) & (ii >= 0) & (ii < h) & (jj >= 0) & (
            jj < w)
        return float(cbed[ii[inside], jj[inside]].mean()) if inside.any() else 0.0

    zero = mean_at(np.zeros(2))
    values = np.array([mean_at(q) for q in refl.q_invA], float)
    return (values / zero if zero > 0 else np.full(len(values), np.nan)).astype(np.float32)


def specimen_reflections(specimen, cbed: np.ndarray, energy_eV: float, semiangle_mrad: float, thickness_A: float,
                         k_sampling_invA) -> Reflections:
    """:func:`reflections` of a :class:`~fourdcrystal.specimens.specimen.Specimen` with strengths measured on its clean ``cbed``."""
    from .optics import disk_radius_invA

    beam_tilt = specimen.tilt_mrad if specimen.info.get("tilt_mode", "beam") == "beam" else (0.0, 0.0)
    refl = reflections(specimen.lattice_A, specimen.zone_axis, list(specimen.cell_symbols), specimen.cell_frac,
                       energy_eV, semiangle_mrad, thickness_A, cbed.shape, k_sampling_invA, beam_tilt)
    refl.strength = measure_strength(cbed, refl, k_sampling_invA, disk_radius_invA(semiangle_mrad, energy_eV))
    return refl


TARGET_AMPLITUDES = ("vg", "presence")


def target_map(refl: Reflections, shape: tuple[int, int], k_sampling_invA, sigma_px: float = 0.75,
               amplitude: str = "vg", weak_strength: float = 0.002, min_vg_fraction: float = HOLZ_MIN_VG_FRACTION
               ) -> np.ndarray:
    """A training target from the physical truth: a Gaussian of ``sigma_px`` at the exact position of every
    reflection of the crystal the pattern shows, (H, W) float32, q = 0 at (H//2, W//2).

    Kept: ZOLZ reflections with strength ≥ ``weak_strength`` and kinematic |V_g| ≥ ``min_vg_fraction`` of
    the zero beam's (visible, and not only by double diffraction). Each peaks at its kinematic |V_g| / |V_0|
    (``amplitude="vg"``: the multiple scattering undone, as the label map, but exact and without the
    window's side lobes or the reflections the pattern does not show) or at 1 (``"presence"``). Where two
    Gaussians overlap the larger value is kept.

    >>> r = Reflections(np.zeros((1, 3), np.int32), np.zeros((1, 2)), np.zeros(1), np.zeros(1, np.int32),
    ...                 np.ones(1, np.float32), np.zeros(1, np.float32), np.ones(1, np.float32))
    >>> m = target_map(r, (8, 8), 0.1); float(m[4, 4]), float(m.sum()) > 1
    (1.0, True)
    """
    if amplitude not in TARGET_AMPLITUDES:
        raise ValueError(f"amplitude must be one of {TARGET_AMPLITUDES}, got {amplitude!r}")
    dk = np.broadcast_to(np.asarray(k_sampling_invA, float), (2,))
    h, w = shape
    vg0 = refl.vg0_V
    keep = (refl.laue_zone == 0) & (np.nan_to_num(refl.strength) >= weak_strength) & (
        refl.vg_V >= min_vg_fraction * vg0)
    px = refl.q_invA[keep] / dk + np.array([h // 2, w // 2])
    amp = np.minimum(refl.vg_V[keep] / max(vg0, 1e-12), 1.0) if amplitude == "vg" else np.ones(int(keep.sum()))
    out = np.zeros(shape, np.float32)
    r = int(np.ceil(3 * sigma_px))
    d = np.arange(-r, r + 1)
    for (pi, pj), a in zip(px, amp):
        i0, j0 = int(np.rint(pi)), int(np.rint(pj))
        ii, jj = i0 + d, j0 + d
        gi = np.exp(-((ii - pi) ** 2) / (2 * sigma_px**2))
        gj = np.exp(-((jj - pj) ** 2) / (2 * sigma_px**2))
        oi, oj = (ii >= 0) & (ii < h), (jj >= 0) & (jj < w)
        if not (oi.any() and oj.any()):
            continue
        patch = a * np.outer(gi[oi], gj[oj])
        region = out[ii[oi][0]:ii[oi][-1] + 1, jj[oj][0]:jj[oj][-1] + 1]
        np.maximum(region, patch, out=region)
    return out


# --- the visibility rule ------------------------------------------------------------------------------------

REQUIRED, IGNORED, ABSENT = 1, 0, -1


@dataclass(frozen=True)
class VisibilityRule:
    """Which reflections a detector must find (required), may find (ignored) and must not report (absent).

    * required: ZOLZ, strength ≥ ``min_strength``, kinematic |V_g| ≥ ``min_vg_fraction`` of the zero beam's
      (a reflection of the crystal, not a forbidden one lit by double diffraction: a detector of V_g may leave
      those out), on the scored region (a disk radius inside the pattern), clear of its neighbours' disks;
    * ignored (neither required nor penalised): ZOLZ with strength in [``weak_strength``, ``min_strength``)
      (near the threshold), weaker ZOLZ whose kinematic |V_g| is at least ``min_vg_fraction`` of the zero
      beam's (a reflection of the crystal the pattern hardly shows: the outer ones, far from the Ewald
      sphere; a peak there is a true Bragg vector), ZOLZ within one disk radius of an excited HOLZ reflection (HOLZ-fed), ZOLZ whose
      strength circle reaches into a neighbour's disk (nearest ZOLZ reflection closer than
      ``min_separation_radii`` disk radii plus the circle's radius: overlapping disks, whose strength cannot
      be measured), ZOLZ off the scored region, and every excited HOLZ reflection with strength ≥
      ``weak_strength``;
    * absent: the rest, forbidden reflections the pattern does not show and HOLZ reflections weaker than
      ``weak_strength`` (a peak reported there, or off the lattice, is a false one).
    """

    min_strength: float = 0.01  # mean disk intensity as a fraction of the zero beam's
    weak_strength: float = 0.002
    min_separation_radii: float = 1.0
    min_vg_fraction: float = HOLZ_MIN_VG_FRACTION

    def classify(self, refl: Reflections, scored: np.ndarray, disk_radius_invA: float, pixel_invA: float
                 ) -> np.ndarray:
        """(m,) int8: REQUIRED, IGNORED or ABSENT; ``scored`` (m,) bool marks reflections on the scored region;
        ``pixel_invA`` the pattern's pixel size (the strength circle's smallest radius)."""
        strength = np.nan_to_num(refl.strength, nan=0.0)
        zolz = refl.laue_zone == 0
        holz = ~zolz & (strength >= self.weak_strength)
        fed = np.zeros(len(refl), bool)
        if holz.any() and zolz.any():
            d = np.linalg.norm(refl.q_invA[zolz][:, None] - refl.q_invA[holz][None], axis=-1)
            fed[np.nonzero(zolz)[0]] = (d <= disk_radius_invA).any(axis=1)
        out = np.full(len(refl), ABSENT, np.int8)
        visible = zolz & (strength >= self.weak_strength)
        spacing = zolz_spacing_invA(refl)
        rho = strength_radius_invA(refl, disk_radius_invA, pixel_invA, spacing)
        crowded = spacing < self.min_separation_radii * disk_radius_invA + rho
        lattice = zolz & (refl.vg_V >= self.min_vg_fraction * refl.vg0_V)
        out[visible | holz | lattice] = IGNORED
        out[lattice & (strength >= self.min_strength) & scored & ~fed & ~crowded] = REQUIRED
        return out
