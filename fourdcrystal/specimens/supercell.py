"""`fourdcrystal supercell`: turn a catalogue into a specimen manifest.

For each crystal: pick zone axes (low index first, symmetry-equivalent ones dropped), draw an
in-plane rotation φ, a small tilt and a lateral size, plan the supercell (periodic where one
fits, else the cut-box fallback) and write one table row per specimen. The specimens folder is
self-contained: ``specimens.csv`` (the table), ``crystals.json`` (the structures it uses, as
CIF) and ``manifest.json`` (provenance: config, seed, catalogue hash, software, counts).
:func:`load_specimen` rebuilds any row's atoms exactly.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from ..atomic import atomic_directory, write_text_atomic
from ..catalog.catalogue import FILENAME as CATALOGUE_FILE
from ..catalog.catalogue import read_catalogue
from ..errors import FourdError
from ..progress import progress
from .specimen import (CellPlan, Specimen, axis_text, build_specimen, check_strain, check_tilt, check_zone_axis,
                       distinct_zone_axes, plan_cell)
from ..versions import software_versions

log = logging.getLogger("fourdcrystal")

SCHEMA = "fourdcrystal.specimens/1"
TABLE = "specimens.csv"
CRYSTALS = "crystals.json"
MANIFEST = "manifest.json"
COLUMNS = ["specimen_id", "crystal_id", "formula", "prototype", "zone_axis", "phi_deg", "phi_realized_deg",
           "tilt_x_mrad", "tilt_y_mrad", "tilt_mode", "lateral_size_A", "thicknesses_A", "mode", "cell_matrix",
           "strain", "cell_x_A", "cell_y_A", "repeats", "box_x_A", "box_y_A", "period_z_A", "seed",
           "strain_xx", "strain_yy", "strain_xy"]
# Columns a table written before they existed may lack; read as these values.
OPTIONAL_COLUMNS = {"strain_xx": "0.0", "strain_yy": "0.0", "strain_xy": "0.0"}


@dataclass(frozen=True)
class SpecimenRow:
    specimen_id: str
    crystal_id: str
    formula: str
    prototype: str
    zone_axis: tuple[int, int, int]
    phi_deg: float
    tilt_mrad: tuple[float, float]
    tilt_mode: str
    lateral_size_A: float
    thicknesses_A: tuple[float, ...]
    plan: CellPlan  # as planned, before the applied strain (cell_x_A, box_x_A, ... are unstrained)
    seed: int
    applied_strain: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (ε_xx, ε_yy, ε_xy), fractions

    def to_csv_row(self) -> dict[str, str]:
        p = self.plan
        return {
            "specimen_id": self.specimen_id, "crystal_id": self.crystal_id, "formula": self.formula,
            "prototype": self.prototype, "zone_axis": " ".join(map(str, self.zone_axis)),
            "phi_deg": repr(self.phi_deg), "phi_realized_deg": repr(p.phi_deg),
            "tilt_x_mrad": repr(self.tilt_mrad[0]), "tilt_y_mrad": repr(self.tilt_mrad[1]),
            "tilt_mode": self.tilt_mode, "lateral_size_A": repr(self.lateral_size_A),
            "thicknesses_A": ";".join(repr(t) for t in self.thicknesses_A), "mode": p.mode,
            "cell_matrix": ";".join(" ".join(map(str, r)) for r in p.matrix) if p.matrix else "",
            "strain": repr(p.strain), "cell_x_A": repr(p.cell_A[0]), "cell_y_A": repr(p.cell_A[1]),
            "repeats": f"{p.repeats[0]} {p.repeats[1]}", "box_x_A": f"{p.box_A[0]:.6f}",
            "box_y_A": f"{p.box_A[1]:.6f}", "period_z_A": repr(p.period_z_A), "seed": str(self.seed),
            "strain_xx": repr(self.applied_strain[0]), "strain_yy": repr(self.applied_strain[1]),
            "strain_xy": repr(self.applied_strain[2]),
        }

    @classmethod
    def from_csv_row(cls, r: dict[str, str], where: str) -> "SpecimenRow":
        try:
            matrix = tuple(tuple(int(v) for v in row.split()) for row in r["cell_matrix"].split(";")) \
                if r["cell_matrix"] else None
            plan = CellPlan(r["mode"], float(r["phi_realized_deg"]), matrix, float(r["strain"]),
                            (float(r["cell_x_A"]), float(r["cell_y_A"])),
                            tuple(int(v) for v in r["repeats"].split()), float(r["period_z_A"]))
            return cls(r["specimen_id"], r["crystal_id"], r["formula"], r["prototype"],
                       tuple(int(v) for v in r["zone_axis"].split()), float(r["phi_deg"]),
                       (float(r["tilt_x_mrad"]), float(r["tilt_y_mrad"])), r["tilt_mode"],
                       float(r["lateral_size_A"]), tuple(float(t) for t in r["thicknesses_A"].split(";")),
                       plan, int(r["seed"]),
                       tuple(float(r.get(k) or OPTIONAL_COLUMNS[k]) for k in ("strain_xx", "strain_yy", "strain_xy")))
        except (KeyError, ValueError, TypeError) as exc:
            raise FourdError(f"{where}: malformed specimen row ({type(exc).__name__}: {exc})") from None


def specimen_id(crystal_id: str, uvw, k: int) -> str:
    """``{crystal}__{+u+v+w}__NN``: unique per crystal, zone axis and draw."""
    return f"{crystal_id}__{''.join(f'{x:+d}' for x in uvw)}__{k:02d}"


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def _uniform(rng: np.random.Generator, lo_hi) -> float:
    lo, hi = lo_hi
    return float(lo if hi == lo else rng.uniform(lo, hi))


def _structure(cif: str, where: str = "crystal") -> Structure:
    from ..catalog.sources import check_species

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_str(cif, fmt="cif")
    except Exception as exc:  # pymatgen raises ValueError, KeyError, IndexError ... on bad CIF text
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FourdError(f"{where}: its CIF text cannot be read ({msg})") from None
    check_species(structure, where)
    return structure


def draw_strain(rng: np.random.Generator, strain_pct, shear: bool = True) -> tuple[float, float, float]:
    """The applied strain (ε_xx, ε_yy, ε_xy) as fractions from the config's ``strain_pct``.

    ``strain_pct`` is a fixed tensor [ε_xx, ε_yy, ε_xy] in %, or one number s ≥ 0: each
    component drawn uniformly from [−s, s] % (ε_xy = 0 when ``shear`` is False). The caller
    passes a stream of its own, so specimens keep their geometry with or without strain.
    """
    if isinstance(strain_pct, (list, tuple)):
        return tuple(float(v) / 100.0 for v in strain_pct)  # type: ignore[return-value]
    s = float(strain_pct)
    if s == 0.0:
        return (0.0, 0.0, 0.0)
    exx, eyy, exy = (float(v) for v in rng.uniform(-s, s, size=3) / 100.0)
    return (exx, eyy, exy if shear else 0.0)


def plan_specimens(catalogue_path: str | Path, cfg: dict) -> tuple[list[SpecimenRow], dict[str, dict], dict]:
    """Plan every specimen of a catalogue; returns (rows, crystals used, provenance header)."""
    cat = read_catalogue(catalogue_path)
    # floats are written with repr() so a row read back rebuilds bit-identical atoms
    rows: list[SpecimenRow] = []
    used: dict[str, dict] = {}
    skipped = 0
    for crystal in progress(cat.crystals, desc="planning specimens", unit="crystal"):
        cid = crystal["id"]
        try:
            structure = _structure(crystal["cif"], f"{catalogue_path}: crystal {cid}")
        except FourdError as exc:
            if not cfg["skip_bad"]:
                raise FourdError(f"{exc} (pass `skip_bad` to leave it out)") from None
            log.warning("skipping: %s", exc)
            skipped += 1
            continue
        rng = _rng(cfg["seed"], cid)
        strain_rng = _rng(cfg["seed"], f"strain:{cid}")  # its own stream: geometry draws stay as without strain
        axes = distinct_zone_axes(structure, cfg["max_index"], cfg["drop_equivalent"])
        if cfg["axis_choice"] == "random":
            axes = [axes[i] for i in sorted(rng.permutation(len(axes))[: cfg["zone_axes_per_crystal"]])]
        else:
            axes = axes[: cfg["zone_axes_per_crystal"]]
        for uvw in axes:
            for k in range(cfg["specimens_per_axis"]):
                phi = _uniform(rng, cfg["phi_deg"])
                mag, direction = cfg["tilt_mrad_max"] * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
                tilt = (round(mag * math.cos(direction), 6), round(mag * math.sin(direction), 6))
                size = _uniform(rng, cfg["lateral_size_A"])
                seed = int(rng.integers(0, 2**31 - 1))
                strain = draw_strain(strain_rng, cfg["strain_pct"], cfg["strain_shear"])
                try:
                    check_tilt(tilt)
                    plan = plan_cell(structure.lattice.matrix, uvw, phi, size, cfg["strain_tol"], cfg["phi_tol_deg"],
                                     cfg["cell_fallback"])
                except FourdError as exc:
                    msg = f"crystal {cid} along {axis_text(uvw)}: {exc}"
                    if not cfg["skip_bad"]:
                        raise FourdError(msg + " (raise supercell.lateral_size_A or pass `skip_bad`)") from None
                    log.warning("skipping: %s", msg)
                    skipped += 1
                    continue
                rows.append(SpecimenRow(specimen_id(cid, uvw, k), cid, crystal["formula"], crystal["prototype"], uvw,
                                        phi, tilt, cfg["tilt_mode"], size, tuple(sorted(cfg["thicknesses_A"])), plan, seed,
                                        strain))
                used[cid] = {k2: crystal[k2] for k2 in ("id", "formula", "prototype", "source", "source_id",
                                                         "space_group_number", "cif")}
    if not rows:
        raise FourdError("no specimen could be planned from this catalogue; see the warnings above")
    cat_file = Path(catalogue_path)
    cat_file = cat_file / CATALOGUE_FILE if cat_file.is_dir() else cat_file
    header = {
        "schema": SCHEMA,
        "catalogue": str(catalogue_path),
        "catalogue_sha256": hashlib.sha256(cat_file.read_bytes()).hexdigest(),
        "config": cfg,
        "seed": cfg["seed"],
        "counts": {"specimens": len(rows), "crystals": len(used), "skipped": skipped,
                   "periodic": sum(r.plan.mode == "periodic" for r in rows),
                   "cut": sum(r.plan.mode == "cut" for r in rows)},
        "software": software_versions(),
        "conventions": "zone axes in the catalogue's conventional cell; phi counter-clockwise about +z seen "
                       "from +z; tilt (x, y) in mrad; lengths in Å; see fourdcrystal.specimens.specimen",
    }
    return rows, used, header


def write_specimens(out_dir: str | Path, rows: list[SpecimenRow], crystals: dict[str, dict], header: dict,
                    overwrite: bool = False) -> Path:
    """Write the specimens folder atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r.to_csv_row())
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        write_text_atomic(tmp / TABLE, buf.getvalue())
        write_text_atomic(tmp / CRYSTALS, json.dumps(crystals, indent=1, sort_keys=True) + "\n")
        write_text_atomic(tmp / MANIFEST, json.dumps(header, indent=1, sort_keys=True) + "\n")
    return Path(out_dir)


