"""The 3D orientation per position that ``strain --reference crystal`` writes, scored against the specimens' own.

Runs ``predict --tilt --baseline`` and ``strain --reference crystal`` (model's and baseline's vectors) on every file
of a tilted strain series (``scripts/strain_series.py --tilt-mrad``) and compares each position's orientation with
the truth the series stores (``/truth/orientation_matrix``), modulo the crystal's proper rotations:

* misorientation: the smallest rotation angle taking the measured orientation to a symmetry-equivalent truth;
* zone-axis error: the angle between where the measured and the true orientation put the zone axis (the tilt's
  share); in-plane: the misorientation left once both are laid on the zone axis;
* beside them, the misorientation of "on the zone axis" (the measured in-plane rotation, tilt 0), what an
  orientation without the tilt would be off by.

    python experiments/orientation/score.py SERIES_DIR --work WORK --json experiments/orientation/results.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer


def angle_mrad(r: np.ndarray) -> float:
    return float(1e3 * np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)))


def misorientation_mrad(u: np.ndarray, truth: np.ndarray, symmetry: list[np.ndarray]) -> float:
    """min over crystal rotations S (crystal Cartesian) of the angle of U S Tᵀ."""
    return min(angle_mrad(u @ s @ truth.T) for s in symmetry)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("series")
    ap.add_argument("--work", required=True)
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    series, work = Path(a.series), Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    truth_json = json.loads((series / "truth.json").read_text())
    if truth_json["structure"] != "Si":
        raise SystemExit("this scorer knows the series' default crystal (Si) only")
    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    cif = work / "Si.cif"
    si.to(filename=str(cif))
    uvw = truth_json["zone_axis"]
    # the point group's proper rotations in the crystal Cartesian frame (cubic: the fractional ones are Cartesian)
    symmetry = [op.rotation_matrix for op in SpacegroupAnalyzer(si).get_point_group_operations(cartesian=True)
                if np.linalg.det(op.rotation_matrix) > 0]
    axis = np.asarray(uvw, float) @ si.lattice.matrix
    axis /= np.linalg.norm(axis)
    rows = []
    for f in sorted(series.glob("series-t*.h5")):
        bragg = work / f"{f.stem}-bragg.h5"
        if not bragg.exists():
            subprocess.run(["fourdcrystal", "predict", str(f), "--tilt", "--baseline", "--out", str(bragg)],
                           check=True, capture_output=True, text=True)
        with h5py.File(f) as h:
            truth = h["truth/orientation_matrix"][()].reshape(-1, 3, 3)
            thickness, dose = float(h.attrs["thickness_A"]), str(h.attrs["dose"])
        for method in ("model", "baseline"):
            out = work / f"{f.stem}-{method}-orientation.h5"
            if not out.exists():
                r = subprocess.run(["fourdcrystal", "strain", str(bragg), "--method", method, "--reference", "crystal",
                                    "--structure", str(cif), "--zone-axis", *map(str, uvw), "--out", str(out)],
                                   capture_output=True, text=True)
                if r.returncode:
                    print(f"{out.name}: {r.stderr.strip() or r.stdout.strip()}", file=sys.stderr)
                    continue
            with h5py.File(out) as h:
                if "orientation_matrix" not in h:
                    continue
                u = h["orientation_matrix"][()].reshape(-1, 3, 3)
            mis, axis_err, inplane, flat = [], [], [], []
            for p in range(len(u)):
                if not np.isfinite(u[p]).all():
                    continue
                mis.append(misorientation_mrad(u[p], truth[p], symmetry))
                # where each puts the zone axis: the in-plane rotations leave it, only the tilt moves it
                axis_err.append(angle_mrad(_rotation_between(u[p] @ axis, truth[p] @ axis)))
                # the same orientation without its tilt: the zone axis laid back on the beam
                untilted = _rotation_between(u[p] @ axis, np.array([0.0, 0.0, 1.0])) @ u[p]
                flat.append(misorientation_mrad(untilted, truth[p], symmetry))
                # in-plane: both laid on the zone axis, what is left between them
                true_flat = _rotation_between(truth[p] @ axis, np.array([0.0, 0.0, 1.0])) @ truth[p]
                inplane.append(misorientation_mrad(untilted, true_flat, symmetry))
            rms = lambda x: float(np.sqrt(np.mean(np.square(x)))) if x else float("nan")  # noqa: E731
            rows.append({"thickness_A": thickness, "dose": dose, "method": method, "positions": len(u),
                         "fitted": len(mis), "misorientation_rms_mrad": rms(mis),
                         "zone_axis_error_rms_mrad": rms(axis_err), "inplane_error_rms_mrad": rms(inplane),
                         "untilted_misorientation_rms_mrad": rms(flat)})
            print(json.dumps(rows[-1]))
    Path(a.json).write_text(json.dumps({"series": str(series), "truth": {k: truth_json[k] for k in (
        "structure", "zone_axis", "scan_shape", "energy_eV", "semiangle_mrad", "thickness_A")},
        "tilt_max_mrad": float(np.abs(np.asarray(truth_json["tilt_mrad"])).max()), "rows": rows}, indent=1) + "\n")
    return 0


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The shortest rotation taking unit vector a to b (its angle is the angle between them)."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1 + c)


if __name__ == "__main__":
    sys.exit(main())
