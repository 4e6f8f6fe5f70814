"""Fit weights from the scan itself (experiment): each reflection's position variance, estimated from its
residuals over the scan's positions, weighs it in a second fit (w = 1 / σ²_hk, iteratively reweighted least
squares with one weight per reflection). A faint outer disk that scatters under shot noise then counts for
little, a sharp one for much, whatever the detector's own score says.

    python experiments/strain_counts/scan_weights.py OUT --json experiments/strain_counts/scan-weights-sbench240.json

Scored like the survey (reference position 0, tolerance 0.1, reflection offsets), every method, every dose.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fourdcrystal import lattice
from fourdcrystal.evaluation.strain_benchmark import file_truth, vectors_folder
from fourdcrystal.io.vectors import read_vectors
from fourdcrystal.maps.strain import StrainConfig, position_vectors, strain_maps


def scan_weighted_strain(vectors, first_weights: str, floor: float, passes: int = 2) -> np.ndarray:
    """(positions, 3) exx, eyy, exy relative to position 0 from the reweighted fits (NaN where none)."""
    cfg = StrainConfig(reference="0:1,0:1", weights=first_weights, tolerance=0.1, correct="reference")
    m = strain_maps(vectors, cfg)  # the first fit: its basis as the start
    start = m["start_basis"]
    n = vectors.positions
    qs, ws = zip(*(position_vectors(vectors, p, cfg) for p in range(n)))
    w_hk: dict | None = None
    for _ in range(passes + 1):
        fits = []
        for p in range(n):
            q, w = qs[p], ws[p]
            fit0 = lattice.fit_lattice(q, start, w, tolerance=0.1, min_vectors=4)
            if fit0 is not None and w_hk is not None:
                hk = [tuple(h) for h in fit0.indices.tolist()]
                w = np.array([w_hk.get(h, 0.0) for h in hk])
                fit0 = lattice.fit_lattice(q, start, w, tolerance=0.1, min_vectors=4) if (w > 0).sum() >= 4 else None
            fits.append((q, w, fit0))
        offsets = lattice.reflection_offsets([(fits[0][0], fits[0][2])])
        fits = [(q, w, None if f is None else lattice.corrected_fit(q, w, f, offsets, 0.1, 4)) for q, w, f in fits]
        # each reflection's mean squared residual over the non-reference positions (Å⁻²)
        res: dict = {}
        for p, (q, w, f) in enumerate(fits):
            if f is None or p == 0:
                continue
            hk_used = f.indices[f.used]
            delta = np.array([offsets[tuple(h)] for h in hk_used.tolist()])
            r = q[f.used] - delta @ f.basis.T - f.origin - hk_used @ f.basis.T
            for h, d in zip(map(tuple, hk_used.tolist()), r):
                res.setdefault(h, []).append(float(d @ d))
        var = {h: np.mean(v) for h, v in res.items() if len(v) >= 2}
        if not var:
            break
        med = float(np.median(list(var.values())))
        w_hk = {h: 1.0 / max(v, floor * med) for h, v in var.items()}
        w_hk[(0, 0)] = max(w_hk.values())
    bases = [None if f is None else f.basis for _, _, f in fits]
    out = np.full((n, 3), np.nan)
    if bases[0] is None:
        return out
    for p, b in enumerate(bases):
        if b is not None:
            out[p] = lattice.strain_rotation(lattice.deformation(b, bases[0]))[:3]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="a finished strain-benchmark folder")
    ap.add_argument("--floor", default="0.1,0.3", help="variance floor, fractions of the median reflection's")
    ap.add_argument("--json")
    a = ap.parse_args()
    floors = [float(x) for x in a.floor.split(",")]
    report = json.loads((Path(a.out) / "report.json").read_text())  # its own predict results, of the survey's several
    work = vectors_folder(a.out, report["model_weights_sha256"], report["peak_settings"])
    first = {"model": "quartic", "baseline": "none"}
    rows = []
    for split in ("tune", "test"):
        for series in sorted((Path(a.out) / "series" / split).iterdir()):
            for f in sorted(series.glob("series-*.h5")):
                v = file_truth(f)
                truth = v.strain.reshape(-1, 3)
                res = work / f"{split}-{series.name}-{f.stem}-bragg.h5"
                for method, w0 in first.items():
                    vs = read_vectors(res, method)
                    variants = {"survey fit": None} | {f"scan weights floor {fl:g}": fl for fl in floors}
                    for name, fl in variants.items():
                        try:
                            if fl is None:
                                m = strain_maps(vs, StrainConfig(reference="0:1,0:1", weights=w0, tolerance=0.1,
                                                                 correct="reference"))
                                est = np.stack([m[k].ravel() for k in ("exx", "eyy", "exy")], 1)
                            else:
                                est = scan_weighted_strain(vs, w0, fl)
                        except Exception:  # noqa: BLE001 - a fit that fails everywhere
                            est = np.full_like(truth, np.nan)
                        ok = np.isfinite(est).all(1)
                        ok[0] = False
                        e = float(100 * np.sqrt(np.mean((est[ok] - truth[ok]) ** 2))) if ok.any() else None
                        rows.append({"split": split, "series": series.name, "dose": v.dose, "thickness_A": v.thickness_A,
                                     "method": method, "variant": name, "strain_rms_error_pct": e,
                                     "fitted": int(ok.sum()), "positions": len(truth) - 1})
            print(split, series.name, flush=True)
    table: dict = {}
    for r in rows:
        table.setdefault((r["split"], r["dose"], r["method"], r["variant"]), {}).setdefault(r["thickness_A"], []).append(r)
    summary = {}
    for (split, dose, method, variant), by_t in sorted(table.items()):
        cells = {}
        for t, rs in sorted(by_t.items()):
            n = sum(r["fitted"] for r in rs if r["strain_rms_error_pct"] is not None)
            s = sum(r["fitted"] * r["strain_rms_error_pct"] ** 2 for r in rs if r["strain_rms_error_pct"] is not None)
            cells[f"{t:g}"] = [round(float(np.sqrt(s / n)), 4) if n else None, n, sum(r["positions"] for r in rs)]
        summary[f"{split} {dose} {method} {variant}"] = cells
        print(f"{split:4s} {dose:5s} {method:8s} {variant:24s} " + "  ".join(
            f"{t} Å " + (f"{c[0]:.3f}" if c[0] is not None else "–") + f" ({c[1]}/{c[2]})" for t, c in cells.items()))
    if a.json:
        Path(a.json).write_text(json.dumps({"survey": a.out, "floors": floors, "summary": summary, "rows": rows},
                                           indent=1) + "\n")


if __name__ == "__main__":
    main()
