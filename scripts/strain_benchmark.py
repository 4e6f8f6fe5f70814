#!/usr/bin/env python
"""Strain and rotation errors of `fourdcrystal strain` on the model's and the tuned baseline's vectors.

Runs predict (--baseline) on every file strain_series.py wrote, then strain with both methods
(reference: scan position (0, 0), the unstrained specimen), and compares with the truth in the
files. Prints a table per thickness and dose and writes SERIES/strain_benchmark.json.

With ``--tune-on VAL`` each method's settings are first chosen on another series (another
seed) by the lowest mean strain error there, so neither method is scored with settings picked
on the test series: the peak threshold (the card's tuned one, which maximises the Bragg-peak F1,
times 0.5, 1 or 2: a strain fit may prefer fewer, surer vectors or more of them), the fit weights,
the indexing tolerance and the reflection-offset correction. Both methods get the same grid.

    python scripts/strain_series.py --out strain-series --doses clean,1e5,1e4
    python scripts/strain_series.py --out strain-series-val --seed 1 --doses clean,1e5,1e4
    python scripts/strain_benchmark.py strain-series --tune-on strain-series-val
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np


THRESHOLD_FACTORS = (0.5, 1.0, 2.0)
GRID = [{"threshold_factor": f, "weights": w, "tolerance": t, "correct": c}
        for f in THRESHOLD_FACTORS for w in ("squared", "intensity", "none", "quartic") for t in (0.1, 0.15, 0.25, 0.35)
        for c in ("none", "reference")]


def scaled_settings(model: str, factor: float, model_grid: bool = False):
    """The card's tuned peak settings with both methods' thresholds (the model's low-dose one too) multiplied by
    ``factor``; with ``model_grid`` the model's peaks placed on its own grid (not on the detector's pixels)."""
    from dataclasses import replace

    from fourdcrystal.detection.detect import settings_from_card
    from fourdcrystal.model.card import card_path, resolve_weights

    card = json.loads(card_path(resolve_weights(None if model == "release" else model)).read_text())
    st, _ = settings_from_card(card)
    b = st.baseline
    low = st.model.low_dose_min_relative
    return replace(st, model=replace(st.model, min_relative=st.model.min_relative * factor,
                                     low_dose_min_relative=None if low is None else low * factor,
                                     fine_detector_refine="model_grid" if model_grid
                                     else st.model.fine_detector_refine),
                   baseline=replace(b, peaks=replace(b.peaks, min_relative=b.peaks.min_relative * factor)))


def score_folder(folder: Path, model: str, settings: dict[str, list[dict]], model_grid: bool = False) -> list[dict]:
    """predict once per file and threshold factor (kept in FOLDER/benchmark), then strain for every method and
    setting."""
    import h5py

    from fourdcrystal.prediction.stage import PredictConfig, predict

    truth = json.loads((folder / "truth.json").read_text())
    work = folder / "benchmark"
    work.mkdir(exist_ok=True)
    rows = []
    for name in truth["files"]:
        data = folder / Path(name).name
        with h5py.File(data) as f:
            strain_true = f["truth/strain"][()]
            rot_true = f["truth/rotation_deg"][()]
            thickness, dose = float(f.attrs["thickness_A"]), str(f.attrs["dose"])
        for factor in sorted({o["threshold_factor"] for options in settings.values() for o in options}):
            peak_settings = scaled_settings(model, factor, model_grid)
            # the cache is named by the settings too: after `fourdcrystal tune` changes the card, vectors found
            # with the old settings are not reused (after a change of the code, delete SERIES/benchmark)
            digest = hashlib.sha256(json.dumps([model, peak_settings.as_dict()], sort_keys=True).encode()).hexdigest()
            vec = work / f"{data.stem}-x{factor:g}-{digest[:10]}-bragg.h5"
            if not vec.exists():
                predict(None if model == "release" else model, str(data), vec,
                        PredictConfig(baseline="baseline" in settings, settings=peak_settings))
            for method, options in settings.items():
                for opt in (o for o in options if o["threshold_factor"] == factor):
                    rows.append(_score(vec, work / f"{data.stem}-{method}-strain.h5", method, opt, strain_true,
                                       rot_true, thickness, dose))
    return rows


def _score(vec: Path, out: Path, method: str, opt: dict, strain_true, rot_true, thickness: float, dose: str) -> dict:
    """One strain fit of one method's vectors (found at ``opt``'s threshold) against the truth."""
    from fourdcrystal.maps.strain import StrainConfig, run_strain

    from fourdcrystal.errors import FourdError

    fit = {k: v for k, v in opt.items() if k != "threshold_factor"}
    try:
        res = run_strain(vec, out, StrainConfig(method=method, reference="0:1,0:1", **fit), overwrite=True, png=False)
    except FourdError:  # not even the reference could be fitted with these settings: every position failed
        return {"thickness_nm": thickness / 10, "dose": dose, "method": method, "settings": opt,
                "strain_rms_error_pct": None, "strain_max_error_pct": None, "rotation_rms_error_deg": None,
                "fitted": 0, "positions": int(np.size(rot_true)), "indexed_vectors_mean": 0.0}
    m = res["maps"]
    ok = m["fit_ok"].copy()
    ok[0, 0] = False  # the reference itself is zero by construction
    err = np.stack([m[k] - strain_true[..., i] for i, k in enumerate(("exx", "eyy", "exy"))], axis=-1)
    return {
        "thickness_nm": thickness / 10, "dose": dose, "method": method, "settings": opt,
        "strain_rms_error_pct": float(100 * np.sqrt(np.mean(err[ok] ** 2))) if ok.any() else None,
        "strain_max_error_pct": float(100 * np.abs(err[ok]).max()) if ok.any() else None,
        "rotation_rms_error_deg": float(np.sqrt(np.mean((m["theta_deg"] - rot_true)[ok] ** 2))) if ok.any() else None,
        "fitted": int(m["fit_ok"].sum()), "positions": int(m["fit_ok"].size),
        "indexed_vectors_mean": float(m["n_indexed"][m["fit_ok"]].mean()) if m["fit_ok"].any() else 0.0,
    }


def choose(rows: list[dict], method: str) -> tuple[dict, float]:
    """The setting with the lowest mean strain error over the files (a failed fit counts as 1 %)."""
    best = None
    for opt in GRID:
        errs = [r["strain_rms_error_pct"] if r["strain_rms_error_pct"] is not None and r["fitted"] == r["positions"]
                else 1.0 for r in rows if r["method"] == method and r["settings"] == opt]
        if errs and (best is None or np.mean(errs) < best[1]):
            best = (opt, float(np.mean(errs)))
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("series", help="folder written by scripts/strain_series.py")
    ap.add_argument("--model", default="release", help="model.pt or release [default: release]")
    ap.add_argument("--tune-on", help="a second series folder (another seed) to choose each method's settings on")
    ap.add_argument("--json", help="result file [default: SERIES/strain_benchmark.json]")
    ap.add_argument("--model-grid", action="store_true",
                    help="place the model's peaks on its own grid as the card's refine says, not on the measured "
                         "correlation at the detector's finer pixels (fine_detector_refine model_grid)")
    ap.add_argument("--methods", default="model,baseline", help="methods to score [default: model,baseline]")
    args = ap.parse_args(argv)

    from fourdcrystal.progress import set_quiet

    set_quiet(True)
    folder = Path(args.series)
    truth = json.loads((folder / "truth.json").read_text())
    chosen = {m: {"threshold_factor": 1.0, "weights": "intensity", "tolerance": 0.25, "correct": "none"}
              for m in args.methods.split(",")}
    tuning = None
    if args.tune_on:
        val_rows = score_folder(Path(args.tune_on), args.model, {m: GRID for m in chosen}, args.model_grid)
        tuning = {}
        for m in chosen:
            chosen[m], err = choose(val_rows, m)
            tuning[m] = {"settings": chosen[m], "val_mean_strain_rms_error_pct": err}
            print(f"{m}: chose {chosen[m]} on {args.tune_on} (mean strain rms error {err:.3f} %)")
    rows = score_folder(folder, args.model, {m: [chosen[m]] for m in chosen}, args.model_grid)
    out = Path(args.json) if args.json else folder / "strain_benchmark.json"
    out.write_text(json.dumps({"series": truth | {"files": [Path(p).name for p in truth["files"]]},
                               "model": args.model, "model_grid": args.model_grid, "settings": chosen, "tuning": tuning,
                               "tuned_on": args.tune_on,
                               "rows": rows}, indent=1) + "\n")
    print(f"{truth['structure']} {truth['zone_axis']}, {truth['scan_shape'][0]}×{truth['scan_shape'][1]} positions, "
          f"strain ±{100 * np.abs(np.array(truth['strain'])).max():.1f} %, rotations up to "
          f"{np.abs(truth['rotation_deg']).max():.1f}°; reference = position (0, 0)")
    print(f"{'thickness':>9s} {'dose':>6s} | {'strain rms error (%)':>22s} | {'rotation rms error (°)':>22s} | "
          f"{'indexed vectors':>16s} | {'fitted':>13s}")
    print(f"{'nm':>9s} {'e-':>6s} | {'model':>10s} {'baseline':>11s} | {'model':>10s} {'baseline':>11s} | "
          f"{'model':>7s} {'baseline':>8s} | {'model':>6s} {'baseline':>6s}")
    key = sorted({(r["dose"] != "clean", r["dose"], r["thickness_nm"]) for r in rows})

    def f(v, fmt):
        return format(v, fmt) if v is not None else "–"

    missing = {"strain_rms_error_pct": None, "rotation_rms_error_deg": None, "indexed_vectors_mean": 0.0,
               "fitted": 0, "positions": 0}  # a method not scored (--methods)
    for _, dose, t in key:
        m, b = (next((r for r in rows if r["dose"] == dose and r["thickness_nm"] == t and r["method"] == meth),
                     missing) for meth in ("model", "baseline"))
        print(f"{t:9.0f} {dose:>6s} | {f(m['strain_rms_error_pct'], '10.3f')} {f(b['strain_rms_error_pct'], '11.3f')} | "
              f"{f(m['rotation_rms_error_deg'], '10.3f')} {f(b['rotation_rms_error_deg'], '11.3f')} | "
              f"{m['indexed_vectors_mean']:7.1f} {b['indexed_vectors_mean']:8.1f} | "
              f"{m['fitted']:>3d}/{m['positions']:<2d} {b['fitted']:>3d}/{b['positions']:<2d}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
