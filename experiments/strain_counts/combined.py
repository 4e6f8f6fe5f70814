"""Model vectors weighed by their height to the fourth power times a shot-noise factor from their own disk's
counts, w = h⁴ · N / (N + N0) (experiment). N: the counts in the vector's disk on the measured pattern, background
(rim median) taken off; N0 the counts above which noise no longer sets a disk's position error. Noise-free files
keep h⁴. Scored like the survey (reference position 0, tolerance 0.1, reflection offsets), on the tuning series
(to choose N0) and on the test series.

    python experiments/strain_counts/combined.py OUT --n0 30,100,300,1000,3000 --json experiments/strain_counts/results-sbench240.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fourdcrystal.evaluation.strain_benchmark import file_truth, vectors_folder
from fourdcrystal.io.vectors import VectorSet
from fourdcrystal.maps.strain import StrainConfig, strain_maps


def _count_weights():
    """experiments/strain_floor/count_weights.py (a script beside this one, not a package): its disk counts."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "strain_floor" / "count_weights.py"
    spec = importlib.util.spec_from_file_location("count_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="a finished strain-benchmark folder")
    ap.add_argument("--n0", default="30,100,300,1000,3000")
    ap.add_argument("--doses", default="1e5,1e4")
    ap.add_argument("--radius-px", type=float, default=4.8, help="disk radius on the detector, px")
    ap.add_argument("--json")
    a = ap.parse_args()
    n0s = [float(x) for x in a.n0.split(",")]
    report = json.loads((Path(a.out) / "report.json").read_text())  # its own predict results, of the survey's several
    work = vectors_folder(a.out, report["model_weights_sha256"], report["peak_settings"])
    cw = _count_weights()
    rows = []
    for split in ("tune", "test"):
        for series in sorted((Path(a.out) / "series" / split).iterdir()):
            for dose in a.doses.split(","):
                for f in sorted(series.glob(f"series-*-{dose}.h5")):
                    v = file_truth(f)
                    vs, counts = cw.vector_counts(work / f"{split}-{series.name}-{f.stem}-bragg.h5", f, a.radius_px)
                    truth = v.strain.reshape(-1, 3)[1:]
                    h4 = np.clip(vs.intensity, 0, None) ** 4
                    variants = {"quartic": h4} | {f"quartic x counts N0={n0:g}": h4 * counts / (counts + n0)
                                                  for n0 in n0s} | {f"counts N0={n0:g}": counts / (counts + n0)
                                                                      for n0 in n0s}
                    for name, w in variants.items():
                        vv = VectorSet(**{**vars(vs), "intensity": w})
                        try:
                            m = strain_maps(vv, StrainConfig(reference="0:1,0:1", weights="intensity",
                                                             tolerance=0.1, correct="reference"))
                            est = np.stack([m[k].ravel() for k in ("exx", "eyy", "exy")], 1)[1:]
                            ok = np.isfinite(est).all(1)
                            e = float(100 * np.sqrt(np.mean((est[ok] - truth[ok]) ** 2))) if ok.any() else None
                            fitted = int(ok.sum())
                        except Exception:  # noqa: BLE001 - a fit that fails everywhere
                            e, fitted = None, 0
                        rows.append({"split": split, "series": series.name, "dose": dose,
                                     "thickness_A": v.thickness_A, "weights": name, "strain_rms_error_pct": e,
                                     "fitted": fitted, "positions": len(truth)})
                    print(split, series.name, f.stem, flush=True)
    summary = {}
    for r in rows:
        summary.setdefault((r["split"], r["dose"], r["thickness_A"], r["weights"]), []).append(r)
    table = {}
    for (split, dose, t, name), rs in sorted(summary.items()):
        n = sum(r["fitted"] for r in rs if r["strain_rms_error_pct"] is not None)
        s = sum(r["fitted"] * r["strain_rms_error_pct"] ** 2 for r in rs if r["strain_rms_error_pct"] is not None)
        table.setdefault(f"{split} {dose}", {}).setdefault(name, {})[f"{t:g}"] = (
            round(float(np.sqrt(s / n)), 4) if n else None, n, sum(r["positions"] for r in rs))
    for key, by in table.items():
        print(key)
        for name, cells in by.items():
            print(f"  {name:28s} " + "  ".join(f"{t} Å {c[0]:.3f} ({c[1]}/{c[2]})" if c[0] is not None else f"{t} Å –"
                                               for t, c in cells.items()))
    if a.json:
        Path(a.json).write_text(json.dumps({"survey": a.out, "n0": n0s, "table": table, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
