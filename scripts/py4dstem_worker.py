"""Run py4DSTEM's find_Bragg_disks over stored patterns for a list of settings (for compare_py4dstem.py).

Runs inside the separate py4DSTEM 0.14 environment (numpy < 2); imports nothing of fourdcrystal.

    python py4dstem_worker.py PATTERNS.npz SETTINGS.json OUT.npz

PATTERNS.npz: ``patterns`` (n, H, W), ``probes`` (n, H, W), vacuum probes centred on q = 0 at
(H//2, W//2). SETTINGS.json: a list of dicts, each with ``kernel`` ("flat", "gaussian" with
``sigma``, "sigmoid" with ``radii`` in disk radii) and find_Bragg_disks keyword arguments.
OUT.npz: for setting s, ``s{s}_pos`` (m, 2) peak positions (qx along axis 0, qy, pixels),
``s{s}_intensity`` and ``s{s}_offsets`` (n + 1): pattern k owns rows offsets[k]:offsets[k+1].
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def kernel(probe: np.ndarray, spec: dict) -> np.ndarray:
    from py4DSTEM.braggvectors.probe import Probe

    h, w = probe.shape
    origin = (h // 2, w // 2)  # q = 0: a disk at g then correlates to a peak at g, as in fourdcrystal
    p = Probe(probe.astype(np.float64))
    if spec["kernel"] == "flat":
        return p.get_kernel(mode="flat", origin=origin)
    if spec["kernel"] == "gaussian":
        return p.get_kernel(mode="gaussian", origin=origin, sigma=spec["sigma"])
    radius = np.sqrt((probe >= 0.5 * probe.max()).sum() / np.pi)
    return p.get_kernel(mode="sigmoid", origin=origin, radii=tuple(r * radius for r in spec["radii"]))


def main(patterns_path: str, settings_path: str, out_path: str) -> int:
    from py4DSTEM.braggvectors.diskdetection import find_Bragg_disks

    data = np.load(patterns_path)
    patterns, probes = data["patterns"], data["probes"]
    settings = json.loads(open(settings_path).read())
    out = {}
    t0 = time.perf_counter()
    # patterns sharing a probe (the same simulated specimen at several doses) share its kernels
    groups: dict[bytes, list[int]] = {}
    for k, pr in enumerate(probes):
        groups.setdefault(pr.tobytes(), []).append(k)
    for s, spec in enumerate(settings):
        args = {k: v for k, v in spec.items() if k not in ("kernel", "sigma", "radii")}
        found: list = [None] * len(patterns)
        for members in groups.values():
            kern = kernel(probes[members[0]], spec)
            res = find_Bragg_disks(patterns[members].astype(np.float64), kern, **args)
            for k, r in zip(members, res):
                found[k] = r.data
        counts = np.array([len(f) for f in found])
        out[f"s{s}_offsets"] = np.concatenate([[0], np.cumsum(counts)])
        out[f"s{s}_pos"] = np.concatenate([np.stack([f["qx"], f["qy"]], 1) for f in found]) if counts.sum() \
            else np.zeros((0, 2))
        out[f"s{s}_intensity"] = np.concatenate([f["intensity"] for f in found]) if counts.sum() else np.zeros(0)
        print(f"setting {s + 1}/{len(settings)} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    np.savez(out_path, **out)
    return 0


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("patterns", help=".npz with 'patterns' and 'probes'")
    ap.add_argument("settings", help="JSON list of find_Bragg_disks settings")
    ap.add_argument("out", help="where the disks found go (.npz)")
    args = ap.parse_args()
    raise SystemExit(main(args.patterns, args.settings, args.out))
