"""Score the finished series of a (possibly unfinished) strain-benchmark folder with the model and the baseline
(experiment): predict --baseline on each file, fit with the survey's chosen settings, rms strain error (%).

    python experiments/strain_floor/score_series.py OUT [SERIES ...] --fits REPORT.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fourdcrystal.prediction.stage import PredictConfig, predict
from fourdcrystal.io.vectors import read_vectors
from fourdcrystal.maps.strain import StrainConfig, strain_maps
from fourdcrystal.evaluation.strain_benchmark import file_truth

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("series", nargs="+")
ap.add_argument("--fits", required=True, help="a survey report.json: each method's chosen fit settings")
ap.add_argument("--split", default="test")
a = ap.parse_args()
fits = {m: v["fit"] for m, v in json.loads(Path(a.fits).read_text())["chosen_on_tune_series"].items()}
work = Path(a.out) / "vectors-partial"
work.mkdir(exist_ok=True)
for name in a.series:
    for f in sorted((Path(a.out) / "series" / a.split / name).glob("series-*.h5")):
        res = work / f"{a.split}-{name}-{f.stem}-bragg.h5"  # the split in the name: tune and test share stems
        if not res.is_file():
            predict(None, str(f), res, PredictConfig(baseline=True, tilt=False))
        v = file_truth(f)
        line = [f"{name} {f.stem}"]
        for m in ("model", "baseline"):
            try:
                mp = strain_maps(read_vectors(res, m), StrainConfig(reference="0:1,0:1", **fits[m]))
                est = np.stack([mp[k].ravel() for k in ("exx", "eyy", "exy")], 1)[1:]
                ok = np.isfinite(est).all(1)
                e = 100 * np.sqrt(np.mean((est[ok] - v.strain.reshape(-1, 3)[1:][ok]) ** 2))
                line.append(f"{m} {e:.3f} % ({ok.sum()}/8)")
            except Exception as exc:  # noqa: BLE001
                line.append(f"{m} failed ({type(exc).__name__})")
        print("  ".join(line), flush=True)
