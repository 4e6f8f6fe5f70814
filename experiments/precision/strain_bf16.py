"""Does bf16 move the strain? (experiment) The model's vectors in fp32 and in bf16 on the finished series of a
strain-benchmark folder, each fitted with the survey's model fit (quartic V_g weights, tolerance 0.1, offsets
taken off at the reference), rms strain error (%) against the applied strain.

    python experiments/precision/strain_bf16.py OUT [SERIES ...] [--split tune]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fourdcrystal.errors import FourdError
from fourdcrystal.io.vectors import read_vectors
from fourdcrystal.prediction.stage import PredictConfig, predict
from fourdcrystal.maps.strain import StrainConfig, strain_maps
from fourdcrystal.evaluation.strain_benchmark import file_truth

FIT = {"weights": "quartic", "tolerance": 0.1, "correct": "reference"}  # the survey's choice for the model

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("series", nargs="+")
ap.add_argument("--split", default="tune")
ap.add_argument("--json", help="write the rows here")
a = ap.parse_args()
work = Path(a.out) / "vectors-precision"
work.mkdir(exist_ok=True)
rows = []
for name in a.series:
    for f in sorted((Path(a.out) / "series" / a.split / name).glob("series-*.h5")):
        v = file_truth(f)
        row = {"series": name, "file": f.stem}
        for prec in ("fp32", "bf16"):
            res = work / f"{a.split}-{name}-{f.stem}-{prec}.h5"
            if not res.is_file():
                predict(None, str(f), res, PredictConfig(method="model", tilt=False, precision=prec))
            try:
                mp = strain_maps(read_vectors(res, "model"), StrainConfig(reference="0:1,0:1", **FIT))
            except FourdError:  # the reference itself not fitted (10³ e⁻): no strain for this file
                row[prec] = float("nan")
                continue
            est = np.stack([mp[k].ravel() for k in ("exx", "eyy", "exy")], 1)[1:]
            ok = np.isfinite(est).all(1)
            row[prec] = float(100 * np.sqrt(np.mean((est[ok] - v.strain.reshape(-1, 3)[1:][ok]) ** 2)))
        rows.append(row)
        print(f"{name} {f.stem}: strain rms error fp32 {row['fp32']:.3f} %, bf16 {row['bf16']:.3f} %, "
              f"difference {row['bf16'] - row['fp32']:+.3f}", flush=True)
d = np.array([r["bf16"] - r["fp32"] for r in rows])
d = d[np.isfinite(d)]
print(f"{len(d)} files scored: bf16 − fp32 rms strain error, largest |difference| {np.abs(d).max():.4f} %, "
      f"mean {d.mean():+.4f} %")
if a.json:
    Path(a.json).write_text(json.dumps({"command": "python experiments/precision/strain_bf16.py " + " ".join(
        f"{x}" for x in [a.out, *a.series, "--split", a.split]), "fit": FIT, "rows": rows}, indent=1) + "\n")
