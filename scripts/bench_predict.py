"""Benchmark `fourdcrystal predict`: end-to-end patterns/s, model against the classical baseline, and memory.

    python scripts/bench_predict.py quickstart/model/model.pt                 # scans of 16², 32², 64² positions
    python scripts/bench_predict.py release --sides 8,32                      # the model shipped in the package
    python scripts/bench_predict.py MODEL --sides 32,128 --device cuda --chunk 512
    python scripts/bench_predict.py release --sides 32,64 --device cuda --precision bf16 --compile   # a GPU, ~5 min
    python scripts/bench_predict.py release --sides 32 --detectors 128,256,512  # three detectors, one field of view
    python scripts/bench_predict.py release --sides 32 --precision bf16        # the network in bfloat16
    python scripts/bench_predict.py release --sides 32 --follow-rate 40      # predict --follow behind a 40 frames/s writer
    python scripts/bench_predict.py release --sides 8,32,64 --json benchmarks/bench_predict.json   # the README's figures

For each detector size and scan size a synthetic 4D-STEM file is written (disks of a crystal lattice on a
D² detector whose pixels are ``--k-pixel`` × 256 / D Å⁻¹, so every detector sees the same 5.12 Å⁻¹ field of
view at the default 0.02 Å⁻¹ for 256², intensities varying over the scan, Poisson noise), and one predict run (model and baseline on the same
patterns, in one process, over the whole detector resampled to the model's pixel size) is
timed by step. End-to-end rates count every
step a method needs: read → resample → method → peaks → write; the correlation of each pattern with the probe,
which the baseline's detection and the model's placement on the detector share, counts for both. Each run is a fresh process, so its
peak resident memory is its own: it must not grow with the number of scan positions.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fourdcrystal.model.card import read_card, resolve_weights  # noqa: E402
from fourdcrystal.versions import machine  # noqa: E402

WRITER = Path(__file__).resolve().parents[1] / "tests" / "live_writer.py"  # the detector writing a .mib


def synthetic_scan(path: Path, card: dict, side: int, detector_px: int, k_pixel_invA: float, seed: int = 0) -> Path:
    """(side, side, D, D) patterns: a 2D lattice of aperture disks on a D² detector of ``k_pixel_invA``, as counts."""
    from fourdcrystal.prediction.calibration import synthesised_probe

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


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started, MB: VmHWM from /proc (Linux), which the exec that
    started the process reset. Not ``getrusage``'s ru_maxrss: Linux carries that across exec, so a child forked
    from this benchmark's parent (which has just written the scan file through a memory map) would report the
    parent's size."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    from fourdcrystal.prediction.stage import FollowSettings, PredictConfig, predict

    cfg = PredictConfig(chunk_positions=args.chunk, batch_size=args.batch_size, baseline=not args.follow,
                        device=args.device, precision=args.precision, compile=args.compile,
                        method="model" if args.follow else "auto")
    card = read_card(resolve_weights(args.model))
    t0 = time.time()
    res = predict(args.model, args.data, args.out, cfg, {"k_pixel_invA": args.k_pixel,
                                                         "energy_eV": card["input"]["energy_eV"],
                                                         "semiangle_mrad": card["input"]["semiangle_mrad"]},
                  overwrite=True, follow=FollowSettings(idle_s=30, refresh_s=5) if args.follow else None)
    res["finished_unix_s"], res["started_unix_s"] = time.time(), t0
    res["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(res))


def _child_cmd(args, data: Path, out: Path, k_pixel: float, *extra: str) -> list[str]:
    """The command of one timed predict run in a fresh process (``--child``) with this benchmark's settings."""
    return [sys.executable, __file__, args.model, "--child", *extra, "--data", str(data), "--out", str(out),
            "--chunk", str(args.chunk), "--batch-size", str(args.batch_size), "--device", args.device,
            "--k-pixel", str(k_pixel), "--precision", args.precision] + (["--compile"] if args.compile else [])


