"""py4DSTEM's find_Bragg_disks against fourdcrystal's classical baseline and model, on the same test patterns.

    python scripts/compare_py4dstem.py release release/dataset            # the shipped model's card settings
    python scripts/compare_py4dstem.py MODEL DATASET --tune-limit 140 --venv ~/py4dstem-venv

py4DSTEM 0.14 needs numpy < 2, so it runs in its own virtual environment (``--venv``; created
and filled with ``pip install 'py4DSTEM>=0.14,<0.15' 'numpy<2'`` when missing) through
``scripts/py4dstem_worker.py``; this script scores what it returns with fourdcrystal's own
matching, so all three methods are measured by one ruler.

py4DSTEM gets the same care as our baseline: its settings (kernel: flat, gaussian or sigmoid;
correlation power; smoothing of the correlation; minimum spacing; minimum relative intensity)
are chosen by a grid search on the validation split to maximise the F1 averaged over the
doses (the same grid as ``fourdcrystal tune``; scored on ``--grid-samples`` val samples, its
six best settings then on the whole split), then its sub-pixel mode (poly or multicorr) by rms
position error. Both methods find
peaks on the whole pattern and are scored only in the usable region (one disk radius inside
the edge), as ``fourdcrystal evaluate`` does. The model and our baseline use the settings in
the model card (``fourdcrystal tune``). Prints a table and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from fourdcrystal.detection.detect import baseline_peaks, model_peaks, settings_from_card
from fourdcrystal.evaluation.evaluate import EvalConfig, add_scores, dose_name, Tally, score, split_samples
from fourdcrystal.detection.peaks import Peaks
from fourdcrystal.model.card import load_model, resolve_weights
from fourdcrystal.training.data import open_dataset
from fourdcrystal.evaluation.tune import TuneConfig

WORKER = Path(__file__).with_name("py4dstem_worker.py")
# the same grid as fourdcrystal tune gives our baseline
_GRID = TuneConfig()
KERNELS = [{"kernel": k} if v is None else {"kernel": k, ("sigma" if k == "gaussian" else "radii"): v}
           for k, v in _GRID.kernels]
CORR_POWER, SIGMA_CC = _GRID.corr_power, _GRID.sigma_px
SPACING, THRESHOLDS = _GRID.baseline_spacing_px, _GRID.baseline_min_relative


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if python.exists():
        return python
    print(f"creating {venv} with py4DSTEM 0.14 (numpy < 2) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "py4DSTEM==0.14.18", "numpy<2"], check=True)
    return python


def run_worker(python: Path, samples: list, settings: list[dict], tmp: Path, tag: str) -> list[list[Peaks]]:
    """py4DSTEM over the samples' patterns for each setting: [setting][sample] → Peaks (pixels, intensity)."""
    np.savez(tmp / f"{tag}.npz", patterns=np.stack([s.pattern for s in samples]).astype(np.float32),
             probes=np.stack([s.probe for s in samples]).astype(np.float32))
    (tmp / f"{tag}.json").write_text(json.dumps(settings))
    subprocess.run([str(python), str(WORKER), str(tmp / f"{tag}.npz"), str(tmp / f"{tag}.json"),
                    str(tmp / f"{tag}-out.npz")], check=True)
    res = np.load(tmp / f"{tag}-out.npz")
    out = []
    for k in range(len(settings)):
        off, pos, inten = res[f"s{k}_offsets"], res[f"s{k}_pos"], res[f"s{k}_intensity"]
        out.append([Peaks(pos[off[i]:off[i + 1]], inten[off[i]:off[i + 1]]) for i in range(len(samples))])
    return out


def in_usable(p: Peaks, usable: np.ndarray, min_relative: float = 0.0) -> Peaks:
    """Peaks ≥ min_relative × the strongest (py4DSTEM's relative threshold) that lie in the usable region."""
    if len(p) == 0:
        return p
    ij = np.clip(np.rint(p.pos_px).astype(int), 0, np.array(usable.shape) - 1)
    keep = usable[ij[:, 0], ij[:, 1]] & (p.intensity >= min_relative * p.intensity.max())
    return Peaks(p.pos_px[keep], p.intensity[keep])


