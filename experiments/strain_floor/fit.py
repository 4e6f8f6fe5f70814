"""predict --baseline on each series file of a folder, then each method's strain relative to position 0
against the truth (experiment). Prints the per-position error (ε_xx, ε_yy, ε_xy, %) per method.

    python experiments/strain_floor/fit.py FOLDER [none|reference]
"""
from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np

from fourdcrystal.io.vectors import read_vectors
from fourdcrystal.prediction.stage import PredictConfig, predict
from fourdcrystal.maps.strain import StrainConfig, strain_maps

CORRECT = sys.argv[2] if len(sys.argv) > 2 else "none"
FITS = {"model": dict(weights="squared", tolerance=0.15, correct=CORRECT),
        "baseline": dict(weights="none", tolerance=0.25, correct=CORRECT)}

for path in sorted(Path(sys.argv[1]).glob("t*A.h5")):
    res = path.with_name(path.stem + "-bragg.h5")
    if not res.is_file():
        predict(None, str(path), res, PredictConfig(baseline=True, tilt=False))
    with h5py.File(path, "r") as f:
        strain = f["truth/strain"][()].reshape(-1, 3)
        rot = f["truth/rotation_deg"][()].ravel()
    for meth, fit in FITS.items():
        v = read_vectors(res, meth)
        m = strain_maps(v, StrainConfig(reference="0:1,0:1", **fit))
        err = np.stack([m[k].ravel() - strain[:, i] for i, k in enumerate(("exx", "eyy", "exy"))], 1) * 100
        print(f"{path.parent.name} {path.stem} {meth:8s} rot {np.round(rot, 2).tolist()}")
        print("   err % exx", err[:, 0].round(3), "eyy", err[:, 1].round(3), "exy", err[:, 2].round(3),
              "rot err deg", (m["theta_deg"].ravel() - rot).round(3))
