"""Oriented, tilted, tiled specimens: a crystal seen down a zone axis. Pure: structure in, atoms out.

Geometry, all lengths in Å, angles as named:

* **Zone axis** ``[uvw]`` is a direct-lattice direction of the *conventional* cell; the lattice
  vector ``t = u a1 + v a2 + w a3`` is put along the beam, +z. The in-plane reference
  (φ = 0) is the projection onto the plane ⟂ t of the first of a1, a2, a3 not parallel to t:
  it lies along +x at φ = 0. The crystal is then rotated by φ about +z (counter-clockwise
  seen from +z, i.e. looking against the beam).
* **Laterally periodic supercell.** Two lattice vectors p, q with p ⟂ t, q ⟂ t, p ⟂ q make
  (p, q, t) a periodic orthogonal supercell. They exist exactly when the lattice plane ⟂ t
  contains a rectangular sublattice (always for cubic, tetragonal, orthorhombic and hexagonal
  low-index axes); for oblique cases a nearly rectangular pair is accepted when the strain
  needed to square it (largest principal Green–Lagrange strain) is below ``strain_tol``. p is
  picked among lattice vectors pointing within ``phi_tol_deg`` of the requested rotation, so
  the *realised* φ is the direction of a lattice vector; both values are recorded. The cell is
  built with pymatgen's ``make_supercell`` (exact integer supercell: no duplicated or missing
  atoms at the seams; ``ase.build.surface`` and ``abtem.orthogonalize_cell`` are not used).
* **Fallback (no periodic cell within the size, strain and φ limits):** by default the
  periodic cell with the nearest achievable φ; where none exists at any φ (or with
  ``fallback="cut"``) a cut box — the
  crystal rotated exactly, atoms kept inside [0, L)² laterally. It is *not* periodic: the
  simulation must keep the probe at the box centre, far from the edges. Recorded as
  ``mode = "cut"``.
* **Thickness** is cut exactly at the largest requested thickness (slab from z = 0, the
  entrance surface, to z = T). Along z the crystal repeats every |t| (``period_z_A``).
* **Out-of-plane tilt (θx, θy) in mrad**, two documented ways (``tilt_mode``):

  - ``"beam"`` (default): the atoms are *not* tilted; the slab stays exactly periodic and
    the simulation tilts the incident probe by (θx, θy) (abTEM's phase-ramp beam tilt, valid
    for small angles, hence the 50 mrad limit). The crystal's zone axis is then at
    (−θx, −θy) from the beam, and a ZOLZ reflection g = (gx, gy) acquires the out-of-plane
    component q_z = θx·gx + θy·gy relative to the beam (first order in θ); the labels use the
    same convention.
  - ``"atoms"``: the crystal is rigidly rotated so its zone axis points along
    (tan θx, tan θy, 1) (no strain), then cut into a box (``mode = "cut"``: a rotated crystal
    is not periodic in a box whose sides are ⟂ the beam). Its reflections g = (gx, gy, 0)
    move to q_z = −θx·gx − θy·gy to first order.
* **Homogeneous in-plane strain** (ε_xx, ε_yy, ε_xy), fractions, in the specimen frame (x, y
  after the rotation φ): every atom moves by r → F r with F = I + ε (symmetric: a pure strain,
  no rotation; z untouched), so a reciprocal vector moves by g → F⁻ᵀ g. Normal strain keeps a
  periodic cell periodic: its box is stretched to (L_x (1 + ε_xx), L_y (1 + ε_yy)). Shear
  (ε_xy ≠ 0) makes the cell oblique, which a multislice box with sides along x and y cannot
  hold, and squaring it again would undo the strain; a sheared specimen is therefore a cut
  box of the strained crystal (``mode = "cut"``, box unchanged), simulated with the probe at
  its centre. The manifest keeps the unstrained plan and the tensor; :func:`build_specimen`
  applies it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import reduce

import numpy as np
from pymatgen.core import Structure

from ..errors import FourdError
from ..lattice import rotation_z, tilt_rotation

MAX_TILT_MRAD = 50.0
MAX_STRAIN = 0.2  # |ε| per component: beyond this a "homogeneous strain" is no longer a small deformation  # small-angle limit (beam tilt as a phase ramp; first-order q_z labels)
_MAX_INDEX_SEARCH = 40  # cap on the lattice-vector search range per axis


@dataclass(frozen=True)
class CellPlan:
    """How a specimen's lateral cell is made; everything needed to rebuild it exactly."""

    mode: str  # "periodic" or "cut"
    phi_deg: float  # realised in-plane rotation
    matrix: tuple[tuple[int, ...], ...] | None  # integer rows (p, q, t) in conventional-cell indices
    strain: float  # largest principal Green-Lagrange strain applied to square the cell
    cell_A: tuple[float, float]  # the periodic (or cut) lateral cell, Å
    repeats: tuple[int, int]  # tiling of that cell in x, y
    period_z_A: float  # |t|, the repeat distance along the beam

    @property
    def box_A(self) -> tuple[float, float]:
        return (self.cell_A[0] * self.repeats[0], self.cell_A[1] * self.repeats[1])