def tally(samples, found: list[Peaks], radius: float) -> dict[str, Tally]:
    t: dict[str, Tally] = defaultdict(Tally)
    for s, p in zip(samples, found):
        sc = score(p, s.exact, s.dk_invA, p.intensity, None, None)
        add_scores(t[dose_name(s.dose)], sc)
    return t


def _best(samples: list, grid: list[dict], found: list, names: list, radius: float, top: int = 1) -> list:
    """The ``top`` (mean F1 over doses, settings with their threshold) of a grid run at the lowest threshold."""
    scored = []
    for g, per_sample in zip(grid, found):
        for t in THRESHOLDS:
            tl = tally(samples, [in_usable(p, s.usable, t) for p, s in zip(per_sample, samples)], radius)
            scored.append((float(np.mean([tl[d].summary()["f1"] for d in names])), {**g, "minRelativeIntensity": t}))
    return sorted(scored, key=lambda x: -x[0])[:top]


def tune_py4dstem(python: Path, val: list, names: list, radius: float, tmp: Path, first: int,
                  finalists: int = 6) -> tuple[dict, float, list]:
    """Grid search on the validation samples: (chosen settings, their mean F1 over doses, rms per sub-pixel mode).

    py4DSTEM's own peak filtering makes a run on thousands of low-threshold maxima slow (about a
    minute per setting over the 1260 val samples on 2 CPU cores), so the whole grid is scored on
    ``first`` val samples spread evenly over the split and its best ``finalists`` on the whole split.
    """
    grid = [{**k, "corrPower": cp, "sigma_cc": sg, "minPeakSpacing": sp, "minRelativeIntensity": min(THRESHOLDS),
             "edgeBoundary": 0, "maxNumPeaks": 400, "subpixel": "poly"}
            for k in KERNELS for cp in CORR_POWER for sg in SIGMA_CC for sp in SPACING]
    head = val[::max(1, len(val) // first)][:first]  # spread over the split's crystals, thicknesses and doses
    print(f"py4DSTEM: {len(grid)} settings × {len(THRESHOLDS)} thresholds on {len(head)} val samples", flush=True)
    short = _best(head, grid, run_worker(python, head, grid, tmp, "val-head"), names, radius, top=3 * finalists)
    seen, final = set(), []
    for _, g in short:  # distinct settings (a threshold is a filter: one run serves them all)
        key = json.dumps({k: v for k, v in g.items() if k != "minRelativeIntensity"}, sort_keys=True)
        if key not in seen and len(final) < finalists:
            seen.add(key)
            final.append({**g, "minRelativeIntensity": min(THRESHOLDS)})
    print(f"py4DSTEM: the best {len(final)} on all {len(val)} val samples", flush=True)
    best_f1, best = _best(val, final, run_worker(python, val, final, tmp, "val"), names, radius)[0]
    subs = [{**best, "subpixel": sub, "upsample_factor": 16} for sub in ("poly", "multicorr")]
    found = run_worker(python, val, subs, tmp, "val-sub")
    rms = []
    for per_sample in found:
        tl = tally(val, [in_usable(p, s.usable) for p, s in zip(per_sample, val)], radius)
        rms.append(float(np.mean([tl[d].summary()["position_rms_px"] or np.inf for d in names])))
    return subs[int(np.argmin(rms))], best_f1, rms


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="model.pt with its card, or 'release'")
    ap.add_argument("dataset")
    ap.add_argument("--venv", default=".py4dstem-venv", help="the py4DSTEM environment (made when missing)")
    ap.add_argument("--doses", default="clean,1e5,1e4")
    ap.add_argument("--tune-limit", type=int, default=None, help="tune py4DSTEM on the first N val patterns only")
    ap.add_argument("--grid-samples", type=int, default=180,
                    help="val samples (pattern × dose) that score the whole grid; its best 6 are scored on all")
    ap.add_argument("--limit", type=int, default=None, help="only the first N test patterns")
    ap.add_argument("--thick-from", type=float, default=200.0, help="also report patterns at least this thick (Å)")
    ap.add_argument("--out", default="compare_py4dstem.json")
    ap.add_argument("--py4dstem-settings", help="a JSON file written by an earlier run (--out): reuse its py4DSTEM "
                                                "settings instead of tuning them again")
    args = ap.parse_args(argv)

    python = ensure_venv(Path(args.venv))
    doses = tuple(None if d == "clean" else float(d) for d in args.doses.split(","))
    ec = replace(EvalConfig(), doses_e=doses)
    weights = resolve_weights(args.model)
    model, card = load_model(weights)
    settings, tuned = settings_from_card(card)
    if not tuned:
        print("warning: the card has no tuned settings (fourdcrystal tune); ours run with the defaults")
    _, where, _ = open_dataset(args.dataset)
    val = [] if args.py4dstem_settings else list(split_samples(None, args.dataset, where["val"][:args.tune_limit], ec))
    names = [dose_name(d) for d in doses]
    radius = ec.match_radius_px

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.py4dstem_settings:
            earlier = json.loads(Path(args.py4dstem_settings).read_text())
            chosen, best_f1 = earlier["py4dstem_settings"], earlier["py4dstem_val_mean_f1"]
            rms = list(earlier["py4dstem_subpixel_val_rms_px"].values())
        else:
            chosen, best_f1, rms = tune_py4dstem(python, val, names, radius, tmp, args.grid_samples)
        print(f"py4DSTEM settings chosen on val (mean F1 {best_f1:.3f}): {json.dumps(chosen)}", flush=True)

        from fourdcrystal.model.inference import Predictor

        test_loc = where["test"][:args.limit]
        test = list(split_samples(Predictor(model, card), args.dataset, test_loc, ec))
        p4d = run_worker(python, test, [chosen], tmp, "test")[0]
    results: dict = defaultdict(lambda: defaultdict(Tally))
    for s, p in zip(test, p4d):
        found = {"model": model_peaks(s.vg_pred[None], s.pattern[None], s.probe, settings, s.usable)[0],
                 "baseline": baseline_peaks(s.pattern[None], s.probe, settings, s.usable)[0],
                 "py4DSTEM": in_usable(p, s.usable)}
        groups = ["all"] + (["thick"] if s.thickness_A >= args.thick_from else [])
        for m, pk in found.items():
            sc = score(pk, s.exact, s.dk_invA, pk.intensity, None, None)
            for g in groups:
                add_scores(results[(g, dose_name(s.dose))][m], sc)
    table = {f"{g}/{d}": {m: t.summary() for m, t in by_m.items()} for (g, d), by_m in results.items()}
    report = {"model": str(weights), "dataset": args.dataset, "test_patterns": len(test_loc),
              "val_patterns_for_tuning": len(val) // len(doses) if val else "see --py4dstem-settings", "py4dstem_settings": chosen,
              "py4dstem_val_mean_f1": best_f1, "py4dstem_subpixel_val_rms_px": dict(zip(("poly", "multicorr"), rms)),
              "ours_settings": settings.as_dict(), "ours_tuned": tuned, "thick_from_A": args.thick_from,
              "table": table, "seconds": time.perf_counter() - t0}
    Path(args.out).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"\n{'patterns':>10s} {'dose':>6s} {'method':>9s} {'F1':>6s} {'prec':>6s} {'recall':>6s} {'rms px':>7s}")
    for key in sorted(table, key=lambda k: (k.split("/")[0] != "all", names.index(k.split("/")[1]))):
        g, d = key.split("/")
        label = "all" if g == "all" else f">={args.thick_from:g} Å"
        for m, r in table[key].items():
            rms_s = f"{r['position_rms_px']:7.3f}" if r["position_rms_px"] is not None else "      -"
            print(f"{label:>10s} {d:>6s} {m:>9s} {r['f1']:6.3f} {r['precision']:6.3f} {r['recall']:6.3f} {rms_s}")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
