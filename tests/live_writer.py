"""A detector writing a scan while predict --follow reads it (run as a separate process by tests/test_follow.py).

    python tests/live_writer.py SCAN.npy OUT.mib RATE [--stop-after N] [--start-at N]
    python tests/live_writer.py SCAN.npy OUT.h5 RATE ...     # HDF5 in SWMR mode, one scan row at a time

Frames of SCAN.npy (rows, cols, K, K) are appended at RATE frames per second: a Merlin .mib as the Merlin
software writes it (its .hdr first, then frame after frame), or an HDF5 dataset /frames grown row by row in SWMR
mode (maxshape = the whole scan). ``--stop-after N`` stops after N frames (an acquisition that stalls);
``--start-at N`` appends from frame N onwards to what is there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from formats import mib_header  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("scan")
    p.add_argument("out")
    p.add_argument("rate", type=float)
    p.add_argument("--stop-after", type=int)
    p.add_argument("--start-at", type=int, default=0)
    a = p.parse_args()
    data = np.load(a.scan)
    rows, cols, h, w = data.shape
    frames = data.reshape(-1, h, w)
    stop = len(frames) if a.stop_after is None else a.stop_after
    out = Path(a.out)
    t0 = time.perf_counter()
    if out.suffix == ".mib":
        if a.start_at == 0:
            out.with_suffix(".hdr").write_text(
                "HDR,\nChip Type (Medipix 3.0, Medipix 3.1, Medipix 3RX):\tMedipix 3RX\n"
                f"Frames in Acquisition (Number):\t{rows * cols}\nFrames per Trigger (Number):\t{cols}\nEnd\t")
        with open(out, "ab") as fh:
            for n in range(a.start_at, stop):
                fh.write(mib_header(n + 1, (h, w), "U16"))
                fh.write(np.ascontiguousarray(frames[n][::-1], dtype=">u2").tobytes())
                fh.flush()
                time.sleep(max(0.0, t0 + (n + 1 - a.start_at) / a.rate - time.perf_counter()))
        return
    import h5py

    with h5py.File(out, "a" if a.start_at else "w", libver="latest") as f:
        if a.start_at == 0:
            ds = f.create_dataset("frames", shape=(0, cols, h, w), maxshape=(rows, cols, h, w), dtype="u2",
                                  chunks=(1, 1, h, w))
            f.swmr_mode = True
        else:
            f.swmr_mode = True
            ds = f["frames"]
        for r in range(a.start_at // cols, stop // cols):  # one scan row per trigger
            ds.resize((r + 1, cols, h, w))
            ds[r] = data[r]
            ds.flush()
            time.sleep(max(0.0, t0 + (r + 1 - a.start_at // cols) * cols / a.rate - time.perf_counter()))


if __name__ == "__main__":
    main()
