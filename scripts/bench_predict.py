"""Benchmark `fourdcrystal predict`: end-to-end patterns/s, model against the classical baseline, and memory.

    python scripts/bench_predict.py quickstart/model/model.pt                 # scans of 16², 32², 64² positions
    python scripts/bench_predict.py release --sides 8,32                      # the model shipped in the package
    python scripts/bench_predict.py MODEL --sides 32,128 --device cuda --chunk 512
    python scripts/bench_predict.py release --detector 128 --k-pixel 0.0296  # a detector the size of the model's

For each scan size a synthetic 4D-STEM file is written (disks of a crystal lattice on a
``--detector``² detector of ``--k-pixel`` Å⁻¹ pixels, default 256² at 0.02 Å⁻¹, intensities
varying over the scan, Poisson noise), and one predict run (model and baseline on the same
patterns, in one process, over the whole detector resampled to the model's pixel size) is
timed by step. End-to-end rates count every
step a method needs: read → resample → method → peaks → write. Each run is a fresh process, so its
peak resident memory is its own: it must not grow with the number of scan positions.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fourdcrystal.training.card import read_card, resolve_weights  # noqa: E402


def synthetic_scan(path: Path, card: dict, side: int, detector_px: int, k_pixel_invA: float, seed: int = 0) -> Path:
    """(side, side, D, D) patterns: a 2D lattice of aperture disks on a D² detector of ``k_pixel_invA``, as counts."""
    from fourdcrystal.calibration import synthesised_probe

    h = w = detector_px
    dk = k_pixel_invA
    energy, semiangle = card["input"]["energy_eV"], card["input"]["semiangle_mrad"]
    rng = np.random.default_rng(seed)
    disk = synthesised_probe((h, w), dk, energy, semiangle)
    a, b = np.array([0.31, 0.05]), np.array([-0.12, 0.36])  # reciprocal lattice vectors, Å⁻¹
    base = np.zeros((h, w), np.float32)
    reach = int(np.ceil(h * dk / 2 / 0.3)) + 1  # lattice points out to the detector's edge
    for i in range(-reach, reach + 1):
        for j in range(-reach, reach + 1):
            g = i * a + j * b
            shift = np.rint(g / np.asarray(dk)).astype(int)
            if np.all(np.abs(shift) < [h // 2 - 2, w // 2 - 2]):
                base += np.roll(disk, shift, axis=(0, 1)) * (1.0 if i == j == 0 else 0.5 * np.exp(-np.hypot(*g) / 0.6))
    data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(side, side, h, w))
    for r in range(side):
        scale = 1 + 0.3 * np.sin(np.arange(side) / 5 + r / 7)
        data[r] = rng.poisson(base[None] * 200 * scale[:, None, None]).astype(np.float32)
    data.flush()
    return path


def child(args) -> None:
    from fourdcrystal.predict import PredictConfig, predict

    cfg = PredictConfig(chunk_positions=args.chunk, batch_size=args.batch_size, baseline=True, device=args.device)
    card = read_card(resolve_weights(args.model))
    res = predict(args.model, args.data, args.out, cfg, {"k_pixel_invA": args.k_pixel,
                                                         "energy_eV": card["input"]["energy_eV"],
                                                         "semiangle_mrad": card["input"]["semiangle_mrad"]},
                  overwrite=True)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--sides", default="16,32,64", help="scan sizes (positions per side), comma-separated")
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--detector", type=int, default=256, help="detector pixels per side")
    p.add_argument("--k-pixel", type=float, default=0.02, help="detector pixel size, Å⁻¹")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    card = read_card(resolve_weights(args.model))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in (int(s) for s in args.sides.split(",")):
            data = synthetic_scan(Path(tmp) / f"scan{side}.npy", card, side, args.detector, args.k_pixel)
            cmd = [sys.executable, __file__, args.model, "--child", "--data", str(data), "--out",
                   str(Path(tmp) / f"r{side}.h5"), "--chunk", str(args.chunk), "--batch-size", str(args.batch_size),
                   "--device", args.device, "--k-pixel", str(args.k_pixel)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            t, n = res["timing_s"], res["positions"]
            shared = t.get("read", 0) + t.get("resample", 0) + t.get("write", 0)
            model_rate = n / (shared + t["model"] + t["model_peaks"])
            base_rate = n / (shared + t["baseline"])
            rows.append((side, n, data.stat().st_size / 1e6, model_rate, base_rate, res["patterns_per_s"],
                         res["peak_rss_mb"], res["vectors"]))
            grid = res["grid_shape"]
    print(f"model {args.model} ({card['parameters']} parameters), {args.detector}² detector at {args.k_pixel:g} Å⁻¹ "
          f"→ {grid[0]}×{grid[1]} model grid at {np.mean(card['input']['k_sampling_invA']):.4f} Å⁻¹, "
          f"chunk {args.chunk}, device {args.device}")
    print(f"{'scan':>9s} {'patterns':>9s} {'file MB':>8s} {'model pat/s':>12s} {'baseline pat/s':>15s} "
          f"{'model/baseline':>15s} {'both pat/s':>11s} {'peak RSS MB':>12s}  vectors")
    for side, n, mb, mr, br, both, rss, vec in rows:
        print(f"{side:>4d}×{side:<4d} {n:>9d} {mb:>8.1f} {mr:>12.1f} {br:>15.1f} {mr / br:>15.2f} {both:>11.1f} "
              f"{rss:>12.0f}  {vec}")


if __name__ == "__main__":
    main()
