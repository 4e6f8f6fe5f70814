"""The network's q_z tilt from its whole q_z map instead of its value at each vector's pixel (experiment): the
least-squares θ of q_z(q) = θ_beam·q over the pixels, weighted by the predicted V_g to a power, the zero disk left
out; rms error against the true tilt at one dose.

    python experiments/tilt_classical/qz_map.py DATASET --split val --dose 1e5
"""
from __future__ import annotations

import argparse

import numpy as np

from fourdcrystal.detection.detect import model_peaks, settings_from_card
from fourdcrystal.evaluation.evaluate import EvalConfig, split_samples
from fourdcrystal.lattice import fit_tilt
from fourdcrystal.model.inference import Predictor
from fourdcrystal.simulation.optics import disk_radius_invA
from fourdcrystal.model.card import load_model, resolve_weights
from fourdcrystal.training.data import open_dataset

ap = argparse.ArgumentParser()
ap.add_argument("dataset")
ap.add_argument("--split", default="val")
ap.add_argument("--dose", default="1e5")
ap.add_argument("--limit", type=int, default=None)
ap.add_argument("--powers", default="1,2,4")
a = ap.parse_args()
model, card = load_model(resolve_weights("release"), inference=True)
settings, _ = settings_from_card(card)
_, where, _ = open_dataset(a.dataset)
dose = None if a.dose == "clean" else float(a.dose)
cfg = EvalConfig(split=a.split, doses_e=(dose,))
powers = [float(p) for p in a.powers.split(",")]
est = {k: [] for k in ["peaks"] + [f"map^{p:g}" for p in powers] + [f"disks^{p:g}" for p in powers]}
true = []
for s in split_samples(Predictor(model, card, "cpu", 16), a.dataset, where[a.split][:a.limit], cfg):
    if np.hypot(*s.tilt_mrad) > cfg.tilt_max_mrad:
        continue
    h, w = s.pattern.shape
    centre = np.array([h // 2, w // 2])
    pk = model_peaks(s.vg_pred[None], s.pattern[None], s.probe, settings, s.usable)[0]
    ij = np.clip(np.rint(pk.pos_px).astype(int), 0, [h - 1, w - 1])
    est["peaks"].append(-np.array(fit_tilt((pk.pos_px - centre) * s.dk_invA, s.qz_pred[ij[:, 0], ij[:, 1]],
                                           pk.intensity)))
    ii, jj = np.mgrid[:h, :w]
    q = np.stack([(ii - centre[0]) * s.dk_invA[0], (jj - centre[1]) * s.dk_invA[1]], -1).reshape(-1, 2)
    r = disk_radius_invA(s.semiangle_mrad, s.energy_eV)
    off_zero = (np.linalg.norm(q, axis=1) > 1.5 * r) & s.usable.ravel()
    # pixels within a disk radius of a found vector
    near = np.zeros(h * w, bool)
    rad = r / float(np.max(s.dk_invA))
    for p in pk.pos_px:
        near |= ((ii - p[0]) ** 2 + (jj - p[1]) ** 2 <= rad ** 2).ravel()
    vg = np.clip(s.vg_pred.ravel(), 0, None)
    for p in powers:
        for name, mask in ((f"map^{p:g}", off_zero), (f"disks^{p:g}", off_zero & near)):
            est[name].append(-np.array(fit_tilt(q[mask], s.qz_pred.ravel()[mask], vg[mask] ** p)))
    true.append(s.tilt_mrad)
true = np.array(true)
print(f"{a.split} {a.dose}: {len(true)} patterns, zero {np.sqrt(np.mean(np.sum(true ** 2, 1))):.2f} mrad")
for k, v in est.items():
    v = np.array(v)
    v[np.any(np.abs(v) > 12, axis=1)] = np.nan
    ok = np.isfinite(v).all(1)
    print(f"  {k}: rms {np.sqrt(np.mean(np.sum((v[ok] - true[ok]) ** 2, 1))):.2f} mrad, failed {(~ok).sum()}")
