"""A pixel-level Laue tilt (experiment): fit every pixel of each Friedel pair of disks, not the disks' means.

The shipped classical tilt (``detection.tilt.laue_tilt``) compares each pair's share of brightness, B = Ī_g /
(Ī_g + Ī_−g), with a kinematic rocking curve averaged over the disks: where the rocking curve is wider than a
disk it reads only the gradient across the pair. Inside a disk each pixel q stands for its own incident
direction, s_g(q) = θ·g + λ(|g|²/2 − q·g), so where the curve is narrow enough the bright line's position in
the disk tells θ directly. Here, per θ on a grid, each pair's pixels are fitted as I(q) = A·f(s(q)) + c
(f = 1/(1 + (s/σ)²), one A ≥ 0 and one c per pair: Friedel's law gives g and −g the same |V_g|), and θ is the
least summed misfit (each pair's residual over its mean intensity squared). Scored as explore.py of
experiments/tilt_classical (exact reflection positions, the shards' true crystal tilt):

    python experiments/tilt_pixels/explore.py DATASET --split val --limit 120 --sigma 0.001,0.002,0.004 --doses clean,1e5
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fourdcrystal.simulation.optics import wavelength_A

# the sample loading and the choice of Friedel pairs are tilt_classical/explore.py's (a sibling script)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tilt_classical"))
from explore import labelled_samples, pair_disks  # noqa: E402


def pair_pixels(pattern, centre, dk, g_list, radius_invA):
    """Each Friedel pair's pixels: g of their disk (n, 2), q (n, 2) Å⁻¹, intensity (n,), pair index (n,)."""
    h, w = pattern.shape
    ii, jj = np.mgrid[0:h, 0:w]
    qi, qj = (ii - centre[0]) * dk[0], (jj - centre[1]) * dk[1]
    G, Q, I, P = [], [], [], []
    for got in pair_disks(qi, qj, pattern, g_list, radius_invA):
        k = len(P) // 2  # this pair's index: every pair kept so far added two disks
        for gg, q, v in got:
            G.append(np.broadcast_to(gg, q.shape))
            Q.append(q)
            I.append(v)
            P.append(np.full(len(v), k))
    if not G:
        return None
    return np.concatenate(G), np.concatenate(Q), np.concatenate(I).astype(float), np.concatenate(P)


def pixel_tilt(pattern, centre, dk, g_list, energy_eV, radius_invA, sigma_invA, span_mrad=12.0, min_pairs=3):
    got = pair_pixels(pattern, centre, dk, g_list, radius_invA)
    if got is None:
        return np.array([np.nan, np.nan])
    g, q, y, pair = got
    starts = np.r_[0, np.nonzero(np.diff(pair))[0] + 1]
    n_pairs = len(starts)
    if n_pairs < min_pairs or np.linalg.matrix_rank(g[starts]) < 2:
        return np.array([np.nan, np.nan])
    lam = wavelength_A(energy_eV)
    b = lam * ((g * g).sum(1) / 2 - (q * g).sum(1))
    n = np.diff(np.r_[starts, len(y)]).astype(float)
    sy = np.add.reduceat(y, starts)
    syy = np.add.reduceat(y * y, starts)
    mean = sy / n
    scale = np.maximum(mean, 1e-12) ** 2
    var_y = syy - sy * sy / n

    def misfit(grid):  # grid (m, 2) rad → (m,)
        s = grid @ g.T + b[None, :]
        f = 1.0 / (1.0 + (s / sigma_invA) ** 2)
        sf = np.add.reduceat(f, starts, axis=1)
        sff = np.add.reduceat(f * f, starts, axis=1)
        sfy = np.add.reduceat(f * y[None, :], starts, axis=1)
        cov = sfy - sf * sy / n
        var_f = np.maximum(sff - sf * sf / n, 1e-300)
        rss = var_y - np.maximum(cov, 0.0) ** 2 / var_f  # A ≥ 0: a bright line, not a dark one
        return (rss / scale).sum(1)

    t = np.arange(-span_mrad, span_mrad + 1e-9, 0.5) * 1e-3
    grid = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    best = grid[np.argmin(misfit(grid))]
    if np.abs(best).max() >= span_mrad * 1e-3 - 1e-12:
        return np.array([np.nan, np.nan])
    for step in (0.1e-3, 0.02e-3):
        t = np.arange(-5, 6) * step
        grid = best + np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
        best = grid[np.argmin(misfit(grid))]
    return best * 1e3


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=120)
    ap.add_argument("--sigma", default="0.001,0.002,0.004")
    ap.add_argument("--doses", default="clean,1e5")
    ap.add_argument("--json")
    a = ap.parse_args()
    from fourdcrystal.detection.tilt import TiltSettings, laue_tilt

    sigmas = [float(s) for s in a.sigma.split(",")]
    res = {}
    t0 = time.time()
    for s, tilt, centre, q, r in labelled_samples(a.dataset, a.split, a.limit, a.doses.split(",")):
        shipped = laue_tilt(s.pattern, centre, s.dk_invA, q, s.energy_eV, r, TiltSettings()).tilt_mrad
        res.setdefault((s.dose, "shipped disk-mean fit"), []).append((tilt, shipped, s.thickness_A))
        for sig in sigmas:
            est = pixel_tilt(s.pattern, centre, s.dk_invA, q, s.energy_eV, r, sig)
            res.setdefault((s.dose, f"pixel fit sigma {sig:g}"), []).append((tilt, est, s.thickness_A))
    print(f"{time.time() - t0:.0f} s")
    out = []
    for (dose, name), rows in res.items():
        tru = np.array([r[0] for r in rows]); est = np.array([r[1] for r in rows]); th = np.array([r[2] for r in rows])
        ok = np.isfinite(est).all(1)
        err = np.linalg.norm(est - tru, axis=1)
        zero = np.linalg.norm(tru, axis=1)
        row = {"dose": dose, "estimate": name, "rms_mrad": float(np.sqrt(np.mean(err[ok] ** 2))),
               "zero_mrad": float(np.sqrt(np.mean(zero ** 2))), "failed": int((~ok).sum()), "n": len(rows)}
        for lo, hi in ((0, 200), (200, 400), (400, 2000)):
            m = ok & (th >= lo) & (th < hi)
            if m.any():
                row[f"{lo}-{hi} A"] = [float(np.sqrt(np.mean(err[m] ** 2))), float(np.sqrt(np.mean(zero[m] ** 2)))]
        c = float(np.sum(est[ok] * tru[ok]) / np.sum(est[ok] ** 2))
        row["ls_gain"] = c
        out.append(row)
        print(json.dumps(row))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
