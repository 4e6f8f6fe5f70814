"""From grid.py's rows: each method's fit chosen on the tuning series once (as the survey does) and per dose;
test-series rms strain error (%) by dose and thickness for both choices (experiment).

    python experiments/strain_by_dose/choose.py GRID.json --json experiments/strain_by_dose/results-sbench240.json
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

FAILED = 1.0  # as the survey: a position not fitted counts 1 % when settings are chosen


def mean_error(rows):
    return float(np.mean([FAILED if r["strain_rms_error_pct"] is None or r["fitted"] < r["positions"]
                          else r["strain_rms_error_pct"] for r in rows]))


def pooled(rows):
    """rms over the fitted positions of the files (each file's rms squared, weighted by its fitted positions)."""
    n = sum(r["fitted"] for r in rows if r["strain_rms_error_pct"] is not None)
    s = sum(r["fitted"] * r["strain_rms_error_pct"] ** 2 for r in rows if r["strain_rms_error_pct"] is not None)
    return (np.sqrt(s / n) if n else None), n, sum(r["positions"] for r in rows)


ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("grid", help="grid.py's rows (JSON)")
ap.add_argument("--json", help="write the choices and the test errors here")
args = ap.parse_args()
d = json.loads(open(args.grid).read())
out = args.json
by = defaultdict(list)  # (split, method, fit) -> rows
for r in d["rows"]:
    by[(r["split"], r["method"], json.dumps(r["fit"]))].append(r)
methods = sorted({r["method"] for r in d["rows"]}, key=["model", "baseline", "py4DSTEM"].index)
fits = sorted({json.dumps(r["fit"]) for r in d["rows"]})
doses = ["clean", "1e5", "1e4", "1e3"]
result = {}
for m in methods:
    once = min(fits, key=lambda f: mean_error(by[("tune", m, f)]))
    per = {dose: min(fits, key=lambda f: mean_error([r for r in by[("tune", m, f)] if r["dose"] == dose])) for dose in doses}
    result[m] = {"once": json.loads(once), "per_dose": {k: json.loads(v) for k, v in per.items()}, "test": {}}
    for dose in doses:
        for t in sorted({r["thickness_A"] for r in d["rows"]}):
            sel = lambda f: [r for r in by[("test", m, f)] if r["dose"] == dose and r["thickness_A"] == t]
            result[m]["test"][f"{dose} {t:g}"] = {"once": pooled(sel(once)), "per_dose": pooled(sel(per[dose]))}
for m in methods:
    print(m, "once:", result[m]["once"])
    for dose, f in result[m]["per_dose"].items():
        print(f"  {dose}: {f}")
print("dose thickness | " + " | ".join(f"{m} once / per dose" for m in methods))
for key in result[methods[0]]["test"]:
    cells = []
    for m in methods:
        a, b = result[m]["test"][key]["once"], result[m]["test"][key]["per_dose"]
        cells.append(f"{a[0]:.3f} ({a[1]}/{a[2]}) / {b[0]:.3f} ({b[1]}/{b[2]})" if a[0] is not None and b[0] is not None
                     else f"{a} / {b}")
    print(key, "|", " | ".join(cells))
if out:
    with open(out, "w") as f:
        json.dump({"grid": args.grid, "survey": d["survey"], "config": d["config"], "methods": result}, f, indent=1)
