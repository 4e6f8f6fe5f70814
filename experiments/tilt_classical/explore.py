"""Classical out-of-plane tilt from the disks' excitation (experiment): score a Laue-circle / Bragg-line
estimator on a split of a data set against the shards' true tilt.

    python experiments/tilt_classical/explore.py DATASET --split val --limit 120 --sigma 0.002,0.004 --doses clean,1e5
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from fourdcrystal.evaluation.evaluate import EvalConfig, split_samples
from fourdcrystal.simulation import shards
from fourdcrystal.simulation.optics import disk_radius_invA, wavelength_A
from fourdcrystal.simulation.truth import ABSENT
from fourdcrystal.training.data import open_dataset


def representatives(g_list, radius_invA):
    """One reflection of each Friedel pair, clear of the zero disk (|g| ≥ 2.5 disk radii) and of the pairs
    already taken."""
    reps = []
    for g in g_list:
        if np.hypot(*g) < 2.5 * radius_invA:
            continue
        if any(np.hypot(*(g - r)) < radius_invA or np.hypot(*(g + r)) < radius_invA for r in reps):
            continue
        reps.append(np.asarray(g, float))
    return reps


def labelled_samples(dataset, split, limit, doses):
    """Each evaluation sample of the split's first ``limit`` locations at ``doses`` ("clean" or e⁻ per pattern),
    with its true crystal tilt (mrad), centre (px), exact reflection positions (Å⁻¹) and disk radius (Å⁻¹)."""
    index, where, info = open_dataset(dataset)
    cfg = EvalConfig(split=split, doses_e=tuple(None if d == "clean" else float(d) for d in doses))
    tilts = {}
    for s in split_samples(None, dataset, where[split][:limit], cfg):
        key = (s.shard, s.row)
        if key not in tilts:
            with shards.Shard(f"{dataset}/{s.shard}") as sh:
                tilts[key] = -np.asarray(sh.meta("tilt_mrad")[s.row], float)  # the crystal's tilt: minus the beam's
        ex = s.exact
        h, w = s.pattern.shape
        centre = np.array([h // 2, w // 2], float)
        q = (ex.px[ex.status != ABSENT] - centre) * s.dk_invA
        yield s, tilts[key], centre, q, disk_radius_invA(s.semiangle_mrad, s.energy_eV)


def pair_disks(qi, qj, pattern, g_list, radius_invA):
    """For every Friedel pair (g, -g) of ``representatives`` whose two disks both have pixels on the pattern: the
    two disks as (their g, their pixels' q (Å⁻¹), their intensities), g first."""
    for g in representatives(g_list, radius_invA):
        got = []
        for gg in (g, -g):
            m = (qi - gg[0]) ** 2 + (qj - gg[1]) ** 2 <= radius_invA ** 2
            if not m.any():
                break
            got.append((gg, np.stack([qi[m], qj[m]], 1), pattern[m]))
        if len(got) == 2:
            yield got


def pair_pixels(pattern, centre, dk, g_list, radius_invA):
    """For every Friedel pair (g, -g): the pixels of both disks, their q (Å⁻¹), their disk's g, their
    intensity normalised by the pair's mean."""
    h, w = pattern.shape
    ii, jj = np.mgrid[0:h, 0:w]
    qi = (ii - centre[0]) * dk[0]
    qj = (jj - centre[1]) * dk[1]
    A, B, W, P, N = [], [], [], [], []
    for pix in pair_disks(qi, qj, pattern, g_list, radius_invA):
        mean = np.mean(np.concatenate([p[2] for p in pix]))
        if not mean > 0:
            continue
        for side, (gg, q, v) in enumerate(pix):
            A.append(np.broadcast_to(gg, q.shape))
            B.append((gg @ gg / 2 - q @ gg))
            W.append(v / mean)
            P.append(np.full(len(v), len(P), int))
            N.append(np.full(len(v), mean))
    if not A:
        return None
    return np.concatenate(A), np.concatenate(B), np.concatenate(W), np.concatenate(P), np.concatenate(N)


def laue_tilt(pattern, centre, dk, g_list, energy_eV, radius_invA, sigma_invA, span_mrad=12.0, power=0.0):
    K = 1.0 / wavelength_A(energy_eV)
    got = pair_pixels(pattern, centre, dk, g_list, radius_invA)
    if got is None:
        return np.array([np.nan, np.nan])
    a, b, wgt, disk, norm = got
    b = b / K
    starts = np.r_[0, np.nonzero(np.diff(disk))[0] + 1]
    cnt = np.diff(np.r_[starts, len(disk)])
    meas = np.add.reduceat(wgt, starts) / cnt  # mean normalised intensity per disk
    raw = np.add.reduceat(wgt * norm, starts) / cnt
    meas_frac = meas.reshape(-1, 2)[:, 0] / meas.reshape(-1, 2).sum(1)
    pair_w = raw.reshape(-1, 2).mean(1) ** power

    def scores(grid):  # grid (n, 2) tilt in rad; minus the squared misfit of the pairs' brightness ratios
        s = grid @ a.T + b[None, :]
        f = 1.0 / (1 + (s / sigma_invA) ** 2)
        m = np.add.reduceat(f, starts, axis=1) / cnt
        m = m.reshape(len(grid), -1, 2)
        frac = m[..., 0] / m.sum(-1)
        return -(pair_w * (frac - meas_frac) ** 2).sum(1)

    t = np.arange(-span_mrad, span_mrad + 1e-9, 1.0) * 1e-3
    grid = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    best = grid[np.argmax(scores(grid))]
    for step in (0.2e-3, 0.04e-3):
        t = np.arange(-5, 6) * step
        grid = best + np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
        best = grid[np.argmax(scores(grid))]
    return best * 1e3


def friedel_tilt(pattern, centre, dk, g_list, radius_invA):
    """Least squares of the pairs' asymmetry A = (I+ - I-)/(I+ + I-) against g: A ≈ c τ·g (c = 1 here)."""
    got = pair_pixels(pattern, centre, dk, g_list, radius_invA)
    if got is None:
        return np.array([np.nan, np.nan])
    a, b, wgt, disk, norm = got
    starts = np.r_[0, np.nonzero(np.diff(disk))[0] + 1]
    cnt = np.diff(np.r_[starts, len(disk)])
    meas = (np.add.reduceat(wgt, starts) / cnt).reshape(-1, 2)
    g = a[starts].reshape(-1, 2, 2)[:, 0]
    asym = (meas[:, 0] - meas[:, 1]) / meas.sum(1)
    if len(g) < 2 or np.linalg.matrix_rank(g) < 2:
        return np.array([np.nan, np.nan])
    return np.linalg.lstsq(g, asym, rcond=None)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=120)
    ap.add_argument("--sigma", default="0.002,0.004,0.008")
    ap.add_argument("--doses", default="clean,1e5")
    ap.add_argument("--source", default="truth", choices=["truth"])
    ap.add_argument("--powers", default="0")
    a = ap.parse_args()
    sigmas = [float(s) for s in a.sigma.split(",")]
    res = {}
    t0 = time.time()
    for s, tilt, centre, q, r in labelled_samples(a.dataset, a.split, a.limit, a.doses.split(",")):
        est = friedel_tilt(s.pattern, centre, s.dk_invA, q, r)
        res.setdefault((s.dose, "friedel", 0), []).append((tilt, est, s.thickness_A))
        for sig in sigmas:
            for pw in [float(x) for x in a.powers.split(",")]:
                est = laue_tilt(s.pattern, centre, s.dk_invA, q, s.energy_eV, r, sig, power=pw)
                res.setdefault((s.dose, sig, pw), []).append((tilt, est, s.thickness_A))
    print(f"{time.time() - t0:.0f} s")
    for (dose, sig, pw), rows in res.items():
        tru = np.array([r[0] for r in rows]); est = np.array([r[1] for r in rows]); th = np.array([r[2] for r in rows])
        ok = np.isfinite(est).all(1)
        err = np.linalg.norm(est - tru, axis=1)
        zero = np.linalg.norm(tru, axis=1)
        line = [f"dose {dose} sigma {sig} power {pw}: rms {np.sqrt(np.mean(err[ok]**2)):.2f} mrad (zero {np.sqrt(np.mean(zero**2)):.2f}), nan {(~ok).sum()}"]
        for lo, hi in ((0, 200), (200, 400), (400, 2000)):
            m = ok & (th >= lo) & (th < hi)
            if m.any():
                line.append(f"[{lo}-{hi}) {np.sqrt(np.mean(err[m]**2)):.2f}/{np.sqrt(np.mean(zero[m]**2)):.2f}")
        c = float(np.sum(est[ok] * tru[ok]) / np.sum(est[ok] ** 2))  # least-squares gain
        line.append(f"gain {c:.2f} -> rms {np.sqrt(np.mean(np.linalg.norm(c * est[ok] - tru[ok], axis=1) ** 2)):.2f}")
        print("  ".join(line))


if __name__ == "__main__":
    main()
