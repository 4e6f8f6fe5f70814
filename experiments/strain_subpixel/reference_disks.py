"""Where the correlation places a strain series' reference disks against their exact g, three ways (experiment).

The reference pattern (position 0, 0: unstrained, unrotated) of a cubic [001] series: each of the (100), (110) and
(200) disks placed by refine_positions started at its exact g, with the shipped card's correlation and the
parabola, a three-point Gaussian (log-parabola) fit, or DFT up-sampling; prints the radial miss in pixels.

    python experiments/strain_subpixel/reference_disks.py /work/runs/sbench60/series/test/SrTiO3-001/series-t0599A-clean.h5 --a 3.905
"""
import argparse

import h5py
import numpy as np
from dataclasses import replace
import fourdcrystal.detection.baseline as B
from fourdcrystal.detection.peaks import parabolic_offsets
from fourdcrystal.detection.detect import settings_from_card
from fourdcrystal.model.card import RELEASE_WEIGHTS, read_card
from fourdcrystal.prediction.calibration import disk_centre
from fourdcrystal.simulation.optics import disk_radius_invA
s = settings_from_card(read_card(RELEASE_WEIGHTS))[0].baseline

def gauss_offsets(image, ij):
    img = np.asarray(image, float); ij = np.asarray(ij, int).reshape(-1, 2); h, w = img.shape
    i, j = ij[:, 0], ij[:, 1]; b = img[i, j]; out = parabolic_offsets(img, ij)
    for axis, (a, c) in enumerate(((img[np.maximum(i-1,0), j], img[np.minimum(i+1,h-1), j]), (img[i, np.maximum(j-1,0)], img[i, np.minimum(j+1,w-1)]))):
        ok = (a > 0) & (b > 0) & (c > 0)
        la, lb, lc = np.log(np.where(ok, a, 1)), np.log(np.where(ok, b, 1)), np.log(np.where(ok, c, 1))
        den = la - 2*lb + lc; ok &= den < 0
        out[ok, axis] = np.clip(0.5*(la-lc)[ok]/den[ok], -0.5, 0.5)
    return out

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument('series_file')
ap.add_argument('--a', type=float, required=True, help='the cubic cell, Å')
args = ap.parse_args()
sb = args.series_file
if True:
    f = h5py.File(args.series_file, 'r'); d = f['data'][()].astype(float); pr = f['probe'][()].astype(float); dk = f['data'].attrs['k_pixel_invA']
    r = disk_radius_invA(float(f['data'].attrs['semiangle_mrad']), float(f['data'].attrs['energy_eV']))/dk
    ref = d[0, 0]
    c = np.array(disk_centre(ref, r)); pc = np.array(disk_centre(pr, r))
    # shift probe so its centre sits at H//2 (as predict does, by Fourier shift)
    H = pr.shape[0]; sh = np.array([H//2, H//2]) - pc
    ky, kx = np.meshgrid(np.fft.fftfreq(H), np.fft.fftfreq(H), indexing='ij')
    prc = np.real(np.fft.ifft2(np.fft.fft2(pr) * np.exp(-2j*np.pi*(ky*sh[0] + kx*sh[1]))))
    # and the pattern so the zero beam sits at H//2 (sub-pixel by Fourier)
    sh2 = np.array([H//2, H//2]) - c
    refc = np.real(np.fft.ifft2(np.fft.fft2(ref) * np.exp(-2j*np.pi*(ky*sh2[0] + kx*sh2[1]))))
    g = 1/args.a/dk
    hk = np.array([(1,0),(-1,0),(0,1),(0,-1),(1,1),(1,-1),(-1,1),(-1,-1),(2,0),(-2,0),(0,2),(0,-2)])
    exact = H//2 + hk * g
    for mode in ('parabolic', 'gauss', 'dft'):
        if mode == 'gauss':
            B.parabolic_offsets = gauss_offsets; cfg = s
        else:
            B.parabolic_offsets = parabolic_offsets; cfg = replace(s, peaks=replace(s.peaks, subpixel=mode))
        m = B.refine_positions(refc[None], prc, [exact], cfg, 2.5)[0]
        radial = np.sum((m - exact) * hk, 1) / np.linalg.norm(hk, axis=1)
        print(mode, 'radial miss px by order:', np.round(radial, 3), 'mean rel %', np.round(100*np.mean(radial/(np.linalg.norm(hk,axis=1)*g)), 3))
