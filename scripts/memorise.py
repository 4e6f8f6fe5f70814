"""Can a network variant learn the reflections at all? Fit it to a few training patterns and watch.

    python scripts/memorise.py DATASET --domain pattern --steps 600
    python scripts/memorise.py DATASET --domain spectral --steps 600

Trains the FCU-Net variant on the train split of DATASET (meant for a handful of patterns, e.g.
`fourdcrystal simulate --config release --limit 9`: 15 training patterns) with no
augmentation and no dropout, AdamW, batches of 3, on the V_g NMSE alone, and prints every 100
steps the NMSE over all those patterns (eval mode; the zero beam alone gives Σ off-zero-beam
label² / Σ label², printed first) and the Bragg-peak F1 on them (peaks ≥ 5 % of the zero beam,
matched within 2 px, as in `fourdcrystal evaluate`). A variant that cannot memorise 15
patterns will not learn thousands.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fourdcrystal.model.fcunet import FCUNet, FCUNetConfig  # noqa: E402
from fourdcrystal.model.losses import vg_nmse  # noqa: E402
from fourdcrystal.peaks import PeakConfig, find_peaks, match_peaks  # noqa: E402
from fourdcrystal.training.data import ShardDataset, open_dataset  # noqa: E402


def peak_f1(pred: torch.Tensor, true: torch.Tensor) -> float:
    cfg = PeakConfig(min_relative=0.05, max_peaks=400)
    tp = n_pred = n_true = 0
    for p, t in zip(pred[:, 0].numpy(), true[:, 0].numpy()):
        pp, tt = find_peaks(p, cfg), find_peaks(t, cfg)
        a, _ = match_peaks(pp.pos_px, tt.pos_px, 2.0)
        tp, n_pred, n_true = tp + len(a), n_pred + len(pp), n_true + len(tt)
    return 2 * tp / max(n_pred + n_true, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("--domain", choices=["pattern", "spectral"], default="pattern")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    _, where, _ = open_dataset(a.dataset)
    ds = ShardDataset(a.dataset, where["train"], 1.0)
    items = [ds[i] for i in range(len(ds))]
    cbed, probe, vg = (torch.stack([it[k] for it in items]) for k in ("cbed", "probe", "vg"))
    h, w = vg.shape[-2:]
    off = vg.clone()
    off[..., h // 2, w // 2] = 0
    print(f"{len(items)} patterns; zero beam alone: NMSE {float((off**2).sum() / (vg**2).sum()):.3f}")
    model = FCUNet(FCUNetConfig(domain=a.domain, dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr)
    t0 = time.perf_counter()
    for step in range(a.steps + 1):
        pick = torch.randperm(len(items))[:3]
        loss = vg_nmse(model(cbed[pick], probe[pick])["vg"], vg[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            model.eval()
            with torch.no_grad():
                pred = model(cbed, probe)["vg"]
            model.train()
            print(f"{a.domain} step {step}: NMSE {float(vg_nmse(pred, vg)):.3f}, F1 {peak_f1(pred, vg):.3f}, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
