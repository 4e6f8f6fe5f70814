"""Does an in-plane rotation alone (no strain) read as strain on the benchmark's simulated patterns? (experiment)

SrTiO3 [001] (or another benchmark crystal), positions rotated by the given angles, zero strain,
simulated as strain-benchmark does (cut box of --box Å, 200 kV, 2 mrad). Writes one series file per
thickness (predict reads it) into OUT; then run predict --baseline and fit strain.

    python experiments/strain_floor/rotation_only.py OUT --crystal SrTiO3 --uvw 0,0,1 --box 60 --rot 0,0.5,1,2,-2
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fourdcrystal.simulation.cbed import Optics
from fourdcrystal.simulation.series import bin_detector, simulate_series
from fourdcrystal.evaluation.strain_benchmark import CRYSTALS, write_series_file


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--crystal", default="SrTiO3")
    ap.add_argument("--uvw", default="0,0,1")
    ap.add_argument("--box", type=float, default=60.0)
    ap.add_argument("--px", type=int, default=256)
    ap.add_argument("--rot", default="0,0.5,1,2,-2")
    ap.add_argument("--strain", default="0,0,0", help="one strain for every non-reference position (fractions)")
    ap.add_argument("--thicknesses", default="300,600")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bin", type=int, default=1, help="sum the simulated pixels into detector pixels this many times larger")
    a = ap.parse_args(argv)
    rots = np.array([float(x) for x in a.rot.split(",")])
    e = np.array([float(x) for x in a.strain.split(",")])
    strains = np.tile(e, (len(rots), 1))
    strains[0] = 0
    uvw = tuple(int(i) for i in a.uvw.split(","))
    th = [float(t) for t in a.thicknesses.split(",")]
    s = simulate_series(CRYSTALS[a.crystal].structure(), uvw, strains, rots,
                        Optics(200e3, 2.0, output_px=a.px), th, a.box, threads=a.threads)
    if a.bin > 1:
        s.cbed = bin_detector(s.cbed, a.bin)
        s.probe = bin_detector(s.probe, a.bin)
        s.k_pixel_invA *= a.bin
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for ti, t in enumerate(s.thickness_A):
        write_series_file(out / f"t{int(round(t)):04d}A.h5", s.cbed[ti], s, strains, rots, (1, len(rots)), 200e3, 2.0,
                          {"structure": a.crystal, "zone_axis": list(uvw), "thickness_A": float(t), "dose": "clean",
                           "nominal_thickness_A": th[ti], "box_A": a.box})


if __name__ == "__main__":
    main()
