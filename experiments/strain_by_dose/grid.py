"""Every fit setting of the strain survey's grid on every file of a finished survey, tuning and test series
(experiment): does a fit chosen per dose beat the one fit per method the survey chooses?

    python experiments/strain_by_dose/grid.py OUT --json experiments/strain_by_dose/grid-OUT.json

Reads the survey's cached vectors (OUT/vectors/<key>, py4DSTEM's .npz there too) through the survey's own
functions; writes every (split, file, method, fit) row.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fourdcrystal.evaluation.strain_benchmark import (FIT_GRID, SPLITS, StrainBenchmarkConfig, predict_vectors,
                                                      py4dstem_vectors, score_fit, simulate_series_files)

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("out")
ap.add_argument("--json", required=True)
ap.add_argument("--py4dstem-python", default=".py4dstem-venv/bin/python")
a = ap.parse_args()
out = Path(a.out)
report = json.loads((out / "report.json").read_text())
config = StrainBenchmarkConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in report["config"].items()})
folders = simulate_series_files(out, config)  # all there: nothing is simulated
work = next(p for p in (out / "vectors").iterdir() if p.is_dir())
files = {s: [f / n for f in folders if f.parent.name == s for n in json.loads((f / "truth.json").read_text())["files"]]
         for s in SPLITS}
vectors = {s: predict_vectors(None, files[s], work) for s in SPLITS}
for s in SPLITS:
    py4dstem_vectors(Path(a.py4dstem_python), files[s], vectors[s], report["py4dstem_settings"], work)
rows = []
for s in SPLITS:
    for v in vectors[s]:
        for m in report["methods"]:
            rows += [score_fit(v, m, fit) | {"split": s, "file": v.file.name, "series": v.file.parent.name}
                     for fit in FIT_GRID]
    print(s, len(rows), flush=True)
Path(a.json).write_text(json.dumps({"survey": str(out), "config": report["config"], "rows": rows}) + "\n")
