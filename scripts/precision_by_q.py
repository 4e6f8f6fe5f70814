#!/usr/bin/env python
"""Where a model's Bragg peaks match the labels: precision and recall per |q| band on one split.

The same matching as `fourdcrystal evaluate` (the card's tuned peak settings, label peaks ≥ 5 %
of the zero beam inside the usable region, one-to-one within the match radius), counted per
band of |q| from the zero beam, noise-free.

    python scripts/precision_by_q.py release quickstart/dataset
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="model.pt or release")
    ap.add_argument("dataset", help="dataset folder (fourdcrystal simulate)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--bands", default="0,1,1.5,2,2.5,3,4,6", help="band edges in Å⁻¹")
    args = ap.parse_args(argv)

    from fourdcrystal.detect import model_peaks, settings_from_card
    from fourdcrystal.evaluate import EvalConfig, split_samples
    from fourdcrystal.model.inference import Predictor
    from fourdcrystal.peaks import match_peaks
    from fourdcrystal.training.card import load_model
    from fourdcrystal.training.data import open_dataset

    model, card = load_model(args.model, inference=True)
    settings, _ = settings_from_card(card)
    _, where, _ = open_dataset(args.dataset)
    cfg = EvalConfig(doses_e=(None,))
    edges = np.array([float(v) for v in args.bands.split(",")])
    found, matched, labels = (np.zeros(len(edges) - 1, int) for _ in range(3))
    for s in split_samples(Predictor(model, card, "cpu", 8), args.dataset, where[args.split], cfg):
        peaks = model_peaks(s.vg_pred[None], s.pattern[None], s.probe, settings, s.usable)[0]
        h, w = s.pattern.shape
        dk = np.broadcast_to(s.dk_invA, (2,))
        q_model = np.linalg.norm((peaks.pos_px - [h // 2, w // 2]) * dk, axis=1)
        q_label = np.linalg.norm((s.truth.pos_px - [h // 2, w // 2]) * dk, axis=1)
        mi, _ = match_peaks(peaks.pos_px, s.truth.pos_px, cfg.match_radius_px)
        hit = np.zeros(len(peaks), bool)
        hit[mi] = True
        band_m, band_l = np.digitize(q_model, edges) - 1, np.digitize(q_label, edges) - 1
        for b in range(len(edges) - 1):
            found[b] += int((band_m == b).sum())
            matched[b] += int(hit[band_m == b].sum())
            labels[b] += int((band_l == b).sum())
    print(f"{args.model} on the {args.split} split of {args.dataset}, noise-free")
    print(f"{'|q| (Å⁻¹)':>12s} {'model peaks':>12s} {'matched':>8s} {'precision':>10s} {'label peaks':>12s} {'recall':>7s}")
    for b in range(len(edges) - 1):
        prec = matched[b] / found[b] if found[b] else float("nan")
        rec = matched[b] / labels[b] if labels[b] else float("nan")
        print(f"{edges[b]:5.1f}–{edges[b + 1]:<5.1f} {found[b]:12d} {matched[b]:8d} {prec:10.2f} {labels[b]:12d} {rec:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
