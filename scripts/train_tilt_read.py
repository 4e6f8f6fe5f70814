"""Train the learned tilt read (fourdcrystal.detection.tilt.TiltReader) and store it as JSON.

    python scripts/train_tilt_read.py DATASET --out fourdcrystal/data/tilt-read.json

Every pattern of DATASET's training split, clean and at 10⁵, 10⁴ and 10³ e⁻ (the shot noise `fourdcrystal
evaluate` draws, the same seed), gives its Friedel pairs of *required* exact reflections (the shards' physical
truth: what a detector should find) and their features (`tilt.pair_features`). The network (10 → width → width → 2,
SiLU) maps each pair to a projection θ·ĝ and a weight; a pattern's tilt is the weighted least-squares solve of
`tilt.learned_tilt`; the loss is the mean squared tilt error over patterns tilted within ``--max-true-mrad``,
full batch, Adam with a cosine schedule. The validation split (exact pairs likewise) then sets the error scale
that brings 68 % of the tilt components within their standard error, and reports the rms error. Needs torch
(the package's own dependency); about 10 minutes on 2 cores for the release data set.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

DOSES = (None, 1e5, 1e4, 1e3)


def split_pairs(dataset: str, split: str, limit: int | None = None, seed: int | None = None) -> dict:
    """Pair features, units and pattern index of every pattern of ``split`` at :data:`DOSES`, and each pattern's
    true crystal tilt (mrad)."""
    from tqdm import tqdm

    from fourdcrystal.detection.tilt import pair_features
    from fourdcrystal.evaluation.evaluate import EvalConfig, split_samples
    from fourdcrystal.simulation.optics import disk_radius_invA
    from fourdcrystal.simulation.truth import REQUIRED
    from fourdcrystal.training.data import open_dataset

    _, where, _ = open_dataset(dataset)
    locations = where[split][:limit]
    extra = {} if seed is None else {"seed": seed}
    config = EvalConfig(split=split, doses_e=DOSES, **extra)
    feats, units, index, true = [], [], [], []
    for s in tqdm(split_samples(None, dataset, locations, config), total=len(DOSES) * len(locations),
                  desc=f"{split} patterns", unit="pattern", file=sys.stderr):
        h, w = s.pattern.shape
        centre = np.array([h // 2, w // 2], float)
        q = (s.exact.px[s.exact.status == REQUIRED] - centre) * s.dk_invA
        f, u = pair_features(s.pattern, centre, s.dk_invA, q, s.energy_eV, s.semiangle_mrad,
                             disk_radius_invA(s.semiangle_mrad, s.energy_eV))
        feats.append(f), units.append(u), index.append(np.full(len(f), len(true)))
        true.append(np.asarray(s.tilt_mrad, float))
    return {"features": np.concatenate(feats), "units": np.concatenate(units), "pattern": np.concatenate(index),
            "true_mrad": np.array(true).reshape(-1, 2)}


def train(data: dict, width: int = 64, steps: int = 800, lr: float = 3e-3, max_true_mrad: float = 8.0,
          seed: int = 0, log=print) -> dict:
    """Fit the reader to ``data`` (:func:`split_pairs`); returns its JSON fields (``sigma_scale`` still 1)."""
    import torch
    from torch import nn

    from fourdcrystal.detection.tilt import ODD_FEATURES

    torch.manual_seed(seed)
    x = data["features"]
    mean, scale = x.mean(0), x.std(0) + 1e-6
    mean[ODD_FEATURES] = 0.0  # an odd feature keeps its sign when standardised
    odd = torch.zeros(x.shape[1])
    odd[ODD_FEATURES] = 1.0
    net = nn.Sequential(nn.Linear(x.shape[1], width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2))
    log_ridge = nn.Parameter(torch.tensor(0.0))
    projection = 5.0  # mrad per unit of the network's output: tilts are a few mrad
    f = (torch.tensor(x, dtype=torch.float32) - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(scale, dtype=torch.float32)
    f_swap = f * (1 - 2 * odd)
    u = torch.tensor(data["units"], dtype=torch.float32)
    pattern = torch.tensor(data["pattern"], dtype=torch.long)
    true = torch.tensor(data["true_mrad"], dtype=torch.float32)
    n = len(true)
    keep = (true.abs().max(1).values <= max_true_mrad) & (torch.bincount(pattern, minlength=n) >= 2)

    def solve():
        o1, o2 = net(f), net(f_swap)
        p = projection * (o1[:, 0] - o2[:, 0]) / 2
        w = nn.functional.softplus((o1[:, 1] + o2[:, 1]) / 2) + 1e-3
        z = torch.zeros(n)
        lam = log_ridge.exp()
        a11 = z.index_add(0, pattern, w * u[:, 0] ** 2) + lam
        a12 = z.index_add(0, pattern, w * u[:, 0] * u[:, 1])
        a22 = z.index_add(0, pattern, w * u[:, 1] ** 2) + lam
        b1, b2 = z.index_add(0, pattern, w * p * u[:, 0]), z.index_add(0, pattern, w * p * u[:, 1])
        det = a11 * a22 - a12 ** 2
        return torch.stack([(a22 * b1 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det], 1)

    opt = torch.optim.Adam([*net.parameters(), log_ridge], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for step in range(steps):
        loss = ((solve() - true) ** 2).sum(1)[keep].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step + 1}/{steps}: training rms tilt error {loss.item() ** 0.5:.3f} mrad")
    linears = [m for m in net if isinstance(m, nn.Linear)]
    return {"schema": "fourdcrystal.tilt-read/1", "mean": mean.tolist(), "scale": scale.tolist(),
            "layers": [[m.weight.detach().double().numpy().T.tolist(), m.bias.detach().double().numpy().tolist()]
                       for m in linears],
            "ridge": float(log_ridge.detach().exp()), "projection_mrad": projection, "sigma_scale": 1.0, "min_pairs": 2,
            "training": {"patterns": int(keep.sum()), "rms_mrad": float(loss.item() ** 0.5), "steps": steps,
                         "width": width, "lr": lr, "seed": seed, "max_true_mrad": max_true_mrad}}


def score(reader, data: dict, max_true_mrad: float = 8.0) -> dict:
    """rms tilt error (mrad) of ``reader`` on ``data``, failed patterns, and the error scale of 68 % coverage."""
    from fourdcrystal.detection.tilt import TiltSettings, pairs_tilt

    fits = [pairs_tilt(data["features"][data["pattern"] == k], data["units"][data["pattern"] == k], reader,
                       TiltSettings().span_mrad) for k in range(len(data["true_mrad"]))]
    est = np.array([fit.tilt_mrad for fit in fits]).reshape(-1, 2)
    raw = np.array([fit.sigma_mrad for fit in fits]).reshape(-1, 2) / reader.sigma_scale  # before the error scale
    true = data["true_mrad"]
    within = np.abs(true).max(1) <= max_true_mrad
    ok = np.all(np.isfinite(est), 1) & within
    err = np.abs(est - true)[ok]
    out = {"patterns": int(within.sum()), "failed": int(within.sum() - ok.sum()), "rms_mrad": None,
           "zero_rms_mrad": None, "sigma_scale": None}
    if ok.any():  # none fitted (a tiny data set): no figures, and the error scale is left as it was
        out.update(rms_mrad=float(np.sqrt(np.mean(np.sum(err ** 2, 1)))),
                   zero_rms_mrad=float(np.sqrt(np.mean(np.sum(true[ok] ** 2, 1)))),
                   sigma_scale=float(np.quantile((err / raw[ok]).ravel(), 0.68)))
    return out


def main(argv: list[str] | None = None) -> int:
    from fourdcrystal.atomic import write_text_atomic
    from fourdcrystal.detection.tilt import PAIR_FEATURES, TiltReader

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", help="a data set folder (fourdcrystal simulate) with train and val splits")
    ap.add_argument("--out", required=True, help="the reader's JSON file to write")
    ap.add_argument("--steps", type=int, default=800, help="full-batch Adam steps (default 800)")
    ap.add_argument("--width", type=int, default=64, help="hidden width (default 64)")
    ap.add_argument("--limit", type=int, help="only the first N locations of each split (a quick run)")
    ap.add_argument("--seed", type=int, default=0, help="the network's initialisation (default 0)")
    args = ap.parse_args(argv)
    index = Path(args.dataset) / "index.json"
    if not index.is_file():
        print(f"error: {args.dataset}: not a data set (no index.json)", file=sys.stderr)
        return 2
    if args.steps < 1 or args.width < 2:
        print("error: --steps must be ≥ 1 and --width ≥ 2", file=sys.stderr)
        return 2
    pairs = split_pairs(args.dataset, "train", args.limit)
    if not len(pairs["features"]):
        print(f"error: {args.dataset}: its training split has no Friedel pairs of required reflections to learn from",
              file=sys.stderr)
        return 2
    fields = train(pairs, args.width, args.steps, seed=args.seed, log=lambda m: print(m, file=sys.stderr))
    fields["features"] = list(PAIR_FEATURES)
    val = score(TiltReader.from_dict(fields), split_pairs(args.dataset, "val", args.limit))
    fields["sigma_scale"] = val["sigma_scale"] or 1.0
    fields["validation"] = {**val, "what": "the val split's exact required pairs, clean and at 1e5, 1e4, 1e3 e⁻ "
                                            "pooled; sigma_scale: 68 % of the components within their error"}
    fields["dataset"] = {"folder": str(args.dataset), "index_sha256": hashlib.sha256(index.read_bytes()).hexdigest(),
                         "limit": args.limit}
    fields["command"] = "python scripts/train_tilt_read.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_text_atomic(args.out, json.dumps(fields, indent=1))
    if val["rms_mrad"] is None:
        print(f"wrote {args.out}: training rms {fields['training']['rms_mrad']:.2f} mrad; no validation pattern "
              f"fitted ({val['patterns']}): the error scale is left at 1")
    else:
        print(f"wrote {args.out}: training rms {fields['training']['rms_mrad']:.2f} mrad; validation rms "
              f"{val['rms_mrad']:.2f} mrad ({val['failed']} of {val['patterns']} failed; answering zero "
              f"{val['zero_rms_mrad']:.2f}); error scale {fields['sigma_scale']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
