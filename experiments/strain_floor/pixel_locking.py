"""Pixel locking of the disk-position estimators on point-sampled hard-edged disks (experiment).

A multislice pattern holds the probe aperture point-sampled at the grid's frequencies, shifted by
each reflection's g: a disk centred off a pixel centre is sampled differently from the probe
template. Here a disk of radius R px is shifted by a known fraction of a pixel along axis 0 and
placed by the correlation estimator (the baseline's and the model's refine: argmax, parabola, DFT
up-sampling ×16 of the correlation), and by variants. Prints the bias (px) against the shift.

    python experiments/strain_floor/pixel_locking.py --radius 4.78
"""
from __future__ import annotations

import argparse

import numpy as np

from fourdcrystal.detection.baseline import BaselineConfig, find_bragg_disks, gaussian_transfer, probe_kernel
from fourdcrystal.detection.peaks import PeakConfig, dft_refine, parabolic_offsets


def disk(n, centre, radius, edge_px=0.0, supersample=1):
    if supersample > 1:  # each pixel the mean of supersample² point samples over its area
        o = (np.arange(supersample) + 0.5) / supersample - 0.5
        return np.mean([disk(n, (centre[0] - a, centre[1] - b), radius, edge_px) for a in o for b in o], axis=0)
    yy, xx = np.mgrid[0:n, 0:n]
    r = np.hypot(yy - centre[0], xx - centre[1])
    if edge_px <= 0:
        return (r <= radius).astype(float)
    return np.clip((radius - r) / edge_px + 0.5, 0, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--radius", type=float, default=4.78)
    ap.add_argument("--edge", type=float, default=0.0, help="soft edge width, px (0: hard)")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--supersample", type=int, default=1, help="pixels integrate their area (this many samples a side)")
    a = ap.parse_args()
    n, c = a.n, a.n // 2
    probe = disk(n, (c, c), a.radius, a.edge, a.supersample)
    shifts = np.linspace(0, 1, 21)[:-1]
    variants = {
        "dft on unsmoothed (as now)": BaselineConfig(sigma_px=1.0),
        "dft, no smoothing at all": BaselineConfig(sigma_px=0.0),
        "parabola on smoothed σ=1": BaselineConfig(sigma_px=1.0, peaks=PeakConfig(min_relative=0.01, subpixel="parabolic")),
    }
    print("shift px  " + "  ".join(f"{k:>28s}" for k in variants) + "   dft on smoothed σ=1 / σ=2")
    rows = []
    for s in shifts:
        pat = disk(n, (c + 10 + s, c + 7), a.radius, a.edge, a.supersample)
        out = []
        for cfg in variants.values():
            pk = find_bragg_disks(pat, probe, cfg)
            out.append(pk.pos_px[0][0] - (c + 10 + s))
        # DFT refinement on the smoothed spectrum
        extra = []
        for sig in (1.0, 2.0):
            g = np.fft.fft2(pat) * np.conj(np.fft.fft2(probe_kernel(probe))) * gaussian_transfer((n, n), sig)
            corr = np.real(np.fft.ifft2(g))
            ij = np.array([np.unravel_index(np.argmax(corr), corr.shape)])
            extra.append(dft_refine(g, ij + parabolic_offsets(corr, ij), 16)[0][0] - (c + 10 + s))
        rows.append(out + extra)
        print(f"{s:8.2f}  " + "  ".join(f"{v:28.4f}" for v in out) + "   " + " / ".join(f"{v:.4f}" for v in extra))
    rows = np.array(rows)
    print("rms bias " + "  ".join(f"{v:28.4f}" for v in np.sqrt((rows ** 2).mean(0))[:3]) + "   "
          + " / ".join(f"{v:.4f}" for v in np.sqrt((rows ** 2).mean(0))[3:]))


if __name__ == "__main__":
    main()
