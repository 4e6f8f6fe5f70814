"""How far the correlation places each disk of a strain series from its exact g, position by position (experiment).

For every pattern of a cubic [001] series file, the (100), (110) and (200) disks are placed by ``refine_positions``
(the shipped card's correlation, parabola) started at their exact g (from the file's truth: strain and rotation);
prints each order's mean radial miss in pixels and the isotropic scale of the placed disks against the exact ones.

    python experiments/disk_edges/position_pulls.py /work/runs/sbench60/series/test/SrTiO3-001/series-t0599A-clean.h5 --a 3.905
"""
import argparse

import h5py
import numpy as np

from fourdcrystal.detection.baseline import refine_positions
from fourdcrystal.detection.detect import settings_from_card
from fourdcrystal.model.card import RELEASE_WEIGHTS, read_card
from fourdcrystal.prediction.calibration import disk_centre
from fourdcrystal.simulation.optics import disk_radius_invA

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("series_file")
ap.add_argument("--a", type=float, required=True, help="the cubic cell, Å")
args = ap.parse_args()
config = settings_from_card(read_card(RELEASE_WEIGHTS))[0].baseline
with h5py.File(args.series_file, "r") as f:
    data, probe, dk = f["data"][()].astype(float), f["probe"][()].astype(float), float(f["data"].attrs["k_pixel_invA"])
    eps, rot = f["truth/strain"][()].reshape(-1, 3), f["truth/rotation_deg"][()].reshape(-1)
    radius = disk_radius_invA(float(f["data"].attrs["semiangle_mrad"]), float(f["data"].attrs["energy_eV"])) / dk
h = probe.shape[0]
ky, kx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(h), indexing="ij")


def centred(img):  # the disk's centre moved to pixel (h // 2, h // 2) by a Fourier shift, as predict does
    s = np.array([h // 2, h // 2]) - np.array(disk_centre(img, radius))
    return np.real(np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (ky * s[0] + kx * s[1]))))


hk = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1), (2, 0), (-2, 0), (0, 2), (0, -2)],
              float)
kernel = centred(probe)
for n, pattern in enumerate(data.reshape(-1, h, h)):
    t = np.deg2rad(rot[n])
    turn = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    stretch = np.eye(2) + np.array([[eps[n, 0], eps[n, 2]], [eps[n, 2], eps[n, 1]]])
    g = (np.linalg.inv(stretch).T @ turn @ (hk / args.a / dk).T).T  # atoms r -> (I + e) R r: g -> (I + e)^-T R g
    placed = refine_positions(centred(pattern)[None], kernel, [h // 2 + g], config, 2.5)[0]
    radial = np.sum((placed - h // 2 - g) * g, 1) / np.linalg.norm(g, axis=1)
    scale = 100 * (np.sum((placed - h // 2) * g) / np.sum(g * g) - 1)
    print(f"position {n}: rotation {rot[n]:+.2f}°, strain {np.round(100 * eps[n], 2)} %; mean radial miss (100) "
          f"{radial[:4].mean():+.3f} px, (110) {radial[4:8].mean():+.3f} px, (200) {radial[8:].mean():+.3f} px; "
          f"scale {scale:+.3f} %")
