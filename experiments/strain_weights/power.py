"""Fit weights V_g^p for the model's vectors of a strain survey (experiment).

    python experiments/strain_weights/power.py SBENCH/vectors/HASH {tune|test} [--powers 1,2,3,4]

Re-fits the model's stored vectors (fourdcrystal strain-benchmark's predict results) with weights V_g^p and
the survey's model fit otherwise (tolerance 0.15, reflection offsets from the reference); prints the rms strain
error (%) per dose and thickness over the series of the split.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from fourdcrystal.io.vectors import read_vectors
from fourdcrystal.evaluation.strain_benchmark import score_fit, SeriesVectors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("vectors")
    ap.add_argument("split")
    ap.add_argument("--powers", default="1,2,3,4")
    ap.add_argument("--tolerance", type=float, default=0.15)
    ap.add_argument("--bench", default=None, help="the survey folder (default: two levels above VECTORS)")
    a = ap.parse_args()
    bench = Path(a.bench) if a.bench else Path(a.vectors).parent.parent
    cells: dict = {}
    for res in sorted(Path(a.vectors).glob(f"{a.split}-*-bragg.h5")):
        _, crystal, uvw, _, tag, dose, _ = res.stem.split("-")
        series = bench / "series" / a.split / f"{crystal}-{uvw}" / f"series-{tag}-{dose}.h5"
        with h5py.File(series, "r") as f:
            v = SeriesVectors(series, crystal, tuple(int(c) for c in f.attrs["zone_axis"]),
                         float(f.attrs["nominal_thickness_A"]), dose, f["truth/strain"][()], f["truth/rotation_deg"][()])
        m = read_vectors(res, "model")
        for p in (float(x) for x in a.powers.split(",")):
            v.methods["model"] = replace(m, intensity=np.clip(m.intensity, 0, None) ** (p / 2))
            r = score_fit(v, "model", {"weights": "squared", "tolerance": a.tolerance, "correct": "reference"})
            e = r["strain_rms_error_pct"]
            cells.setdefault((p, dose, v.thickness_A), []).append(1.0 if e is None or r["fitted"] < r["positions"] else e)
    for p in sorted({k[0] for k in cells}):
        print(f"V_g^{p:g}: " + "  ".join(f"{d}/{t:g}:{np.sqrt(np.mean(np.square(e))):.3f}"
                                      for (q, d, t), e in sorted(cells.items()) if q == p))


if __name__ == "__main__":
    main()
