"""Why is q_z not learned? A focused experiment: one crystal, tilts to ±10 mrad, a few training variants.

    python scripts/qz_experiment.py --out qz-exp                    # all of it (~30 min on 2 CPU cores)
    python scripts/qz_experiment.py --out qz-exp --variants fixed10 # one variant

Si (diamond, a = 5.431 Å) is written as three CIF files, so that the project's split by crystal
gives one copy each to train, val and test: the same structure, different specimens (zone axis,
in-plane rotation, tilt drawn uniformly in a disk of radius ``--tilt-max`` mrad, thickness). The
q_z label of a beam-tilted specimen is, to first order, θ·g (Å⁻¹): to predict it the network has
to read the tilt from the pattern (the excitation errors show as intensity differences within and
between the disks).

For each variant it trains the default network and runs ``fourdcrystal evaluate`` on the test
copy, clean, and reads the q_z error at the matched peaks beside the error of predicting q_z = 0
(the labels' mean |q_z| there). Variants:

* ``default``: the project's default loss (learned task weights, Kendall et al.);
* ``fixed10``: fixed weights, q_z term ×10;
* ``qzonly``: the q_z term alone (V_g weight 0): can the network learn q_z at all?
* ``peaks``, ``coords-peaks``: the q_z loss on the reflections only (``train.qz_min_vg: 0.05``, the
  label peaks' threshold): weighted by V_g, the diffuse background between the reflections holds
  most of the q_z loss (measured on this data: 78 % of Σ V_g·q_z², where q_z is larger and noisier
  than on the reflections), so the signal θ·g at the reflections hardly moves the loss;
* ``coords``, ``coords-fixed10``: as ``default`` and ``fixed10`` with two coordinate input channels
  (``train.model.coords``). q_z ≈ θ·g grows with the distance from q = 0, and a stack of
  convolutions cannot tell where q = 0 is; with the pixel offsets as inputs it can form θ·g.

A linear probe asks whether the information is in the patterns at all, without a network: per
label peak, the Friedel difference (I(g) − I(−g)) / (I(g) + I(−g)) of the measured intensities at
g and −g, fitted to the label q_z on the training copy by least squares (one slope per |g| shell is
too many for this data; one slope for all), scored on the test copy.

Writes ``OUT/qz_experiment.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

VARIANTS = {
    "default": {},
    "fixed10": {"loss_weighting": "fixed", "vg_weight": 1.0, "qz_weight": 10.0},
    "qzonly": {"loss_weighting": "fixed", "vg_weight": 0.0, "qz_weight": 1.0},
    "coords": {"model": {"coords": True}},
    "coords-fixed10": {"model": {"coords": True}, "loss_weighting": "fixed", "vg_weight": 1.0, "qz_weight": 10.0},
    "peaks": {"qz_min_vg": 0.05, "loss_weighting": "fixed", "vg_weight": 1.0, "qz_weight": 10.0},
    "coords-peaks": {"model": {"coords": True}, "qz_min_vg": 0.05, "loss_weighting": "fixed", "vg_weight": 1.0,
                     "qz_weight": 10.0},
}


def _si_cif() -> str:
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    s = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    return str(CifWriter(s, symprec=0.01))


def _run(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "fourdcrystal.cli", *args], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"fourdcrystal {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return res.stdout


def _config(out: Path, args) -> Path:
    import yaml

    cfg = {
        "select": {"sources": ["files"], "per_prototype": "all", "files": {"paths": [str(out / "cif")]},
                   "out": str(out / "catalogue")},
        "supercell": {"zone_axes_per_crystal": 2, "max_index": 1, "specimens_per_axis": args.specimens,
                      "tilt_mrad_max": args.tilt_max, "lateral_size_A": [30.0, 40.0],
                      "thicknesses_A": [100.0, 300.0, 500.0], "seed": args.seed, "out": str(out / "specimens")},
        "simulate": {"output_px": 128, "energy_eV": 200e3, "semiangle_mrad": [1.0, 2.0], "val_fraction": 0.34,
                     "test_fraction": 0.33, "specimens_per_shard": 16, "workers": args.workers,
                     "seed": args.seed, "out": str(out / "dataset")},
    }
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _friedel_probe(dataset: Path) -> dict:
    """Least-squares slope from the Friedel difference at label peaks to their q_z label, train → test."""
    from fourdcrystal.detection.peaks import PeakConfig, find_peaks
    from fourdcrystal.simulation import shards
    from fourdcrystal.training.data import open_dataset

    _, where, _ = open_dataset(dataset)

    def features(split: str):
        xs, ys = [], []
        for name, row in where[split]:
            with shards.Shard(dataset / name) as sh:
                im = sh.images(row)
            vg, qz, cbed = im["vg"], im["qz"], im["cbed"]
            h, w = vg.shape
            c = np.array([h // 2, w // 2])
            pk = find_peaks(vg / vg[h // 2, w // 2], PeakConfig(min_relative=0.05, max_peaks=400))
            for i, j in np.round(pk.pos_px).astype(int):
                mi, mj = 2 * c[0] - i, 2 * c[1] - j
                if (i, j) == tuple(c) or not (0 <= mi < h and 0 <= mj < w):
                    continue
                a = cbed[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].sum()
                b = cbed[max(mi - 1, 0):mi + 2, max(mj - 1, 0):mj + 2].sum()
                if a + b > 0:
                    xs.append((a - b) / (a + b))
                    ys.append(qz[i, j])
        return np.array(xs), np.array(ys)

    xt, yt = features("train")
    xs, ys = features("test")
    slope = float(np.dot(xt, yt) / max(np.dot(xt, xt), 1e-30))
    return {"peaks_train": int(len(xt)), "peaks_test": int(len(xs)), "slope_invA": slope,
            "mae_invA": float(np.mean(np.abs(ys - slope * xs))), "mae_zero_invA": float(np.mean(np.abs(ys))),
            "corr_train": float(np.corrcoef(xt, yt)[0, 1]) if len(xt) > 2 else None,
            "corr_test": float(np.corrcoef(xs, ys)[0, 1]) if len(xs) > 2 else None}


def _tilt_check(out: Path, dataset: Path, model: Path) -> dict:
    """``fourdcrystal predict --tilt`` with ``model`` on the test copy's specimens of known tilt: each specimen's
    thickness series as a 1×n scan (one pixel size per file), the fitted (θx, θy) against the specimen's."""
    import h5py

    from fourdcrystal.prediction.stage import PredictConfig, predict
    from fourdcrystal.simulation import shards
    from fourdcrystal.training.data import open_dataset

    _, where, _ = open_dataset(dataset)
    by_specimen: dict = {}
    for name, row in where["test"]:
        with shards.Shard(dataset / name) as sh:
            key = str(sh.meta("specimen_id")[row])
            by_specimen.setdefault(key, []).append((sh.images(row)["cbed"], sh.meta("tilt_mrad")[row],
                                                    float(sh.meta("thickness_nominal_A")[row]),
                                                    float(sh.meta("k_sampling_invA")[row].mean()),
                                                    float(sh.meta("energy_eV")[row]), float(sh.meta("semiangle_mrad")[row])))
    work = out / "tilt-check"
    work.mkdir(exist_ok=True)
    rows = []
    for i, (key, items) in enumerate(sorted(by_specimen.items())):
        scan = work / f"s{i:03d}.h5"
        with h5py.File(scan, "w") as f:
            d = f.create_dataset("scan/data", data=np.stack([c for c, *_ in items])[None].astype(np.float32))
            d.attrs["k_pixel_invA"], d.attrs["energy_eV"], d.attrs["semiangle_mrad"] = items[0][3], items[0][4], items[0][5]
        res = work / f"s{i:03d}-bragg.h5"
        predict(str(model), str(scan), res, PredictConfig(tilt=True), overwrite=True)
        with h5py.File(res, "r") as f:
            fitted = np.asarray(f["model/tilt_mrad"])[0]
        for (_, truth, t, *_), fit in zip(items, fitted):
            rows.append((t, *truth, *fit))
    a = np.array(rows, float)
    ok = np.all(np.isfinite(a), axis=1)
    err = np.linalg.norm(a[ok, 3:5] - a[ok, 1:3], axis=1)
    thick = a[ok, 0] >= 300
    return {"patterns": int(len(a)), "fitted": int(ok.sum()), "rms_error_mrad": float(np.sqrt(np.mean(err**2))),
            "rms_error_mrad_thick": float(np.sqrt(np.mean(err[thick] ** 2))) if thick.any() else None,
            "rms_tilt_mrad": float(np.sqrt(np.mean(np.sum(a[ok, 1:3] ** 2, axis=1)))),
            "note": "rms_tilt_mrad is the error of answering 0"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", default="default,fixed10,coords,coords-fixed10", help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--tilt-max", type=float, default=10.0, help="largest tilt in mrad")
    ap.add_argument("--specimens", type=int, default=30, help="specimens per zone axis and crystal copy")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "cif").mkdir(parents=True, exist_ok=True)
    cif = _si_cif()
    for k in "abc":  # three copies: one crystal per split
        (out / "cif" / f"Si-{k}.cif").write_text(cif)
    cfg = _config(out, args)
    if not (out / "dataset" / "index.json").exists():
        _run("select", "--config", str(cfg))
        _run("supercell", str(out / "catalogue"), "--config", str(cfg))
        print(_run("simulate", str(out / "specimens"), "--config", str(cfg)).strip())
    results = {"tilt_max_mrad": args.tilt_max, "epochs": args.epochs, "variants": {}}
    results["friedel_probe"] = _friedel_probe(out / "dataset")
    print("linear probe (Friedel difference → q_z):", json.dumps(results["friedel_probe"]))
    for name in args.variants.split(","):
        model = out / f"model-{name}"
        if not (model / "model.pt").exists():
            import yaml

            train = {"train": {"epochs": args.epochs, "batch_size": 8, "lr": 2e-3, "warmup_epochs": 0.5,
                               "loader_workers": 1, "patience": 0, "seed": args.seed, "out": str(model),
                               "augment": {"enabled": False}, **VARIANTS[name]}}
            tcfg = out / f"train-{name}.yaml"
            tcfg.write_text(yaml.safe_dump(train, sort_keys=False))
            _run("-q", "train", str(out / "dataset"), "--config", str(tcfg))
        _run("-q", "evaluate", str(model / "model.pt"), str(out / "dataset"), "--doses", "clean",
             "--thick-from", "300", "--out", str(model / "evaluation"))
        rep = json.loads((model / "evaluation" / "report.json").read_text())
        row = {"all": rep["by_dose"]["model"]["clean"], "thick": rep["by_dose_thick"]["model"]["clean"]}
        results["variants"][name] = {g: {k: r[k] for k in ("qz_mae_invA", "qz_mae_zero_invA", "f1", "matched")}
                                     for g, r in row.items()}
        r = results["variants"][name]
        print(f"{name:8s} q_z MAE {r['all']['qz_mae_invA']:.5f} Å⁻¹ (zero: {r['all']['qz_mae_zero_invA']:.5f}); "
              f"≥ 300 Å {r['thick']['qz_mae_invA']:.5f} ({r['thick']['qz_mae_zero_invA']:.5f}); "
              f"F1 {r['all']['f1']:.3f}")
    best = min(results["variants"], key=lambda n: results["variants"][n]["thick"]["qz_mae_invA"]
               / results["variants"][n]["thick"]["qz_mae_zero_invA"])
    results["tilt_check"] = {"model": best, **_tilt_check(out, out / "dataset", out / f"model-{best}" / "model.pt")}
    print("tilt check:", json.dumps(results["tilt_check"]))
    (out / "qz_experiment.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out / 'qz_experiment.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
