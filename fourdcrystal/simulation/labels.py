"""V_g and q_z labels from potential slices (the 4D-MAKE definition). Pure arrays.

With V(x, y, z) the potential slices of the specimen down to the exit plane (N_z slices of
thickness dz), windowed by Tukey windows w_x, w_y, w_z (scipy's default α = 0.5) and scaled by
1/(G_x·G_y) (the reference's 1/(4N²): its potential grid is 2N×2N for an N×N pattern, so both
are "one over the number of lateral potential samples"):

    F(q_x, q_y, q_z) = |FFT_xyz(V · w)| · exp(−q_z² / (2σ²)),   σ = 1/20 Å⁻¹
    vg(q_x, q_y) = Σ_qz F,    qz(q_x, q_y) = Σ_qz F·q_z / Σ_qz F

with q_z = fftfreq(N_z, dz) in Å⁻¹; both maps are cropped to the H×W lowest lateral frequencies
(the CBED grid) and shifted so q = 0 is at pixel (H//2, W//2). vg is in V·Å (abTEM's projected
potential per slice, summed as in the reference); qz in Å⁻¹.

Deviation from the reference, and why: the window and FFT are separable, so the lateral FFT is
taken once per *distinct* slice and cropped before the z-FFT (identical result, far fewer
FFTs). And where a crystal repeats along z (a periodic slab: a few distinct slices, many
times), the z-transform is the sum over the distinct slices S_u of S_u·C_u(q_z), with
C_u(q_z) = Σ_{k: slice k is u} w_z(k)·exp(−2πi q_z k dz): a (N_z × n_distinct) matrix times the
(n_distinct × H·W) spectra, equal to the FFT to float rounding and several times cheaper
(``scripts/bench_simulate.py`` times it). A cut box, every slice distinct, keeps the FFT. For ``tilt_mode = "beam"`` the atoms are untilted and the beam is tilted by (θx, θy);
the labels are then expressed in the beam frame to first order in θ: a reflection at lateral
frequency g gains q_z = θx·g_x + θy·g_y (see ``fourdcrystal.specimens.specimen``).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sp_fft
from scipy.signal import windows

from .optics import centred_crop_index

QZ_SIGMA_INVA = 1.0 / 20.0


def lateral_spectra(potential: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """FFT_xy(V·w_x·w_y)/(G_x·G_y) of each distinct slice, cropped and shifted: (n, H, W) complex64."""
    n, gx, gy = potential.shape
    wx = windows.tukey(gx)[:, None]
    wy = windows.tukey(gy)[None, :]
    f = sp_fft.fft2(potential.astype(np.float64) * (wx * wy), workers=1) / (gx * gy)
    ix, iy = centred_crop_index(gx, crop[0]), centred_crop_index(gy, crop[1])
    return f[:, ix[:, None], iy[None, :]].astype(np.complex64)


def _hermitian_sums(coeff: np.ndarray, flat: np.ndarray, g: np.ndarray, qz: np.ndarray, h: int,
                    w: int) -> tuple[np.ndarray, np.ndarray]:
    """Σ_qz g·|F| and Σ_qz g·q_z·|F| over F = coeff @ flat (rows q_z in FFT order; columns the H×W pixels, centred
    grid, H and W even), computing only half of F.

    The slices are real, so F(−q_z, −p) = F(q_z, p)* and |F| there is the same: the rows q_z < 0 are the rows
    q_z > 0 at the mirrored pixel. Inside the crop the mirror of pixel (i, j) is (H − i, W − j); row 0 and
    column 0 (frequency −H/2, −W/2) have their mirror outside and get the q_z < 0 rows directly. The same sums
    as over the full F to float rounding (``tests/test_simulate_physics.py``), in about half the time.
    """
    nz = len(qz)
    half = (nz - 1) // 2  # rows 1..half have their negative partner nz − m
    rows = np.arange(half + 1) if nz % 2 else np.append(np.arange(half + 1), nz // 2)  # q_z ≥ 0, and −Nyquist
    a = np.abs(coeff[rows] @ flat)  # (rows, H·W)
    vg = g[rows] @ a
    num = (g[rows] * qz[rows]) @ a
    gm, qm = g[1:half + 1], qz[1:half + 1]
    mirror_vg = (gm @ a[1:half + 1]).reshape(h, w)
    mirror_num = (gm * qm) @ a[1:half + 1]
    vg, num, mirror_num = vg.reshape(h, w), num.reshape(h, w), mirror_num.reshape(h, w)
    vg[1:, 1:] += mirror_vg[1:, 1:][::-1, ::-1]
    num[1:, 1:] -= mirror_num[1:, 1:][::-1, ::-1]  # q_z → −q_z
    edge = np.zeros((h, w), bool)
    edge[0, :] = edge[:, 0] = True
    neg = nz - np.arange(1, half + 1)
    if len(neg):
        e = np.abs(coeff[neg] @ flat[:, edge.ravel()])
        vg[edge] += g[neg] @ e
        num[edge] += (g[neg] * qz[neg]) @ e
    return vg, num


def bragg_labels(potential: np.ndarray, order: np.ndarray, slice_thickness_A: float, exit_after: list[int],
                 crop: tuple[int, int], qz_sigma_invA: float = QZ_SIGMA_INVA,
                 beam_tilt_mrad=(0.0, 0.0), k_sampling_invA: tuple[float, float] | None = None):
    """(vg, qz), each (len(exit_after), H, W) float32, for the specimen cut at each exit plane.

    ``potential`` (n_unique, G_x, G_y): distinct slices; ``order`` their sequence from the
    entrance surface; ``exit_after`` the slice counts of the exit planes. ``beam_tilt_mrad``
    and ``k_sampling_invA`` (pixel size of the output grid) are needed only for a tilted beam.
    """
    spectra = lateral_spectra(potential, crop)
    h, w = crop
    vgs = np.empty((len(exit_after), h, w), np.float32)
    qzs = np.empty_like(vgs)
    shift = None
    if any(float(t) for t in beam_tilt_mrad):
        if k_sampling_invA is None:
            raise ValueError("a tilted beam needs k_sampling_invA to express q_z in the beam frame")
        kx = (np.arange(h) - h // 2) * k_sampling_invA[0]
        ky = (np.arange(w) - w // 2) * k_sampling_invA[1]
        tx, ty = (math.tan(float(t) * 1e-3) for t in beam_tilt_mrad)
        shift = (tx * kx[:, None] + ty * ky[None, :]).astype(np.float32)
    n_unique = len(spectra)
    flat = spectra.reshape(n_unique, -1)
    for i, nz in enumerate(exit_after):
        nz = int(nz)
        wz = windows.tukey(nz)
        qz = np.fft.fftfreq(nz, slice_thickness_A).astype(np.float32)
        g = np.exp(-(qz**2) / (2 * qz_sigma_invA**2)).astype(np.float32)
        if n_unique * 4 <= nz:  # periodic along z: the z-DFT as a small matrix product (see the module notes)
            k = np.arange(nz)
            phase = np.exp(-2j * np.pi * np.outer(np.arange(nz), k) / nz) * wz[None, :]  # (q_z, slice)
            coeff = np.zeros((nz, n_unique), np.complex128)
            for u in range(n_unique):
                coeff[:, u] = phase[:, order[:nz] == u].sum(axis=1)
            vg, num = _hermitian_sums(coeff.astype(np.complex64), flat, g, qz, h, w)
        else:
            stack = spectra[order[:nz]] * wz.astype(np.float32)[:, None, None]
            a = np.abs(sp_fft.fft(stack, axis=0, workers=1)).reshape(nz, h * w)
            # the q_z sums as vector-matrix products over |spectrum| (BLAS), not a weighted copy of the
            # (q_z, H, W) stack summed twice
            vg, num = (g @ a).reshape(h, w), ((g * qz) @ a).reshape(h, w)
        with np.errstate(invalid="ignore", divide="ignore"):
            q = np.where(vg > 0, num / vg, 0.0)
        if shift is not None:
            q = q + shift
        vgs[i], qzs[i] = vg, q
    return vgs, qzs