@dataclass
class SpecimenSet:
    folder: Path
    header: dict[str, Any]
    rows: list[SpecimenRow]
    crystals: dict[str, dict]

    def row(self, specimen_id: str) -> SpecimenRow:
        for r in self.rows:
            if r.specimen_id == specimen_id:
                return r
        near = [r.specimen_id for r in self.rows if specimen_id.split("__")[0] in r.specimen_id][:3]
        raise FourdError(f"no specimen {specimen_id!r} in {self.folder / TABLE}"
                         + (f"; similar: {', '.join(near)}" if near else ""))


def read_specimens(folder: str | Path) -> SpecimenSet:
    """Read and check a specimens folder."""
    folder = Path(folder)
    if not (folder / TABLE).exists():
        raise FourdError(f"specimen manifest {folder / TABLE} not found; run fourdcrystal supercell first")
    try:
        header = json.loads((folder / MANIFEST).read_text())
        crystals = json.loads((folder / CRYSTALS).read_text())
    except (OSError, ValueError) as exc:
        raise FourdError(f"specimens folder {folder} is incomplete or unreadable: {exc}") from None
    if header.get("schema") != SCHEMA:
        raise FourdError(f"{folder / MANIFEST}: schema {header.get('schema')!r}, expected {SCHEMA!r}")
    with open(folder / TABLE, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(COLUMNS) - set(reader.fieldnames or []) - set(OPTIONAL_COLUMNS)
        if missing:
            raise FourdError(f"{folder / TABLE}: missing columns {', '.join(sorted(missing))}")
        rows = [SpecimenRow.from_csv_row(r, f"{folder / TABLE} line {i + 2}") for i, r in enumerate(reader)]
    if not rows:
        raise FourdError(f"{folder / TABLE} lists no specimens")
    for r in rows:
        try:
            check_strain(r.applied_strain)
        except FourdError as exc:
            raise FourdError(f"{folder / TABLE}: specimen {r.specimen_id}: {exc}") from None
        if r.crystal_id not in crystals:
            raise FourdError(f"{folder / TABLE}: specimen {r.specimen_id} names crystal {r.crystal_id}, "
                             f"absent from {CRYSTALS}")
    return SpecimenSet(folder, header, rows, crystals)


def load_specimen(specimens: SpecimenSet, specimen_id: str) -> Specimen:
    """Rebuild one specimen's atoms exactly from its manifest row."""
    row = specimens.row(specimen_id)
    structure = _structure(specimens.crystals[row.crystal_id]["cif"])
    return build_specimen(structure, row.zone_axis, row.phi_deg, row.tilt_mrad, row.lateral_size_A,
                          list(row.thicknesses_A), plan=row.plan, tilt_mode=row.tilt_mode, strain=row.applied_strain)


def summary(rows: list[SpecimenRow], header: dict) -> str:
    c = header["counts"]
    sizes = [r.plan.box_A[0] * r.plan.box_A[1] for r in rows]
    return (f"{c['specimens']} specimens from {c['crystals']} crystals: {c['periodic']} periodic, {c['cut']} cut-box "
            f"fallback, {c['skipped']} skipped; lateral box {min(sizes) ** 0.5:.1f}-{max(sizes) ** 0.5:.1f} Å; "
            f"thicknesses {', '.join(f'{t:g}' for t in rows[0].thicknesses_A)} Å")


def single_structure_specimens(path: str | Path, zone_axis, thicknesses_A, phi_deg: float = 0.0,
                               tilt_mrad=(0.0, 0.0), lateral_size_A: float = 40.0, tilt_mode: str = "beam",
                               strain_tol: float = 0.005, seed: int = 0, strain=(0.0, 0.0, 0.0)):
    """One specimen of one CIF/POSCAR file (the microscopist's mode): (rows, crystals, header).

    ``strain`` is the applied in-plane strain (ε_xx, ε_yy, ε_xy) as fractions.
    """
    from ..catalog.prototypes import LabelError, label_structure
    from ..catalog.sources import read_structure_file, safe_id

    path = Path(path)
    thicknesses_A = list(thicknesses_A)
    if not thicknesses_A or not all(math.isfinite(float(t)) and float(t) > 0 for t in thicknesses_A):
        raise FourdError(f"`thicknesses_A` {','.join(f'{float(t):g}' for t in thicknesses_A)}: expected positive "
                         f"thicknesses in Å")
    if not (math.isfinite(float(lateral_size_A)) and float(lateral_size_A) > 0):
        raise FourdError(f"`lateral_size_A` {float(lateral_size_A):g}: expected a positive lateral box size in Å")
    if not math.isfinite(float(phi_deg)) or not all(math.isfinite(float(t)) for t in tilt_mrad):
        raise FourdError("`phi_deg` and `tilt_mrad` must be finite numbers (degrees, mrad)")
    if not path.is_file():
        raise FourdError(f"structure file {path} not found")
    structure = read_structure_file(path)
    try:
        info = label_structure(structure)
    except LabelError as exc:
        raise FourdError(f"{path}: {exc}") from None
    conv = info.conventional
    uvw = check_zone_axis(zone_axis)
    tilt = check_tilt(tilt_mrad)
    strain = check_strain(strain)
    plan = plan_cell(conv.lattice.matrix, uvw, phi_deg, lateral_size_A, strain_tol, 2.0, "nearest")
    cid = f"file-{safe_id(path.stem)}"
    formula = conv.composition.reduced_formula
    row = SpecimenRow(specimen_id(cid, uvw, 0), cid, formula, info.prototype, uvw,
                      float(phi_deg), tilt, tilt_mode, float(lateral_size_A),
                      tuple(sorted(float(t) for t in thicknesses_A)), plan, int(seed), strain)
    cif = conv.to(fmt="cif")
    crystals = {cid: {"id": cid, "formula": formula, "prototype": info.prototype, "source": "files",
                      "source_id": str(path), "space_group_number": info.space_group_number, "cif": cif}}
    header = {
        "schema": SCHEMA, "catalogue": None, "catalogue_sha256": hashlib.sha256(cif.encode()).hexdigest(),
        "config": {"structure": str(path), "zone_axis": list(uvw), "phi_deg": phi_deg, "tilt_mrad": list(tilt),
                   "lateral_size_A": lateral_size_A, "thicknesses_A": list(row.thicknesses_A), "seed": seed,
                   "strain": list(strain)},
        "seed": seed,
        "counts": {"specimens": 1, "crystals": 1, "skipped": 0, "periodic": int(plan.mode == "periodic"),
                   "cut": int(plan.mode == "cut")},
        "software": software_versions(),
        "conventions": "single-structure mode; see fourdcrystal.specimens.specimen",
    }
    return [row], crystals, header
