"""Is a disk's placement error against the exact g predictable from the disk itself (experiment)?

The model's peaks are placed on the measured pattern's correlation with the probe (`detection.baseline.
refine_positions`, predict's `fine_detector_refine`). Started at each *required* exact reflection of a pattern,
how far does that placement land from the exact g, and how much of the miss does a small network over the disk's
own intensity moments predict (trained on the training split, scored on the validation split)?

    python experiments/position_offsets/explore.py DATASET --train-limit 800 --val-limit 200 --json results.json
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def disk_features(img, centre, g_px, radius_px, i0):
    """Moments of the intensity inside the disk around its placed centre, in the ĝ frame (disk radii), and its
    brightness against the zero disk: [|g| px / radius, radius px, log brightness, m∥, m⊥ (odd), m∥∥, m⊥⊥, m∥⊥
    (odd), rim asymmetry ∥, rim asymmetry ⊥ (odd)]."""
    h, w = img.shape
    u = g_px / np.linalg.norm(g_px)
    v = np.array([-u[1], u[0]])
    c = centre + g_px
    r = radius_px
    lo = np.maximum(np.floor(c - 1.5 * r).astype(int), 0)
    hi = np.minimum(np.ceil(c + 1.5 * r).astype(int) + 1, (h, w))
    ii, jj = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]]
    d = np.stack([ii - c[0], jj - c[1]], -1).reshape(-1, 2) / r
    val = img[ii, jj].ravel()
    rr = np.hypot(d[:, 0], d[:, 1])
    inside, rim = rr <= 1.0, (rr > 0.8) & (rr <= 1.2)
    if inside.sum() < 5 or val[inside].sum() <= 0:
        return None
    a, b = d @ u, d @ v
    wv = val[inside] / val[inside].sum()
    ai, bi = a[inside], b[inside]
    wr = val[rim] / max(val[rim].sum(), 1e-30)
    return [np.linalg.norm(g_px) / r, r, np.log(val[inside].mean() / i0 + 1e-4), wv @ ai, wv @ bi,
            wv @ ai ** 2, wv @ bi ** 2, wv @ (ai * bi), wr @ a[rim], wr @ b[rim]]


ODD = [4, 7, 9]


def collect(dataset, split, limit, doses):
    from tqdm import tqdm

    from fourdcrystal.detection.baseline import refine_positions
    from fourdcrystal.detection.detect import settings_from_card
    from fourdcrystal.evaluation.evaluate import EvalConfig, split_samples
    from fourdcrystal.model.card import RELEASE_WEIGHTS, read_card
    from fourdcrystal.simulation.optics import disk_radius_invA
    from fourdcrystal.simulation.truth import REQUIRED
    from fourdcrystal.training.data import open_dataset

    settings = settings_from_card(read_card(RELEASE_WEIGHTS))[0]
    _, where, _ = open_dataset(dataset)
    cfg = EvalConfig(split=split, doses_e=doses)
    X, Y, U, D = [], [], [], []
    locs = where[split][:limit]
    for s in tqdm(split_samples(None, dataset, locs, cfg), total=len(doses) * len(locs), file=sys.stderr):
        h, w = s.pattern.shape
        centre = np.array([h // 2, w // 2], float)
        exact = s.exact.px[s.exact.status == REQUIRED]
        if not len(exact):
            continue
        placed = refine_positions(s.pattern[None], s.probe, [exact], settings.baseline,
                                  settings.model.search_px)[0]
        r_px = disk_radius_invA(s.semiangle_mrad, s.energy_eV) / float(np.mean(s.dk_invA))
        zero = s.pattern[int(centre[0]) - 1:int(centre[0]) + 2, int(centre[1]) - 1:int(centre[1]) + 2].mean()
        for e, p in zip(exact, placed):
            g = p - centre
            if np.linalg.norm(g) < 2.5 * r_px:
                continue
            f = disk_features(s.pattern, centre, g, r_px, max(zero, 1e-30))
            if f is None:
                continue
            u = g / np.linalg.norm(g)
            miss = e - p
            X.append(f), Y.append([miss @ u / r_px, miss @ np.array([-u[1], u[0]]) / r_px]), U.append(r_px)
            D.append(-1.0 if s.dose is None else s.dose)
    return np.array(X), np.array(Y), np.array(U), np.array(D)


def main() -> int:
    import torch
    from torch import nn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--train-limit", type=int, default=800)
    ap.add_argument("--val-limit", type=int, default=200)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--json")
    a = ap.parse_args()
    doses = (None, 1e5, 1e4)
    xt, yt, _, _ = collect(a.dataset, "train", a.train_limit, doses)
    xv, yv, rv, dv = collect(a.dataset, "val", a.val_limit, doses)
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    mu[ODD] = 0.0
    flip = torch.ones(xt.shape[1])
    flip[ODD] = -1.0
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(xt.shape[1], 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 2))

    def predict(x):  # the ⊥ offset odd, the ∥ offset even under mirroring across ĝ
        x = (torch.tensor(x, dtype=torch.float32) - torch.tensor(mu, dtype=torch.float32)) / torch.tensor(sd, dtype=torch.float32)
        o1, o2 = net(x), net(x * flip)
        return torch.stack([(o1[:, 0] + o2[:, 0]) / 2, (o1[:, 1] - o2[:, 1]) / 2], 1) * 0.1

    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    target = torch.tensor(yt, dtype=torch.float32)
    for step in range(a.steps):
        loss = ((predict(xt) - target) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pv = predict(xv).numpy()
    out = {"train_disks": len(xt), "val_disks": len(xv), "rows": []}
    for dose in (-1.0, 1e5, 1e4):
        sel = dv == dose
        before = np.sqrt(np.mean(np.sum((yv[sel] * rv[sel, None]) ** 2, 1)))
        after = np.sqrt(np.mean(np.sum(((yv[sel] - pv[sel]) * rv[sel, None]) ** 2, 1)))
        mean_only = np.sqrt(np.mean(np.sum(((yv[sel] - yt.mean(0)) * rv[sel, None]) ** 2, 1)))
        row = {"dose": "clean" if dose < 0 else f"{dose:.0e}", "disks": int(sel.sum()), "rms_px_placed": float(before),
               "rms_px_corrected": float(after), "rms_px_mean_offset_removed": float(mean_only)}
        out["rows"].append(row)
        print(row)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
