"""Benchmark: the FCU-Net's memory per pattern, pixel and channel, as fourdcrystal.memory's estimates assume.

    python scripts/bench_memory.py                       # the cases behind memory.INFERENCE_BYTES / TRAINING_BYTES
    python scripts/bench_memory.py --cases 8:256:16:train

Each case runs in its own process (peak RSS is per process): a forward pass (``eval``), or a forward and a
backward pass (``train``), of a fresh FCU-Net of that width on a batch of random patterns; it prints the peak
RSS gained over the process's state before the pass, in MiB and in bytes per pattern, grid pixel and channel
of the first level, next to the constant the estimate uses.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = ("4:128:16:train", "8:128:16:train", "4:256:16:train", "4:128:32:train", "8:128:16:eval", "4:256:16:eval",
         "4:128:32:eval")


def one(case: str) -> dict:
    import torch

    from fourdcrystal.model.fcunet import FCUNet, FCUNetConfig

    torch.set_num_threads(1)
    b, px, width, mode = case.split(":")
    b, px, width = int(b), int(px), int(width)
    m = FCUNet(FCUNetConfig(width=width))
    x, p = torch.rand(b, 1, px, px), torch.rand(b, 1, px, px)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if mode == "train":
        out = m(x, p)
        (out["vg"].mean() + out["qz"].mean()).backward()
    else:
        with torch.no_grad():
            m(x, p)
    gained = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    return {"case": case, "mib": gained / 2**20, "bytes_per_px_channel_pattern": gained / (b * px * px * width)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES), help="BATCH:GRID_PX:WIDTH:train|eval, comma-separated")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(one(a.one)))
        return 0
    from fourdcrystal.memory import INFERENCE_BYTES, TRAINING_BYTES

    print(f"{'batch:grid:width:mode':>24s} {'peak MiB':>9s} {'bytes/(px·ch·pattern)':>22s} {'estimate uses':>14s}")
    for case in a.cases.split(","):
        r = json.loads(subprocess.run([sys.executable, __file__, "--one", case], check=True, capture_output=True,
                                      text=True, env={"OMP_NUM_THREADS": "1", "PATH": ""}).stdout)
        uses = TRAINING_BYTES if case.endswith("train") else INFERENCE_BYTES
        print(f"{case:>24s} {r['mib']:9.1f} {r['bytes_per_px_channel_pattern']:22.1f} {uses:14d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