def follow_run(args, card: dict, tmp: Path) -> dict:
    """A writer process appends the scan's frames to a .mib at ``--follow-rate`` frames/s while predict --follow
    (model only) processes them: patterns per second over predict's whole run (start-up, model loading and the
    final summary included), the arrival rate, and how long after the last frame the result was complete."""
    side = int(args.sides.split(",")[-1])
    det = int(args.detectors.split(",")[0])
    k_pixel = args.k_pixel * 256 / det
    scan = synthetic_scan(tmp / "follow.npy", card, side, det, k_pixel)
    counts = tmp / "follow-u16.npy"
    np.save(counts, np.clip(np.load(scan), 0, 65535).astype(np.uint16))
    scan.unlink()
    mib = tmp / "follow.mib"
    writer = subprocess.Popen([sys.executable, str(WRITER), str(counts), str(mib), str(args.follow_rate)])
    out = subprocess.run(_child_cmd(args, mib, tmp / "follow-bragg.h5", k_pixel, "--follow"), check=True,
                         capture_output=True, text=True).stdout
    writer.wait()
    res = json.loads(out.strip().splitlines()[-1])
    last_frame = mib.stat().st_mtime
    return {"detector": det, "scan": side, "patterns": res["positions"], "arrival_per_s": args.follow_rate,
            "processed_per_s": res["positions"] / (res["finished_unix_s"] - res["started_unix_s"]),
            "done_after_last_frame_s": res["finished_unix_s"] - last_frame, "peak_rss_mb": res["peak_rss_mb"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--sides", default="16,32,64", help="scan sizes (positions per side), comma-separated")
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--detectors", default="256", help="detector pixels per side, comma-separated")
    p.add_argument("--k-pixel", type=float, default=0.02, help="pixel size of a 256² detector, Å⁻¹ (others scaled "
                                                                 "to the same field of view)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="the network's arithmetic")
    p.add_argument("--compile", action="store_true", help="the network through torch.compile (its compilation is "
                                                          "timed as part of the first chunk)")
    p.add_argument("--follow-rate", type=float, help="instead: a writer appends the last --sides scan to a .mib at "
                                                          "this many frames/s while predict --follow processes it")
    p.add_argument("--json", help="also write the rows, the command and the machine to this JSON file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--follow", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    card = read_card(resolve_weights(args.model))
    from fourdcrystal.model.inference import resolve_precision

    precision = resolve_precision(args.precision, __import__("torch").device("cuda" if args.device.startswith("cuda")
                                                                              else "cpu"))
    record = {"command": "python scripts/bench_predict.py " + " ".join(sys.argv[1:]), "model": args.model,
              "machine": machine(),
              "device": args.device, "precision": precision, "compile": args.compile, "chunk": args.chunk, "rows": []}
    print(f"model {args.model} ({card['parameters']} parameters, grid pixel {np.mean(card['input']['k_sampling_invA']):.4f} "
          f"Å⁻¹), chunk {args.chunk}, batch {args.batch_size}, device {args.device}, precision {precision}"
          f"{', compiled' if args.compile else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.follow_rate:
            row = follow_run(args, card, Path(tmp))
            record["follow"] = row
            print(f"predict --follow, {row['detector']}² detector, {row['scan']}×{row['scan']} scan: processed "
                  f"{row['processed_per_s']:.1f} patterns/s against {row['arrival_per_s']:g} arriving; complete "
                  f"{row['done_after_last_frame_s']:.1f} s after the last frame; peak RSS {row['peak_rss_mb']:.0f} MB")
        else:
            _offline(args, card, Path(tmp), record)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


def _offline(args, card: dict, tmp: Path, record: dict) -> None:
    print(f"{'detector':>9s} {'model grid':>10s} {'scan':>9s} {'patterns':>9s} {'file MB':>8s} {'model pat/s':>12s} "
          f"{'baseline pat/s':>15s} {'both pat/s':>11s} {'peak RSS MB':>12s}  vectors")
    for det in (int(d) for d in args.detectors.split(",")):
        k_pixel = args.k_pixel * 256 / det
        for side in (int(s) for s in args.sides.split(",")):
            data = synthetic_scan(tmp / f"scan{det}-{side}.npy", card, side, det, k_pixel)
            out = subprocess.run(_child_cmd(args, data, tmp / f"r{det}-{side}.h5", k_pixel), check=True,
                                 capture_output=True, text=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            t, n = res["timing_s"], res["positions"]
            shared = sum(t.get(k, 0) for k in ("read", "resample", "write", "correlation"))
            model_rate = n / (shared + t["model"] + t["model_peaks"])
            base_rate = n / (shared + t["baseline"])
            grid = "×".join(str(g) for g in res["grid_shape"])
            record["rows"].append({"detector": det, "scan": side, "patterns": n, "grid": res["grid_shape"],
                                   "model_per_s": model_rate, "baseline_per_s": base_rate,
                                   "both_per_s": res["patterns_per_s"], "peak_rss_mb": res["peak_rss_mb"],
                                   "vectors": res["vectors"]})
            print(f"{det:>4d}×{det:<4d} {grid:>10s} {side:>4d}×{side:<4d} {n:>9d} {data.stat().st_size / 1e6:>8.1f} "
                  f"{model_rate:>12.1f} {base_rate:>15.1f} {res['patterns_per_s']:>11.1f} "
                  f"{res['peak_rss_mb']:>12.0f}  {res['vectors']}", flush=True)
            data.unlink()


if __name__ == "__main__":
    main()
