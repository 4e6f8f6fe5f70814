"""Does the learned placement offset lower strain errors on the strain surveys (experiment, issue 30)?

``train``: the offset network of explore.py without the radius-in-pixels input (the surveys' disks are 4.8 px
against 2-3 px in the data set, so only scale-free inputs: moments in disk radii, brightness against the zero
disk, |g| in radii), fitted on the training split and saved.
``apply``: every strain-survey file's cached model and baseline vectors (``fourdcrystal strain-benchmark`` made
them) moved by the offset read from the measured pattern around each vector; each method's fit chosen on the
tuning series as the benchmark does, scored on the test series, on the positions every method fitted.

    python experiments/position_offsets/survey.py train release/dataset --out W/offset.pt
    python experiments/position_offsets/survey.py apply /work/runs/sbench60 --net W/offset.pt --json results_sbench60.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from explore import ODD, collect, disk_features  # noqa: E402


def _survey_helpers():
    """experiments/strain_subpixel/survey.py (loaded by path: this file's own name is survey.py too)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("strain_subpixel_survey",
                                                  Path(__file__).parents[1] / "strain_subpixel" / "survey.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

KEEP = [0, 2, 3, 4, 5, 6, 7, 8, 9]  # explore's features less the radius in pixels
ODD_KEPT = [KEEP.index(i) for i in ODD]


def build(n_in):
    from torch import nn

    return nn.Sequential(nn.Linear(n_in, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 2))


def offsets(net, mu, sd, x):
    """(∥, ⊥) offset in disk radii: even along ĝ, odd across, under mirroring across ĝ."""
    import torch

    flip = torch.ones(x.shape[1])
    flip[ODD_KEPT] = -1.0
    x = (torch.as_tensor(x, dtype=torch.float32) - torch.as_tensor(mu, dtype=torch.float32)) / torch.as_tensor(sd, dtype=torch.float32)
    o1, o2 = net(x), net(x * flip)
    return torch.stack([(o1[:, 0] + o2[:, 0]) / 2, (o1[:, 1] - o2[:, 1]) / 2], 1) * 0.1


def train(a) -> int:
    import torch

    doses = (None, 1e5, 1e4)
    xt, yt, _, _ = collect(a.dataset, "train", a.train_limit, doses)
    xv, yv, rv, dv = collect(a.dataset, "val", a.val_limit, doses)
    xt, xv = xt[:, KEEP], xv[:, KEEP]
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    mu[ODD_KEPT] = 0.0
    torch.manual_seed(0)
    net = build(xt.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    target = torch.tensor(yt, dtype=torch.float32)
    for _ in range(a.steps):
        loss = ((offsets(net, mu, sd, xt) - target) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pv = offsets(net, mu, sd, xv).numpy()
    for dose in (-1.0, 1e5, 1e4):
        sel = dv == dose
        before = np.sqrt(np.mean(np.sum((yv[sel] * rv[sel, None]) ** 2, 1)))
        after = np.sqrt(np.mean(np.sum(((yv[sel] - pv[sel]) * rv[sel, None]) ** 2, 1)))
        print({"dose": dose, "disks": int(sel.sum()), "rms_px_placed": round(float(before), 3),
               "rms_px_corrected": round(float(after), 3)})
    torch.save({"state": net.state_dict(), "mu": mu, "sd": sd}, a.out)
    return 0


def corrected(vs, pattern_stack, dk, centre_px, r_px, net, mu, sd):
    """``vs`` (VectorSet, Å⁻¹ from the zero beam at ``centre_px``) with every vector beyond 2.5 disk radii moved
    by the offset read from its disk on the measured patterns (scan rows × cols × H × W)."""
    import torch

    from fourdcrystal.io.vectors import VectorSet

    q = vs.q.copy()
    h, w = pattern_stack.shape[-2:]
    flat = pattern_stack.reshape(-1, h, w)
    c = np.asarray(centre_px, float)
    rows, feats = [], []
    for p in range(vs.positions):
        img = flat[p]
        ic = np.rint(c).astype(int)
        i0 = max(float(img[ic[0] - 1:ic[0] + 2, ic[1] - 1:ic[1] + 2].mean()), 1e-30)
        for k in range(int(vs.offsets[p]), int(vs.offsets[p + 1])):
            g = q[k] / dk
            if np.linalg.norm(g) < 2.5 * r_px:
                continue
            f = disk_features(img, c, g, r_px, i0)
            if f is None:
                continue
            rows.append(k)
            feats.append(np.asarray(f)[KEEP])
    if rows:
        with torch.no_grad():
            o = offsets(net, mu, sd, np.array(feats)).numpy()
        g = q[rows] / dk
        u = g / np.linalg.norm(g, axis=1, keepdims=True)
        v = np.stack([-u[:, 1], u[:, 0]], 1)
        q[rows] += (o[:, :1] * u + o[:, 1:] * v) * r_px * dk
    return VectorSet(vs.scan_shape, vs.offsets, q, vs.intensity, vs.units, vs.bin_width, vs.source, vs.method + "+offset",
                     dict(vs.attrs))


def apply(a) -> int:
    import h5py
    import torch

    from fourdcrystal.evaluation.strain_benchmark import SPLITS, choose_and_score, summarise
    from fourdcrystal.io.vectors import read_vectors
    from fourdcrystal.simulation.optics import disk_radius_invA

    helpers = _survey_helpers()
    saved = torch.load(a.net, weights_only=False)
    net = build(len(KEEP))
    net.load_state_dict(saved["state"])
    mu, sd = saved["mu"], saved["sd"]

    def fill(v, path, cached):
        with h5py.File(path, "r") as f:
            data = f["data"][()].astype(np.float64)
            dk = float(f["data"].attrs["k_pixel_invA"])
            r_px = disk_radius_invA(float(f["data"].attrs["semiangle_mrad"]), float(f["data"].attrs["energy_eV"])) / dk
        for m in ("model", "baseline"):
            vs = read_vectors(cached / helpers.result_name(path), m)
            v.methods[m] = vs
            v.methods[m + "+offset"] = corrected(vs, data, dk, vs.attrs["centre_px"], r_px, net, mu, sd)

    out = Path(a.survey)
    report, cached, files, vectors = helpers.load_survey(out, None, fill)  # every dose
    for s in SPLITS:
        print(f"{s}: {len(vectors[s])} files", file=sys.stderr)
    methods = ["model", "model+offset", "baseline", "baseline+offset"]
    if a.py4dstem_python:
        helpers.add_py4dstem(Path(a.py4dstem_python), out, report, cached, vectors)
        methods.append("py4DSTEM")
    chosen, rows = choose_and_score(vectors, methods)
    chosen = {m: c["fit"] for m, c in chosen.items()}
    summary = summarise(rows, methods)
    res = {"survey": str(out), "chosen_on_tune_series": chosen, "common_by_dose_and_thickness_A":
           summary["common_by_dose_and_thickness_A"], "by_dose_and_thickness_A": summary["by_dose_and_thickness_A"]}
    common = summary["common_by_dose_and_thickness_A"]
    for d in ("clean", "1e5", "1e4", "1e3"):
        for t in sorted(common.get(d, {}), key=float):
            cell = common[d][t]
            print(d, t, " ".join(f"{m} {cell[m]['strain_rms_error_pct']:.3f}" for m in methods
                                 if cell[m]["strain_rms_error_pct"] is not None))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("dataset")
    t.add_argument("--out", required=True)
    t.add_argument("--train-limit", type=int, default=1500)
    t.add_argument("--val-limit", type=int, default=420)
    t.add_argument("--steps", type=int, default=1500)
    p = sub.add_parser("apply")
    p.add_argument("survey")
    p.add_argument("--net", required=True)
    p.add_argument("--py4dstem-python")
    p.add_argument("--json")
    a = ap.parse_args()
    return train(a) if a.cmd == "train" else apply(a)


if __name__ == "__main__":
    raise SystemExit(main())
