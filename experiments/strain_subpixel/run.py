"""Sub-pixel placement of the model's peaks on the detector's correlation, scored by strain (experiment).

    python experiments/strain_subpixel/run.py SBENCH {tune|test} OUT.json [--doses clean,1e5] [--variants a,b]

For every series file of a strain-benchmark folder, predict runs with the shipped model and one variant of
the correlation that places its peaks (kernel, sub-pixel mode); the strain fit (the survey's model fit
settings and a few others) is scored against the applied truth, rms over the strained positions.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from fourdcrystal.detection.detect import settings_from_card
from fourdcrystal.io.vectors import read_vectors
from fourdcrystal.prediction.stage import PredictConfig, predict
from fourdcrystal.evaluation.strain_benchmark import file_truth, score_fit
from fourdcrystal.model.card import read_card, resolve_weights

VARIANTS = {
    "sigmoid-parabolic": dict(kernel="sigmoid", subpixel="parabolic"),
    "sigmoid-dft": dict(kernel="sigmoid", subpixel="dft"),
    "flat-dft": dict(kernel="flat", subpixel="dft"),
    "flat-parabolic": dict(kernel="flat", subpixel="parabolic"),
    "gaussian-dft": dict(kernel="gaussian", subpixel="dft"),
    "sigmoid-fit": dict(kernel="sigmoid", subpixel="fit"),
    "flat-fit": dict(kernel="flat", subpixel="fit"),
    "sigmoid-parabolic-s0.5": dict(kernel="sigmoid", subpixel="parabolic", sigma_px=0.5),
    "sigmoid-parabolic-s1": dict(kernel="sigmoid", subpixel="parabolic", sigma_px=1.0),
    "sigmoid-parabolic-p0.75": dict(kernel="sigmoid", subpixel="parabolic", corr_power=0.75),
}
FITS = [{"weights": w, "tolerance": t, "correct": "reference"} for w in ("squared", "intensity") for t in (0.15, 0.25)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bench")
    ap.add_argument("split", choices=("tune", "test"))
    ap.add_argument("out")
    ap.add_argument("--doses", default="clean,1e5")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    a = ap.parse_args()
    doses = a.doses.split(",")
    files = sorted(p for p in (Path(a.bench) / "series" / a.split).glob("*/series-*.h5")
                   if p.stem.rsplit("-", 1)[1] in doses)
    base, _ = settings_from_card(read_card(resolve_weights("release")))
    result = json.loads(Path(a.out).read_text()) if Path(a.out).is_file() else {}
    for name in a.variants.split(","):
        if name in result:
            continue
        v = VARIANTS[name]
        b = base.baseline
        b = replace(b, kernel=v["kernel"], peaks=replace(b.peaks, subpixel=v["subpixel"]),
                    sigma_px=v.get("sigma_px", b.sigma_px), corr_power=v.get("corr_power", b.corr_power))
        settings = replace(base, baseline=b)
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for k, path in enumerate(files):
                t = file_truth(path)
                res = Path(tmp) / f"{k}.h5"
                predict("release", str(path), res, PredictConfig(settings=settings, tilt=False, baseline=False))
                t.methods["model"] = read_vectors(res, "model")
                for fit in FITS:
                    rows.append(score_fit(t, "model", fit) | {"file": str(path)})
                print(name, k, path.parent.name, path.stem, rows[-4]["strain_rms_error_pct"], file=sys.stderr, flush=True)
        result[name] = rows
        Path(a.out).write_text(json.dumps(result))
    summarise(result)


def summarise(result: dict) -> None:
    for name, rows in result.items():
        print(name)
        for fit in FITS:
            cells = {}
            for r in rows:
                if r["fit"] != fit:
                    continue
                e = r["strain_rms_error_pct"]
                cells.setdefault((r["dose"], r["thickness_A"]), []).append(np.inf if e is None else e)
            line = "  ".join(f"{d}/{t:g}:{np.sqrt(np.mean(np.square(v))):.3f}" for (d, t), v in sorted(cells.items()))
            print(f"  {fit['weights']:9s} {fit['tolerance']}: {line}")


if __name__ == "__main__":
    main()
