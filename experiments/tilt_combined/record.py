"""Record every pattern's tilt fits (the classical Laue fit on the baseline's disks, the same on the model's
vectors, the model's q_z) during `fourdcrystal evaluate`, for one split (experiment).

    python experiments/tilt_combined/record.py release/dataset --split val --json /tmp/tilt-val.json

Runs :func:`fourdcrystal.evaluate` (clean, 10⁵, 10⁴, 10³ e⁻) with the shipped model and its card's settings, its report
written to a scratch folder; only the per-pattern fits are kept.
"""
from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np

from fourdcrystal.evaluation import evaluate as ev

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("dataset")
ap.add_argument("--split", default="val", choices=("val", "test"))
ap.add_argument("--json", required=True)
a = ap.parse_args()

rows = []
original = ev.tilt_fits


def recording(s, model_pk, baseline_pk, settings):
    fits = original(s, model_pk, baseline_pk, settings)
    rows.append({"shard": s.shard, "row": int(s.row), "dose": s.dose, "thickness_A": float(s.thickness_A),
                 "semiangle_mrad": float(s.semiangle_mrad), "true_mrad": np.asarray(s.tilt_mrad, float).tolist(),
                 "fits": {m: [np.asarray(est, float).tolist(), None if sig is None else np.asarray(sig, float).tolist()]
                          for m, (est, sig) in fits.items()}})
    return fits


ev.tilt_fits = recording
with tempfile.TemporaryDirectory() as tmp:
    from fourdcrystal import EvaluateSettings
    from fourdcrystal import evaluate as run
    from fourdcrystal.model.card import RELEASE_WEIGHTS

    run(RELEASE_WEIGHTS, a.dataset, tmp, EvaluateSettings(split=a.split))  # clean, 1e5, 1e4, 1e3 e⁻
with open(a.json, "w") as f:
    json.dump({"split": a.split, "dataset": a.dataset, "rows": rows}, f)
print(len(rows), "patterns")
