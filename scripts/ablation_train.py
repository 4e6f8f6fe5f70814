"""Measure design choices of the training set-up on one dataset: network domain, heads, loss and schedule.

    python scripts/ablation_train.py DATASET --epochs 12 --width 8 --out runs/ablation

Trains each variant with the same seed, data and budget, then prints the best validation
vg NMSE and MSE (relative V_g), V_g-weighted qz MSE (normalised) and the time per epoch:

* domain pattern (real U-Net on the correlation map) vs spectral (crystal4D's complex U-Net);
* vg loss nmse vs mse;
* decoders 1 (one decoder, two outputs) vs 2 (one decoder per head);
* schedule cosine vs noam (both after the same linear warm-up);
* loss weighting uncertainty vs fixed.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fourdcrystal.config import load_config  # noqa: E402
from fourdcrystal.training.loop import train_model  # noqa: E402

VARIANTS = {
    "decoders=1 cosine uncertainty": {},
    "decoders=2 cosine uncertainty": {"model.decoders": 2},
    "decoders=1 noam uncertainty": {"schedule": "noam"},
    "decoders=1 cosine fixed": {"loss_weighting": "fixed"},
    "domain=spectral": {"model.domain": "spectral"},
    "vg_loss=mse": {"vg_loss": "mse"},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--loader-workers", type=int, default=1)
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    a = p.parse_args()
    rows = []
    for name, change in VARIANTS.items():
        if a.only and name not in a.only:
            continue
        cfg = load_config("train", None, {"epochs": a.epochs, "model.width": a.width, "model.depth": a.depth,
                                          "batch_size": a.batch_size, "loader_workers": a.loader_workers,
                                          "patience": 0, "out": str(Path(a.out) / name.replace(" ", "_")),
                                          **change})
        result = train_model(a.dataset, copy.deepcopy(cfg), overwrite=True)
        best = result["card"]["metrics"]["best_val"]
        hist = [json.loads(x) for x in (Path(cfg["out"]) / "metrics.jsonl").read_text().splitlines()]
        rows.append((name, best.get("val_vg_nmse", float("nan")), best["val_vg_mse"], best["val_qz_wmse"], best["epoch"],
                     sum(h["seconds"] for h in hist) / len(hist), result["card"]["parameters"]))
        print(f"{name}: val vg MSE {best['val_vg_mse']:.4g}, val qz wMSE {best['val_qz_wmse']:.4g}", flush=True)
    print(f"\n{'variant':34s} {'vg NMSE':>8s} {'val vg MSE':>11s} {'val qz wMSE':>12s} {'best ep':>8s} {'s/epoch':>8s} "
          f"{'params':>9s}")
    for r in rows:
        print(f"{r[0]:34s} {r[1]:8.3g} {r[2]:11.4g} {r[3]:12.4g} {r[4]:8d} {r[5]:8.1f} {r[6]:9,d}")


if __name__ == "__main__":
    main()
