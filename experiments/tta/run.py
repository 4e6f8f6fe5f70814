"""Test-time flips: does averaging the network over mirrored patterns lift the F1 under noise? (experiment)

A mirrored pattern is the pattern of the mirrored crystal, so the network's output for it, mirrored
back, is another estimate of the same V_g map. Mirrors are taken about the zero beam (pixel H//2, W//2),
not about the array's centre. Runs ``evaluate`` on the validation split with the Predictor wrapped.

    python experiments/tta/run.py release /work/runs/release/dataset OUT --tta none|flips|d4 --limit 140
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def mirror(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Mirror (…, H, W) about pixel (H//2, W//2) along the given axes (−2, −1): i → H − i (mod H)."""
    for ax in axes:
        a = np.swapaxes(a, -1, -2) if ax == "T" else np.roll(np.flip(a, axis=ax), 1, axis=ax)
    return a


def unmirror(a: np.ndarray, axes: tuple) -> np.ndarray:
    """The inverse of :func:`mirror` (its steps undone in reverse order; each step is its own inverse)."""
    return mirror(a, tuple(reversed(axes)))


GROUPS = {"none": [()], "flips": [(), (-2,), (-1,), (-2, -1)],
          "d4": [(), (-2,), (-1,), (-2, -1), ("T",), ("T", -2), ("T", -1), ("T", -2, -1)]}


def wrap(mode: str):
    from fourdcrystal.model import inference

    base = inference.Predictor.__call__

    def call(self, cbed, probe):
        cbed = np.asarray(cbed, np.float32)
        probe = np.asarray(probe, np.float32)
        vgs, qzs = [], []
        for axes in GROUPS[mode]:
            t = mirror(cbed, axes)
            p = mirror(probe, axes)
            vg, qz = base(self, np.ascontiguousarray(t), np.ascontiguousarray(p))
            vgs.append(unmirror(vg, axes))
            qzs.append(unmirror(qz, axes))
        return np.mean(vgs, axis=0), np.mean(qzs, axis=0)

    inference.Predictor.__call__ = call


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tta", default="none")
    a, rest = ap.parse_known_args()
    wrap(a.tta)
    from fourdcrystal.cli import main

    sys.argv = ["fourdcrystal", "evaluate", *rest]
    main()
