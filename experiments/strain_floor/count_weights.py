"""Fit weights from each vector's own counts (experiment).

Under shot noise the variance of a disk's position goes as 1/(its counts); the model's vector
intensities are detection scores, not counts. Here every model vector is weighted by the counts in
its disk on the measured pattern (background: the rim median), saturating at N0 electrons
(w = N / (N + N0): a systematic floor — above N0 counts, noise no longer sets the error), and the
strain fitted with reflection offsets. Clean files count as infinite dose (equal weights).

    python experiments/strain_floor/count_weights.py SBENCH_OUT VECTORS_DIR --dose 1e5 --n0 0,100,1000
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np

from fourdcrystal.io.vectors import VectorSet, read_vectors
from fourdcrystal.maps.strain import StrainConfig, strain_maps
from fourdcrystal.evaluation.strain_benchmark import file_truth


def disk_counts(pattern, ij, radius_px):
    h, w = pattern.shape
    out = np.zeros(len(ij))
    for n, (i, j) in enumerate(ij):
        i0, i1 = int(max(0, np.floor(i - radius_px - 3))), int(min(h, np.ceil(i + radius_px + 4)))
        j0, j1 = int(max(0, np.floor(j - radius_px - 3))), int(min(w, np.ceil(j + radius_px + 4)))
        yy, xx = np.mgrid[i0:i1, j0:j1]
        r = np.hypot(yy - i, xx - j)
        win = pattern[i0:i1, j0:j1]
        rim = (r > radius_px + 1) & (r <= radius_px + 3)
        bg = np.median(win[rim]) if rim.any() else 0.0
        out[n] = max(float(np.sum(win[r <= radius_px] - bg)), 0.0)
    return out


def vector_counts(result: Path, series_file: Path, radius_px: float) -> tuple[VectorSet, np.ndarray]:
    """The model's vectors of one predict result and the counts in each one's disk on the series file's patterns."""
    vs = read_vectors(result, "model")
    with h5py.File(result, "r") as r:
        centre = np.array(r.attrs["centre_px"], float)
        dk = json.loads(r.attrs["calibration"])["k_pixel_invA"]
    with h5py.File(series_file, "r") as h:
        d = h["data"][()].reshape(-1, *h["data"].shape[2:])
    return vs, np.concatenate([disk_counts(d[p], centre + vs.position(p)[0] / dk, radius_px)
                               for p in range(vs.positions)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("vectors")
    ap.add_argument("--dose", default="1e5")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n0", default="0,30,100,300,1000")
    ap.add_argument("--radius-px", type=float, default=4.8)
    a = ap.parse_args()
    n0s = [float(x) for x in a.n0.split(",")]
    agg = {}
    for series in sorted((Path(a.out) / "series" / a.split).iterdir()):
        for f in sorted(series.glob(f"series-*-{a.dose}.h5")):
            v = file_truth(f)
            vs, counts = vector_counts(Path(a.vectors) / f"{a.split}-{series.name}-{f.stem}-bragg.h5", f, a.radius_px)
            truth = v.strain.reshape(-1, 3)[1:]
            variants = {"squared": (vs, "squared")}
            for n0 in n0s:
                w = counts if n0 == 0 else counts / (counts + n0)
                if a.dose == "clean":
                    w = np.ones_like(counts)
                variants[f"counts N0={n0:g}"] = (VectorSet(**{**vars(vs), "intensity": w}), "intensity")
            for name, (vv, weights) in variants.items():
                try:
                    m = strain_maps(vv, StrainConfig(reference="0:1,0:1", weights=weights, tolerance=0.15,
                                                     correct="reference"))
                    est = np.stack([m[k].ravel() for k in ("exx", "eyy", "exy")], 1)[1:]
                    ok = np.isfinite(est).all(1)
                    e = 100 * np.sqrt(np.mean((est[ok] - truth[ok]) ** 2))
                except Exception:  # noqa: BLE001
                    e = np.nan
                agg.setdefault((name, v.thickness_A), []).append(e)
            print(series.name, f.stem, flush=True)
    for k in sorted(agg, key=lambda k: (k[1], k[0])):
        es = np.array(agg[k])
        print(f"{k[1]:6g} Å  {k[0]:18s} {np.sqrt(np.nanmean(es ** 2)):.3f} %")


if __name__ == "__main__":
    main()
