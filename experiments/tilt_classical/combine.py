"""Does averaging the network's q_z tilt with the Laue fit beat both (experiment)? Per-pattern tilts of a split
at one dose from evaluate's own fits; the weight w of q_z in w·q_z + (1 − w)·Laue chosen on one split, scored on
another.

    python experiments/tilt_classical/combine.py DATASET --split val --dose 1e5 --out val.npz
    python experiments/tilt_classical/combine.py DATASET --split test --dose 1e5 --out test.npz --weights-from val.npz
"""
from __future__ import annotations

import argparse

import numpy as np

from fourdcrystal.detection.detect import baseline_peaks, model_peaks, settings_from_card, tilt_settings_from_card
from fourdcrystal.evaluation.evaluate import EvalConfig, split_samples, thickness_bin, tilt_fits
from fourdcrystal.model.inference import Predictor
from fourdcrystal.model.card import load_model, resolve_weights
from fourdcrystal.training.data import open_dataset

ap = argparse.ArgumentParser()
ap.add_argument("dataset")
ap.add_argument("--model", default="release")
ap.add_argument("--split", default="val")
ap.add_argument("--dose", default="1e5")
ap.add_argument("--limit", type=int, default=None)
ap.add_argument("--out", required=True)
ap.add_argument("--weights-from", default=None)
a = ap.parse_args()
model, card = load_model(resolve_weights(a.model), inference=True)
settings, _ = settings_from_card(card)
tilt_settings = tilt_settings_from_card(card)[0]
_, where, _ = open_dataset(a.dataset)
locs = where[a.split][:a.limit]
dose = None if a.dose == "clean" else float(a.dose)
cfg = EvalConfig(split=a.split, doses_e=(dose,))
rows = {"true": [], "classical": [], "model_vectors": [], "model_qz": [], "thickness": []}
for s in split_samples(Predictor(model, card, "cpu", 16), a.dataset, locs, cfg):
    if np.hypot(*s.tilt_mrad) > cfg.tilt_max_mrad:
        continue
    mpk = model_peaks(s.vg_pred[None], s.pattern[None], s.probe, settings, s.usable)[0]
    bpk = baseline_peaks(s.pattern[None], s.probe, settings, s.usable)[0]
    fits = tilt_fits(s, mpk, bpk, tilt_settings)
    rows["true"].append(s.tilt_mrad)
    rows["thickness"].append(s.thickness_A)
    for m in ("classical", "model_vectors", "model_qz"):
        rows[m].append(fits[m][0])
data = {k: np.array(v) for k, v in rows.items()}
np.savez(a.out, **data)
true = data["true"]


def rms(est, mask=None):
    ok = np.isfinite(est).all(1) if mask is None else mask & np.isfinite(est).all(1)
    return float(np.sqrt(np.mean(np.sum((est[ok] - true[ok]) ** 2, axis=1)))), int((~np.isfinite(est).all(1)).sum())


def combine(w, laue):
    qz, la = data["model_qz"], data[laue]
    out = w * qz + (1 - w) * la
    only_qz = np.isfinite(qz).all(1) & ~np.isfinite(la).all(1)  # a failed Laue fit leaves q_z alone
    out[only_qz] = qz[only_qz]
    return out


print(f"{a.split} {a.dose}: {len(true)} patterns; zero {np.sqrt(np.mean(np.sum(true ** 2, 1))):.2f} mrad")
for m in ("classical", "model_vectors", "model_qz"):
    print(f"  {m}: rms {rms(data[m])[0]:.2f} mrad, failed {rms(data[m])[1]}")
weights = np.round(np.arange(0, 1.01, 0.1), 2)
for laue in ("classical", "model_vectors"):
    if a.weights_from:
        prev = np.load(a.weights_from)
        w_best = float(prev[f"w_{laue}"])
    else:
        w_best = float(min(weights, key=lambda w: rms(combine(w, laue))[0]))
        data[f"w_{laue}"] = w_best
    est = combine(w_best, laue)
    line = [f"  q_z × {w_best:g} + {laue} × {1 - w_best:g}: rms {rms(est)[0]:.2f} mrad (failed {rms(est)[1]})"]
    th = data["thickness"]
    for b in ("<200 Å", "200-400 Å", ">=400 Å"):
        mask = np.array([thickness_bin(t) == b for t in th])
        zero = np.sqrt(np.mean(np.sum(true[mask] ** 2, 1)))
        line.append(f"{b} {rms(est, mask)[0]:.2f}/{zero:.2f}")
    print("  ".join(line))
np.savez(a.out, **data)
