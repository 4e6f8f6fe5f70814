"""Combinations of the per-pattern tilt fits that record.py kept (experiment): inverse-variance means of the
model's q_z tilt and the Laue fits, the q_z standard error chosen on the validation split, scored on the test
split by dose and thickness bin against answering zero.

    python experiments/tilt_combined/combine.py VAL.json TEST.json --json experiments/tilt_combined/results.json
"""
from __future__ import annotations

import argparse
import json

import numpy as np

BINS = (("< 200 Å", 0, 200), ("200-400 Å", 200, 400), ("≥ 400 Å", 400, 1e9))


def estimates(rows, qz_sigma: float, use: tuple[str, ...]) -> np.ndarray:
    """(n, 2) the inverse-variance mean of the methods in ``use`` per pattern (NaN where none fitted); q_z has
    the constant standard error ``qz_sigma`` (mrad), the Laue fits their own."""
    out = np.full((len(rows), 2), np.nan)
    for i, r in enumerate(rows):
        num, den = np.zeros(2), np.zeros(2)
        for m in use:
            est, sig = r["fits"].get(m, (None, None))
            if est is None or not np.all(np.isfinite(est)):
                continue
            s = np.full(2, qz_sigma) if m == "model_qz" else np.asarray(sig, float)
            if not np.all(np.isfinite(s)) or np.any(s <= 0):
                continue
            num += np.asarray(est) / s ** 2
            den += 1 / s ** 2
        if np.all(den > 0):
            out[i] = num / den
    return out


def rms(rows, est) -> tuple[float, int, float]:
    ok = np.all(np.isfinite(est), axis=1)
    true = np.array([r["true_mrad"] for r in rows])
    e = np.linalg.norm(est[ok] - true[ok], axis=1)
    return float(np.sqrt(np.mean(e ** 2))), int((~ok).sum()), float(np.sqrt(np.mean(np.sum(true[ok] ** 2, 1))))


def table(rows, variants) -> dict:
    out = {}
    for dose in (None, 1e5, 1e4, 1e3):
        for name, lo, hi in BINS:
            sel = [r for r in rows if r["dose"] == dose and lo <= r["thickness_A"] < hi]
            key = f"{'clean' if dose is None else f'{dose:.0e}'} {name}"
            out[key] = {v: rms(sel, estimates(sel, *args)) for v, args in variants.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("val")
    ap.add_argument("test")
    ap.add_argument("--json")
    a = ap.parse_args()
    val, test = (json.load(open(p))["rows"] for p in (a.val, a.test))
    combos = {"q_z + Laue (model's vectors)": ("model_qz", "model_vectors"),
              "q_z + Laue (baseline's disks)": ("model_qz", "classical"),
              "q_z + both Laue fits": ("model_qz", "model_vectors", "classical")}
    chosen = {}
    for name, use in combos.items():  # the q_z standard error: the best mean rms over the validation split's rows
        grid = [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0]
        score = {s: np.mean([v[name][0] for v in table(val, {name: (s, use)}).values()]) for s in grid}
        chosen[name] = min(score, key=score.get)
    variants = {"classical": (1.0, ("classical",)), "Laue (model's vectors)": (1.0, ("model_vectors",)),
                "q_z": (1.0, ("model_qz",))} | {n: (chosen[n], combos[n]) for n in combos}
    res = table(test, variants)
    print("q_z standard error chosen on val (mrad):", chosen)
    names = list(variants)
    print("| dose thickness | " + " | ".join(names) + " | zero |")
    for key, cells in res.items():
        zero = cells["classical"][2]
        print(f"| {key} | " + " | ".join(f"{c[0]:.2f}" + (f" ({c[1]} failed)" if c[1] else "") for c in cells.values())
              + f" | {zero:.2f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"qz_sigma_chosen_on_val_mrad": chosen, "test": res}, f, indent=1)


if __name__ == "__main__":
    main()