@dataclass
class Specimen:
    """Atoms of an oriented slab and the exact geometry that produced them."""

    atoms: "object"  # ase.Atoms
    zone_axis: tuple[int, int, int]
    plan: CellPlan
    tilt_mrad: tuple[float, float]
    thickness_A: float
    rotation: np.ndarray  # 3x3: crystal Cartesian -> specimen frame (tilt included in "atoms" mode)
    info: dict = field(default_factory=dict)
    # rows a1, a2, a3 of the conventional cell as realised in the atoms, specimen frame, Å: the rotated crystal,
    # or for a periodic cell the squared and stretched supercell's own lattice (see realised_lattice)
    lattice_A: np.ndarray | None = None
    # the conventional cell's atoms (chemical symbols, fractional coordinates): what the kinematic V_g needs
    cell_symbols: tuple[str, ...] = ()
    cell_frac: np.ndarray | None = None


# --- zone axis and frame ------------------------------------------------------------------


def check_zone_axis(uvw) -> tuple[int, int, int]:
    """Validate ``[uvw]``: three integers, not all zero; reduced by their gcd.

    Parameters
    ----------
    uvw : three integers, a direction of the conventional cell.

    Returns
    -------
    (u, v, w) divided by their greatest common divisor; a bad one raises :class:`FourdError`.

    >>> check_zone_axis((2, 2, 0))
    (1, 1, 0)
    """
    try:
        vals = [float(x) for x in uvw]
    except (TypeError, ValueError):
        raise FourdError(f"zone axis {uvw!r}: expected three integers u v w") from None
    if len(vals) != 3 or any(not math.isfinite(v) or v != round(v) for v in vals):
        raise FourdError(f"zone axis {list(uvw)!r}: expected three integers u v w")
    ints = [int(round(v)) for v in vals]
    if ints == [0, 0, 0]:
        raise FourdError("zone axis [0 0 0] is the zero vector; expected a direction such as 1 1 0")
    g = reduce(math.gcd, (abs(i) for i in ints))
    return tuple(i // g for i in ints)  # type: ignore[return-value]


def check_tilt(tilt_mrad) -> tuple[float, float]:
    """Validate a tilt (θx, θy): within the small-angle limit.

    Parameters
    ----------
    tilt_mrad : (θx, θy), mrad.

    Returns
    -------
    (θx, θy) as floats; a tilt above the limit raises :class:`FourdError`.
    """
    tx, ty = (float(x) for x in tilt_mrad)
    if math.hypot(tx, ty) > MAX_TILT_MRAD + 1e-9:
        raise FourdError(f"tilt ({tx:g}, {ty:g}) mrad exceeds the small-angle limit of {MAX_TILT_MRAD:g} mrad")
    return tx, ty


def check_strain(strain) -> tuple[float, float, float]:
    """Validate an in-plane strain (ε_xx, ε_yy, ε_xy) given as fractions (0.01 = 1 %).

    Parameters
    ----------
    strain : (ε_xx, ε_yy, ε_xy), fractions.

    Returns
    -------
    The three as floats; non-finite or implausibly large values raise :class:`FourdError`.
    """
    try:
        vals = tuple(float(x) for x in strain)
    except (TypeError, ValueError):
        raise FourdError(f"strain {strain!r}: expected three numbers exx eyy exy") from None
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise FourdError(f"strain {list(strain)!r}: expected three finite numbers exx eyy exy")
    if max(abs(v) for v in vals) > MAX_STRAIN:
        raise FourdError(f"strain ({', '.join(f'{100 * v:g}' for v in vals)}) %: each component must be within "
                         f"±{100 * MAX_STRAIN:g} %")
    return vals  # type: ignore[return-value]


def strain_matrix(strain) -> np.ndarray:
    """Deformation gradient F = I + ε (3×3, z untouched) of an in-plane strain (ε_xx, ε_yy, ε_xy).

    Parameters
    ----------
    strain : (ε_xx, ε_yy, ε_xy), fractions, in the specimen frame.

    Returns
    -------
    F : (3, 3) array acting on column vectors, r' = F r.
    """
    exx, eyy, exy = check_strain(strain)
    return np.array([[1.0 + exx, exy, 0.0], [exy, 1.0 + eyy, 0.0], [0.0, 0.0, 1.0]])


def zone_axis_frame(lattice: np.ndarray, uvw) -> np.ndarray:
    """Rotation R (rows x̂, ŷ, ẑ) taking crystal Cartesian vectors to the φ = 0 frame, t ∥ +z.

    Parameters
    ----------
    lattice : (3, 3) rows a1, a2, a3 of the conventional cell, Å.
    uvw : the zone axis.

    Returns
    -------
    (3, 3) rotation, rows x̂, ŷ, ẑ in crystal Cartesian coordinates.
    """
    lattice = np.asarray(lattice, float)
    t = np.asarray(uvw, float) @ lattice
    z = t / np.linalg.norm(t)
    for a in lattice:
        x = a - (a @ z) * z
        if np.linalg.norm(x) > 1e-6 * np.linalg.norm(a):
            break
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.array([x, y, z])


def _wrap_deg(a):
    return (np.asarray(a) + 180.0) % 360.0 - 180.0


def green_strain(cell_from: np.ndarray, cell_to: np.ndarray) -> float:
    """Largest |principal Green-Lagrange strain| of the map taking rows of cell_from to cell_to.

    Parameters
    ----------
    cell_from, cell_to : (3, 3) rows of two cells, Å.

    Returns
    -------
    The largest |principal Green–Lagrange strain|, a fraction (0 for a rotation).
    """
    f = np.linalg.solve(cell_from, cell_to)  # row vectors: r' = r F
    e = 0.5 * (f @ f.T - np.eye(3))
    return float(np.max(np.abs(np.linalg.eigvalsh(0.5 * (e + e.T)))))


# --- periodic cell search -------------------------------------------------------------------


def axis_text(uvw) -> str:
    """``[u v w]`` for messages and titles.

    Parameters
    ----------
    uvw : three integers.

    Returns
    -------
    The text, e.g. ``[1 1 0]``.

    >>> axis_text((1, 1, 0))
    '[1 1 0]'
    """
    return "[" + " ".join(str(int(x)) for x in uvw) + "]"


def period_z_A(lattice: np.ndarray, uvw) -> float:
    """|t| = |u a1 + v a2 + w a3|: the repeat distance of the crystal along the beam, Å.

    Parameters
    ----------
    lattice : (3, 3) rows a1, a2, a3, Å.
    uvw : the zone axis.

    Returns
    -------
    |t| in Å.

    >>> round(period_z_A(5.431 * np.eye(3), (1, 1, 0)), 4)
    7.6806
    """
    return float(np.linalg.norm(np.asarray(uvw, float) @ np.asarray(lattice, float)))


def _inplane_vectors(lattice: np.ndarray, uvw, max_length_A: float, rel_z_tol: float,
                     n_max: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lattice vectors (indices, φ = 0 frame coordinates, lengths) with 0 < |v| ≤ max_length_A
    and |v_z| ≤ rel_z_tol·|v| (nearly perpendicular to the zone axis); |n_i| ≤ n_max[i]."""
    grids = np.meshgrid(*[np.arange(-n, n + 1) for n in n_max], indexing="ij")
    idx = np.stack([g.ravel() for g in grids], axis=1)
    vec = idx @ (lattice @ zone_axis_frame(lattice, uvw).T)
    length = np.linalg.norm(vec, axis=1)
    keep = (length > 1e-6) & (length <= max_length_A * (1 + 1e-9)) & (np.abs(vec[:, 2]) <= rel_z_tol * length)
    return idx[keep], vec[keep], length[keep]


def find_periodic_cell(lattice: np.ndarray, uvw, phi_deg: float, lateral_size_A: float,
                       strain_tol: float = 0.005, phi_tol_deg: float | Sequence[float] = 2.0) -> CellPlan | None:
    """Smallest (p, q, t) orthogonal supercell with |p|, |q| ≤ lateral size, p within φ tolerance.

    ``phi_tol_deg`` may be a sequence of widening tolerances: the first that admits a cell wins
    (the lattice vectors are enumerated once for all of them). Returns None where no cell meets
    the limits.

    Parameters
    ----------
    lattice : (3, 3) rows a1, a2, a3 of the conventional cell, Å.
    uvw : the zone axis.
    phi_deg : requested in-plane rotation, degrees.
    lateral_size_A : largest side of the cell, Å.
    strain_tol : largest strain accepted to square a nearly rectangular cell, fraction.
    phi_tol_deg : tolerance on φ, degrees (or widening tolerances).

    Returns
    -------
    The :class:`CellPlan`, or None.
    """
    lattice = np.asarray(lattice, float)
    uvw = np.asarray(uvw, int)
    r0 = zone_axis_frame(lattice, uvw)
    lz = period_z_A(lattice, uvw)
    recip = np.linalg.inv(lattice).T  # rows b_i with a_i . b_j = δ_ij
    n_max = [min(_MAX_INDEX_SEARCH, int(math.ceil(lateral_size_A * np.linalg.norm(b))) + 1) for b in recip]
    idx, vec, length = _inplane_vectors(lattice, uvw, lateral_size_A, 2 * strain_tol, n_max)
    if len(idx) == 0:
        return None
    angle = np.degrees(np.arctan2(vec[:, 1], vec[:, 0]))
    # p along +x after rotating the crystal by φ: p's direction in the φ = 0 frame is -φ.
    dphi = np.abs(_wrap_deg(angle + phi_deg))
    t_row = uvw.astype(int)
    for tol in np.atleast_1d(phi_tol_deg):
        best = None
        p_ok = dphi <= tol
        for i in np.nonzero(p_ok)[0][np.argsort(length[p_ok], kind="stable")]:
            p = vec[i]
            cosang = (vec @ p) / (length * length[i])
            cross_z = p[0] * vec[:, 1] - p[1] * vec[:, 0]
            q_ok = (np.abs(cosang) <= 2 * strain_tol) & (cross_z > 0)
            for j in np.nonzero(q_ok)[0][np.argsort(length[q_ok], kind="stable")]:
                area = length[i] * length[j]
                if best is not None and area >= best[0] - 1e-9:
                    break
                m = np.array([idx[i], idx[j], t_row])
                if round(abs(np.linalg.det(m))) == 0:
                    continue
                phi_real = float(-angle[i])
                rot = rotation_z(phi_real) @ r0  # crystal -> specimen frame
                cell_from = m @ lattice @ rot.T
                cell_to = np.diag([length[i], length[j], lz])
                strain = green_strain(cell_from, cell_to)
                if strain <= strain_tol:
                    best = (area, m, phi_real, strain, float(length[i]), float(length[j]))
                    break
        if best is not None:
            _, m, phi_real, strain, lp, lq = best
            reps = (max(1, round(lateral_size_A / lp)), max(1, round(lateral_size_A / lq)))
            return CellPlan("periodic", float(_wrap_deg(phi_real)), tuple(tuple(int(v) for v in row) for row in m),
                            strain, (lp, lq), reps, lz)
    return None


def plan_cell(lattice: np.ndarray, uvw, phi_deg: float, lateral_size_A: float, strain_tol: float = 0.005,
              phi_tol_deg: float = 2.0, fallback: str = "nearest") -> CellPlan:
    """Plan the lateral cell of a specimen.

    A periodic cell whose realised φ is within ``phi_tol_deg`` of the request, else by
    ``fallback``: "nearest" — the periodic cell with the nearest achievable φ (a periodic slab
    matters more for training data than the exact φ of a uniform draw; both are recorded);
    "cut" — the exactly rotated cut box; "error" — refuse. "nearest" falls back to a cut box
    when no periodic cell fits at any φ.

    Parameters
    ----------
    lattice : (3, 3) rows a1, a2, a3 of the conventional cell, Å.
    uvw : the zone axis.
    phi_deg : requested in-plane rotation, degrees.
    lateral_size_A : lateral box size, Å.
    strain_tol : largest strain accepted to square a cell, fraction.
    phi_tol_deg : tolerance on φ, degrees.
    fallback : nearest, cut or error.

    Returns
    -------
    The :class:`CellPlan` (periodic or cut box, realised φ, squaring strain).
    """
    lattice = np.asarray(lattice, float)
    uvw = check_zone_axis(uvw)
    if fallback not in ("nearest", "cut", "error"):
        raise FourdError(f"cell fallback {fallback!r}: expected nearest, cut or error")
    min_period = _shortest_inplane_period(lattice, uvw)
    if lateral_size_A < min_period - 1e-9:
        raise FourdError(f"lateral size {lateral_size_A:g} Å cannot hold one unit cell along {axis_text(uvw)} "
                         f"(shortest in-plane period {min_period:.2f} Å)")
    tols = [phi_tol_deg]
    if fallback == "nearest":
        tols += [t for t in (5.0, 10.0, 20.0, 45.0, 90.0, 180.0) if t > phi_tol_deg]
    plan = find_periodic_cell(lattice, uvw, phi_deg, lateral_size_A, strain_tol, tols)
    if plan is not None:
        return plan
    if fallback == "error":
        raise FourdError(f"no periodic cell along {axis_text(uvw)} within {lateral_size_A:g} Å, "
                         f"strain {strain_tol:g} and φ tolerance {phi_tol_deg:g}°")
    return CellPlan("cut", float(_wrap_deg(phi_deg)), None, 0.0, (float(lateral_size_A),) * 2, (1, 1),
                    period_z_A(lattice, uvw))


def _shortest_inplane_period(lattice: np.ndarray, uvw) -> float:
    """Length of the shortest lattice vector (nearly) perpendicular to the zone axis, Å."""
    _, _, length = _inplane_vectors(lattice, uvw, np.inf, 0.02, [6, 6, 6])
    return float(length.min()) if len(length) else float(np.linalg.norm(lattice, axis=1).min())


# --- building ---------------------------------------------------------------------------------


def build_specimen(structure: Structure, zone_axis, phi_deg: float = 0.0, tilt_mrad=(0.0, 0.0),
                   lateral_size_A: float = 40.0, thickness_A: float | list[float] = 100.0,
                   strain_tol: float = 0.005, phi_tol_deg: float = 2.0, plan: CellPlan | None = None,
                   tilt_mode: str = "beam", strain=(0.0, 0.0, 0.0)):
    """Build the atoms of an oriented slab (ase.Atoms) and its geometry, deterministically.

    ``structure`` is the conventional cell from the catalogue. ``thickness_A`` may be a series;
    the slab is cut at its largest value (exit planes for the others lie inside it).
    ``tilt_mode``: "beam" (atoms untilted, the probe is tilted) or "atoms" (rigid rotation).
    ``strain``: homogeneous in-plane strain (ε_xx, ε_yy, ε_xy), fractions, specimen frame,
    applied to the planned (unstrained) cell; the returned ``plan`` is the realised one.

    Parameters
    ----------
    structure : pymatgen Structure, the conventional cell.
    zone_axis : [uvw] of the conventional cell, put along +z.
    phi_deg : in-plane rotation, degrees, counter-clockwise seen from +z.
    tilt_mrad : (θx, θy), mrad.
    lateral_size_A : lateral box, Å.
    thickness_A : thickness or thickness series, Å.
    strain_tol, phi_tol_deg, plan : see :func:`plan_cell`; ``plan`` skips the planning.

    Returns
    -------
    :class:`Specimen`: the atoms (Å), the cell plan, the exit-plane thicknesses and the geometry in ``info``.
    """
    from ase import Atoms

    uvw = check_zone_axis(zone_axis)
    tilt = check_tilt(tilt_mrad)
    thicknesses = sorted(float(t) for t in np.atleast_1d(thickness_A))
    if thicknesses[0] <= 0:
        raise FourdError(f"thickness {thicknesses[0]:g} Å: expected a positive thickness")
    t_max = thicknesses[-1]
    if lateral_size_A <= 0:
        raise FourdError(f"lateral size {lateral_size_A:g} Å: expected a positive size")
    if tilt_mode not in ("beam", "atoms"):
        raise FourdError(f"tilt mode {tilt_mode!r}: expected beam or atoms")
    strain = check_strain(strain)
    deform = strain_matrix(strain)
    lattice = structure.lattice.matrix
    if plan is None:
        plan = plan_cell(lattice, uvw, phi_deg, lateral_size_A, strain_tol, phi_tol_deg)
    rot = rotation_z(plan.phi_deg) @ zone_axis_frame(lattice, uvw)
    if tilt_mode == "atoms" and tilt != (0.0, 0.0):
        rot = tilt_rotation(tilt) @ rot
        if plan.mode == "periodic":  # a rotated crystal does not fit a box with sides ⟂ the beam
            box = plan.box_A
            plan = CellPlan("cut", plan.phi_deg, None, 0.0, (box[0], box[1]), (1, 1), plan.period_z_A)
    if plan.mode == "periodic" and strain[2] != 0.0:  # shear: an oblique cell, see the module notes
        box = plan.box_A
        plan = CellPlan("cut", plan.phi_deg, None, 0.0, (box[0], box[1]), (1, 1), plan.period_z_A)
    elif plan.mode == "periodic" and strain != (0.0, 0.0, 0.0):  # normal strain stretches the periodic cell
        plan = replace(plan, cell_A=(plan.cell_A[0] * deform[0, 0], plan.cell_A[1] * deform[1, 1]))
    lx, ly = plan.box_A
    lattice_A = realised_lattice(lattice, plan, deform @ rot)
    if plan.mode == "periodic":
        cell = structure.copy()
        cell.make_supercell(np.array(plan.matrix))
        frac = _wrap_frac(cell.frac_coords)
        # square the cell: keep fractional coordinates, replace the lattice by the target box
        base = np.diag([plan.cell_A[0], plan.cell_A[1], plan.period_z_A])
        nz = int(math.ceil(t_max / plan.period_z_A - 1e-9))
        shifts = np.stack(np.meshgrid(np.arange(plan.repeats[0]), np.arange(plan.repeats[1]), np.arange(nz),
                                      indexing="ij"), -1).reshape(-1, 3)
        pos = ((frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3)) @ base
        numbers = np.tile(np.array(cell.atomic_numbers), len(shifts))
    else:
        pos, numbers = _cut_box(structure, deform @ rot, lx, ly, t_max)
    keep = pos[:, 2] < t_max - 1e-9
    pos, numbers = pos[keep], numbers[keep]
    order = np.lexsort((pos[:, 1], pos[:, 0], pos[:, 2]))  # deterministic: by depth, then x, y
    atoms = Atoms(numbers=numbers[order], positions=pos[order], cell=[lx, ly, t_max],
                  pbc=[plan.mode == "periodic"] * 2 + [False])
    return Specimen(atoms=atoms, zone_axis=uvw, plan=plan, tilt_mrad=tilt, thickness_A=t_max, rotation=rot,
                    info={"thicknesses_A": thicknesses, "tilt_mode": tilt_mode, "applied_strain": strain, **asdict(plan)},
                    lattice_A=lattice_A, cell_symbols=tuple(sp.symbol for sp in structure.species),
                    cell_frac=np.array(structure.frac_coords, float))


def realised_lattice(lattice: np.ndarray, plan: CellPlan, transform: np.ndarray) -> np.ndarray:
    """Rows a1, a2, a3 of the conventional cell as a specimen's atoms realise it, specimen frame, Å.

    A cut box holds the crystal moved by ``transform`` (F·R: rotation, tilt in atoms mode, strain), so its
    lattice is ``lattice @ transform.T``. A periodic cell keeps the fractional coordinates of the supercell
    (rows ``plan.matrix`` @ lattice) and replaces its lattice by the box diag(L_p, L_q, |t|) (squared, and
    stretched by normal strain: ``plan`` is the realised plan), so the conventional cell is
    ``inv(matrix) @ diag(L_p, L_q, |t|)``; it differs from the rotated crystal by the squaring strain
    (``plan.strain``, at most the planning tolerance).

    Parameters
    ----------
    lattice : (3, 3) rows of the conventional cell, crystal Cartesian frame, Å.
    plan : the realised :class:`CellPlan`.
    transform : (3, 3) crystal Cartesian -> specimen frame (F·R), used for a cut box.

    Returns
    -------
    (3, 3) rows a1, a2, a3, Å.

    >>> plan = CellPlan("periodic", 0.0, ((1, 0, 0), (0, 1, 0), (0, 0, 1)), 0.0, (5.0, 5.0), (8, 8), 5.0)
    >>> realised_lattice(5.431 * np.eye(3), plan, np.eye(3)).diagonal().tolist()
    [5.0, 5.0, 5.0]
    """
    if plan.mode == "periodic":
        base = np.diag([plan.cell_A[0], plan.cell_A[1], plan.period_z_A])
        return np.linalg.solve(np.asarray(plan.matrix, float), base)
    return np.asarray(lattice, float) @ np.asarray(transform, float).T


def _cut_box(structure: Structure, rot: np.ndarray, lx: float, ly: float, t_max: float):
    """All atoms of the exactly rotated (and possibly strained: ``rot`` = F R) crystal inside
    [0, lx) x [0, ly) x [0, t_max)."""
    lat = structure.lattice.matrix @ rot.T  # rotated lattice rows
    corners = np.array([[x, y, z] for x in (0, lx) for y in (0, ly) for z in (0, t_max)])
    fc = corners @ np.linalg.inv(lat)
    lo, hi = np.floor(fc.min(0)) - 1, np.ceil(fc.max(0)) + 1
    grids = np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi)], indexing="ij")
    shifts = np.stack([g.ravel() for g in grids], 1)
    frac = _wrap_frac(structure.frac_coords)
    pos = ((frac[None] + shifts[:, None]).reshape(-1, 3)) @ lat
    numbers = np.tile(np.array(structure.atomic_numbers), len(shifts))
    inside = (pos[:, 0] >= 0) & (pos[:, 0] < lx) & (pos[:, 1] >= 0) & (pos[:, 1] < ly) & (pos[:, 2] >= -1e-9)
    return pos[inside], numbers[inside]


def _wrap_frac(frac: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """Fractional coordinates in [0, 1), with 0.99999999 taken as 0 (else a layer goes missing)."""
    out = np.mod(frac + tol, 1.0) - tol
    out[np.abs(out) < tol] = 0.0
    return out


# --- zone-axis enumeration ---------------------------------------------------------------------


def distinct_zone_axes(structure: Structure, max_index: int, drop_equivalent: bool = True,
                       symprec: float = 0.1) -> list[tuple[int, int, int]]:
    """Zone axes [uvw] with |u|,|v|,|w| ≤ max_index, gcd 1, one of ±[uvw], shortest |t| first.

    With ``drop_equivalent`` axes related by the crystal's point group are kept once (the
    representative is the first in the sort order).

    Parameters
    ----------
    structure : pymatgen Structure, the conventional cell.
    max_index : largest |u|, |v|, |w|.
    drop_equivalent : keep one axis of each symmetry-equivalent family.
    symprec : symmetry tolerance, Å.

    Returns
    -------
    The zone axes as (u, v, w) tuples.
    """
    rng = range(-max_index, max_index + 1)
    cands = set()
    for u in rng:
        for v in rng:
            for w in rng:
                if (u, v, w) == (0, 0, 0) or reduce(math.gcd, (abs(u), abs(v), abs(w))) != 1:
                    continue
                cands.add(max((u, v, w), (-u, -v, -w)))
    lat = structure.lattice.matrix

    def key(a):
        return (round(float(np.linalg.norm(np.asarray(a) @ lat)), 6), tuple(-x for x in a))

    ordered = sorted(cands, key=key)
    if not drop_equivalent:
        return ordered
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    ops = SpacegroupAnalyzer(structure, symprec=symprec).get_symmetry_operations(cartesian=False)
    rots = {tuple(np.round(op.rotation_matrix).astype(int).ravel()) for op in ops}
    mats = [np.array(r).reshape(3, 3) for r in rots]
    seen, out = set(), []
    for a in ordered:
        if a in seen:
            continue
        out.append(a)
        for m in mats:  # direct-lattice directions transform with the rotation part itself
            b = tuple(int(x) for x in m @ np.array(a))
            seen.add(b)
            seen.add(tuple(-x for x in b))
    return out

