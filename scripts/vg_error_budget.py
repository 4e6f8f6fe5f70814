#!/usr/bin/env python
"""How exact must the predicted V_g be for a given F1, and how exact is a model's?

The evaluation's label peaks are the maxima of the true V_g holding ≥ 5 % of the zero beam's, so
the F1 of a prediction is set by how well it places each reflection above or below that line.
Two measurements on the same patterns (a split's first ``--limit`` patterns at least
``--min-thickness`` Å thick, noise-free, the evaluation's usable region and matching):

* **tolerance**: the true V_g multiplied by 1 + s·n, n a smooth Gaussian field (σ = 2 px, unit
  variance: about one independent factor per reflection), peaks found as the labels are, and
  scored against the labels: the F1 that a prediction with relative errors of rms s would reach;
* **model**: the model's predicted V_g at every label peak off the zero beam, divided by the
  true one, after removing one scale factor per pattern (the median ratio: this measures the
  spread of the errors between reflections, which no threshold can undo, not their common
  scale): the median relative error, the share within ±20 %, and the model's own F1 on these
  patterns with its card's settings.

    python scripts/vg_error_budget.py release release/dataset --split val --limit 140 \\
        --json vg_error_budget.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ERRORS = (0.05, 0.1, 0.2, 0.3, 0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="model.pt or a shipped name (release)")
    ap.add_argument("dataset", help="dataset folder (fourdcrystal simulate)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=140, help="the split's first N patterns")
    ap.add_argument("--min-thickness", type=float, default=200.0, help="only patterns at least this thick, Å")
    ap.add_argument("--seed", type=int, default=0, help="seed of the error fields")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args(argv)

    from scipy import ndimage

    from fourdcrystal.atomic import write_text_atomic
    from fourdcrystal.detect import model_peaks, settings_from_card
    from fourdcrystal.evaluate import EvalConfig, _prf, split_samples
    from fourdcrystal.model.inference import Predictor
    from fourdcrystal.peaks import find_peaks, match_peaks
    from fourdcrystal.training.card import load_model, resolve_weights
    from fourdcrystal.training.data import open_dataset

    model, card = load_model(args.model, inference=True)
    settings, _ = settings_from_card(card)
    _, where, info = open_dataset(args.dataset)
    cfg = EvalConfig(split=args.split, doses_e=(None,), limit=args.limit)
    rng = np.random.default_rng(args.seed)
    tol = {s: np.zeros(3, int) for s in ERRORS}
    own = np.zeros(3, int)
    rel: list[float] = []
    patterns = 0
    for smp in split_samples(Predictor(model, card, "cpu", 8), args.dataset, where[args.split][:args.limit], cfg):
        if smp.thickness_A < args.min_thickness:
            continue
        patterns += 1
        truth = smp.truth.pos_px
        for s in ERRORS:
            n = ndimage.gaussian_filter(rng.standard_normal(smp.vg_true.shape), 2.0)
            noisy = smp.vg_true * np.clip(1 + s * n / n.std(), 0.0, None)
            pk = find_peaks(noisy, cfg.label_peaks, mask=smp.usable)
            mp, _ = match_peaks(pk.pos_px, truth, cfg.match_radius_px)
            tol[s] += (len(mp), len(pk), len(truth))
        pk = model_peaks(smp.vg_pred[None], smp.pattern[None], smp.probe, settings, smp.usable)[0]
        mp, _ = match_peaks(pk.pos_px, truth, cfg.match_radius_px)
        own += (len(mp), len(pk), len(truth))
        ij = np.rint(truth).astype(int)
        t = smp.vg_true[ij[:, 0], ij[:, 1]].astype(float)
        p = smp.vg_pred[ij[:, 0], ij[:, 1]].astype(float)
        off = np.linalg.norm(truth - np.array(smp.vg_true.shape) // 2, axis=1) > cfg.match_radius_px
        t, p = t[off], np.clip(p[off], 1e-6, None)
        if len(t):
            k = float(np.exp(np.median(np.log(p / t))))
            rel.extend(((p / k - t) / t).tolist())
    if patterns == 0:
        raise SystemExit(f"error: no pattern of the first {args.limit} of the {args.split} split is at least "
                         f"{args.min_thickness:g} Å thick")
    r = np.abs(np.array(rel))
    out = {
        "command": "python scripts/vg_error_budget.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": str(resolve_weights(args.model)), "model_weights_sha256": card["weights_sha256"],
        "dataset_index_sha256": info.index_sha256, "split": args.split, "patterns": patterns,
        "min_thickness_A": args.min_thickness, "label_min_relative": cfg.label_peaks.min_relative,
        "tolerance_f1": {f"{s:g}": _prf(*tol[s])[2] for s in ERRORS},
        "model_f1": _prf(*own)[2], "label_peaks": int(own[2]),
        "model_relative_error": {"median_abs": float(np.median(r)), "within_20pct": float(np.mean(r <= 0.2)),
                                 "reflections": len(r)},
    }
    print(f"{patterns} patterns ≥ {args.min_thickness:g} Å of the {args.split} split, noise-free")
    for s in ERRORS:
        print(f"  true V_g × (1 + {s:g}·n): F1 {out['tolerance_f1'][f'{s:g}']:.3f}")
    err = out["model_relative_error"]
    print(f"  the model: F1 {out['model_f1']:.3f}; at the label peaks, median |relative error| "
          f"{err['median_abs']:.2f}, within ±20 %: {err['within_20pct']:.2f}")
    if args.json:
        write_text_atomic(Path(args.json), json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
