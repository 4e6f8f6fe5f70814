"""The lean multislice loop: precomputed transmission functions, 2 FFTs per slice, batched.

Stock abTEM spends four FFTs per slice (two to band-limit the transmission function it
rebuilds for every slice, two to propagate) plus buffer copies. A periodic crystal has only a
few distinct slices, so here their band-limited transmission functions are computed once and
the loop per slice is: multiply by t_k, FFT, multiply by the (tilted, band-limited) Fresnel
propagator, inverse FFT. At an exit plane the wave is already in Fourier space, so the
diffraction pattern costs no extra FFT. Several waves (probe positions, frozen-phonon
configurations) are propagated together as one batch.

Everything here is arrays in, arrays out; abTEM is used only to build the potential slices
(Lobato or Kirkland parametrisation) and the probe wave, so the physics is abTEM's.

Units: lengths Å, reciprocal lengths Å⁻¹ (no 2π), energy eV, angles mrad.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as sp_fft  # pocketfft: deterministic, and fast for complex64 unlike numpy.fft

from .optics import centred_crop_index, wavelength_A

try:  # FFTW with planned in-place transforms is the fastest CPU path; numpy is the fallback
    import pyfftw

    _HAVE_FFTW = True
except ImportError:  # pragma: no cover - pyfftw ships with abtem's dependencies
    _HAVE_FFTW = False


@dataclass
class SliceStack:
    """The potential of a specimen as distinct slices and the order in which they occur.

    ``potential`` (n_unique, G_x, G_y) float32: projected potential of each distinct slice,
    V·Å (abTEM's convention). ``order`` (n_slices,) int: index into ``potential`` for each
    slice from the entrance surface down. ``slice_thickness_A`` is uniform.
    """

    potential: np.ndarray
    order: np.ndarray
    slice_thickness_A: float
    sampling_A: tuple[float, float]

    @property
    def gpts(self) -> tuple[int, int]:
        return tuple(self.potential.shape[-2:])  # type: ignore[return-value]

    @property
    def num_slices(self) -> int:
        return len(self.order)


def slice_plan(thickness_A: float, period_z_A: float | None, target_slice_A: float) -> tuple[int, float]:
    """(slices per repeat unit, slice thickness Å).

    For a crystal periodic along z with period p, the unit is one period cut into
    round(p / target) equal slices, so every period has the same slices; otherwise the unit is
    the whole slab.
    """
    if period_z_A:
        n = max(1, round(period_z_A / target_slice_A))
        return n, period_z_A / n
    n = max(1, math.ceil(thickness_A / target_slice_A - 1e-9))
    return n, thickness_A / n


def exit_slices(thicknesses_A, slice_thickness_A: float) -> list[int]:
    """Number of slices after which each requested thickness is reached (nearest, ≥ 1)."""
    return [max(1, int(round(float(t) / slice_thickness_A))) for t in thicknesses_A]


def build_slices(atoms, gpts: tuple[int, int], target_slice_A: float, max_thickness_A: float,
                 period_z_A: float | None = None, parametrization: str = "lobato") -> SliceStack:
    """Potential slices of ``atoms`` (cell [Lx, Ly, T], slab from z = 0) with abTEM.

    With ``period_z_A`` the potential of one period (atoms with z < p) is sliced once and
    repeated; the slab then needs ceil(T / dz) slices in all.
    """
    import abtem
    from abtem import Potential

    n_unit, dz = slice_plan(max_thickness_A, period_z_A, target_slice_A)
    lx, ly = float(atoms.cell[0, 0]), float(atoms.cell[1, 1])
    if period_z_A:
        unit = atoms[atoms.positions[:, 2] < period_z_A - 1e-9]
        unit.set_cell([lx, ly, period_z_A])
        n_total = max(1, int(round(max_thickness_A / dz)))
    else:
        unit = atoms.copy()
        unit.set_cell([lx, ly, n_unit * dz])
        n_total = n_unit
    unit.pbc = True
    pot = Potential(unit, gpts=gpts, slice_thickness=(dz,) * n_unit, parametrization=parametrization,
                    projection="infinite")
    # abTEM sums atoms in numba threads: the order, hence rounding, follows the count. Its FFTs plan with
    # FFTW_MEASURE, which times candidate algorithms and so picks a different one (different rounding)
    # from one process to the next; FFTW_ESTIMATE plans without timing, so the same specimen gives the
    # same potential bits in every process
    with _single_numba_thread(), abtem.config.set({"fftw.planning_effort": "FFTW_ESTIMATE"}):
        array = np.asarray(pot.build(lazy=False).array, dtype=np.float32)
    order = np.arange(n_total) % n_unit
    return SliceStack(potential=array, order=order, slice_thickness_A=dz, sampling_A=(lx / gpts[0], ly / gpts[1]))


@contextlib.contextmanager
def _single_numba_thread():
    try:
        import numba
    except ImportError:  # pragma: no cover
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def spatial_frequencies(gpts: tuple[int, int], sampling_A: tuple[float, float]):
    """(kx[:, None], ky[None, :]) in Å⁻¹, FFT order."""
    kx = np.fft.fftfreq(gpts[0], sampling_A[0])
    ky = np.fft.fftfreq(gpts[1], sampling_A[1])
    return kx[:, None], ky[None, :]


def antialias_aperture(gpts: tuple[int, int], sampling_A: tuple[float, float]) -> np.ndarray:
    """abTEM's band limit: 1 inside 2/3 of the Nyquist frequency, cosine taper at the edge."""
    from abtem.antialias import antialias_aperture as _aa

    return np.asarray(_aa(gpts, sampling_A, np), dtype=np.float32)


def fresnel_propagator(gpts, sampling_A, slice_thickness_A: float, energy_eV: float,
                       tilt_mrad=(0.0, 0.0)) -> np.ndarray:
    """Band-limited Fresnel propagator for one slice, with beam tilt as a lateral shift.

    P(k) = exp(−iπλ·dz·k²) · exp(−2πi·dz·(kx·tan θx + ky·tan θy)) · A(k): the tilted beam
    walks sideways by dz·tan θ per slice through the untilted crystal (abTEM's convention).
    """
    kx, ky = spatial_frequencies(gpts, sampling_A)
    lam = wavelength_A(energy_eV)
    phase = -np.pi * lam * slice_thickness_A * (kx**2 + ky**2)
    tx, ty = (math.tan(float(t) * 1e-3) for t in tilt_mrad)
    phase = phase - 2 * np.pi * slice_thickness_A * (kx * tx + ky * ty)
    return (np.exp(1j * phase) * antialias_aperture(gpts, sampling_A)).astype(np.complex64)


def interaction_parameter(energy_eV: float) -> float:
    """σ in rad/(V·Å) (abTEM's energy2sigma: relativistic)."""
    from abtem.core.energy import energy2sigma

    return float(energy2sigma(energy_eV))


def transmission_functions(potential: np.ndarray, energy_eV: float, sampling_A) -> np.ndarray:
    """Band-limited t = exp(iσV) of each slice, (n, G_x, G_y) complex64."""
    phase = np.float32(interaction_parameter(energy_eV)) * potential.astype(np.float32)
    t = np.empty(phase.shape, np.complex64)  # single precision throughout: no complex128 detour
    np.cos(phase, out=t.real)
    np.sin(phase, out=t.imag)
    aperture = antialias_aperture(potential.shape[-2:], sampling_A)
    f = sp_fft.fft2(t, overwrite_x=True, workers=1)
    f *= aperture
    return sp_fft.ifft2(f, overwrite_x=True, workers=1)


PLANNING = {"estimate": "FFTW_ESTIMATE", "measure": "FFTW_MEASURE", "patient": "FFTW_PATIENT"}


def fftw_wisdom(shapes: list[tuple[int, ...]], planning: str = "measure", wisdom=None):
    """FFTW wisdom covering in-place batched 2D transforms of ``shapes`` (complex64).

    FFTW_MEASURE/PATIENT choose among algorithms by timing them, so two processes planning on
    their own may pick different algorithms and round differently. Planning once and handing
    the wisdom to every worker (and keeping it with the dataset) makes every shard bit-identical
    whichever process computes it. Returns the wisdom (a tuple of bytes) or None without FFTW.
    """
    if not _HAVE_FFTW:  # pragma: no cover
        return None
    if wisdom is not None:
        pyfftw.import_wisdom(wisdom)
    for shape in shapes:
        buf = pyfftw.empty_aligned(shape, dtype=np.complex64)
        for direction in ("FFTW_FORWARD", "FFTW_BACKWARD"):
            pyfftw.FFTW(buf, buf, axes=(-2, -1), direction=direction, flags=(PLANNING[planning],), threads=1)
    return pyfftw.export_wisdom()


def use_wisdom(wisdom) -> None:
    """Import wisdom made by :func:`fftw_wisdom` (plans then come from it, not from timing)."""
    if _HAVE_FFTW and wisdom is not None:
        pyfftw.import_wisdom(tuple(bytes(w) for w in wisdom))


class _FFT:
    """In-place batched 2D FFT pair on one buffer (FFTW plans made once, reused)."""

    def __init__(self, shape: tuple[int, ...], threads: int = 1, planning: str = "measure"):
        if _HAVE_FFTW:
            self.buffer = pyfftw.empty_aligned(shape, dtype=np.complex64)
            flags = (PLANNING[planning],)
            self._fwd = pyfftw.FFTW(self.buffer, self.buffer, axes=(-2, -1), direction="FFTW_FORWARD",
                                    flags=flags, threads=threads)
            self._inv = pyfftw.FFTW(self.buffer, self.buffer, axes=(-2, -1), direction="FFTW_BACKWARD",
                                    flags=flags, threads=threads)
        else:  # pragma: no cover
            self.buffer = np.empty(shape, dtype=np.complex64)

    def forward(self) -> None:
        if _HAVE_FFTW:
            self._fwd()
        else:  # pragma: no cover
            self.buffer[...] = sp_fft.fft2(self.buffer)

    def inverse(self) -> None:
        if _HAVE_FFTW:
            self._inv()  # normalised by 1/N like numpy
        else:  # pragma: no cover
            self.buffer[...] = sp_fft.ifft2(self.buffer)


def propagate(waves: np.ndarray, transmission: np.ndarray, order: np.ndarray, propagator: np.ndarray,
              exit_after: list[int], crop: tuple[int, int] | None = None, threads: int = 1,
              return_waves: bool = False, planning: str = "measure") -> np.ndarray:
    """Run the multislice loop; return |Ψ(k)|² at each exit plane.

    ``waves`` (B, G_x, G_y) complex: entrance waves in real space. ``transmission`` either
    (n_unique, G_x, G_y) shared by the batch or (B, n_unique, G_x, G_y) one stack per wave
    (frozen phonons). ``order`` indexes the slices; ``exit_after`` lists slice counts
    (1-based) at which to record. Returns (len(exit_after), B, H, W) float32 intensities,
    fft-shifted (q = 0 at pixel (H//2, W//2)) and cropped to ``crop`` = (H, W) — or, with
    ``return_waves``, the complex Fourier-space waves on the full grid (for tests).

    ``planning``: "measure" (default) or "patient" time candidate FFT algorithms (fast; 384
    points: ~5x faster than "estimate"); for bit-identical results across processes plan once
    with :func:`fftw_wisdom` and :func:`use_wisdom` in each. "estimate" needs no wisdom.
    """
    waves = np.asarray(waves, dtype=np.complex64)
    if waves.ndim == 2:
        waves = waves[None]
    b, gx, gy = waves.shape
    per_wave = transmission.ndim == 4
    exits = sorted(set(int(e) for e in exit_after))
    if not exits or exits[0] < 1 or exits[-1] > len(order):
        raise ValueError(f"exit planes {exit_after} outside 1..{len(order)}")
    h, w = crop if crop is not None else (gx, gy)
    out_dtype = np.complex64 if return_waves else np.float32
    out = np.empty((len(exits), b, h if not return_waves else gx, w if not return_waves else gy), out_dtype)
    fft = _FFT((b, gx, gy), threads=threads, planning=planning)
    psi = fft.buffer
    psi[...] = waves
    ix, iy = centred_crop_index(gx, h), centred_crop_index(gy, w)
    e = 0
    for i, k in enumerate(order[: exits[-1]]):
        if per_wave:
            np.multiply(psi, transmission[:, k], out=psi)
        else:
            np.multiply(psi, transmission[k], out=psi)
        fft.forward()
        np.multiply(psi, propagator, out=psi)
        if i + 1 == exits[e]:
            if return_waves:
                out[e] = psi
            else:  # shift only the cropped window: q = 0 lands at (h//2, w//2)
                sub = psi[:, ix[:, None], iy[None, :]]
                out[e] = (sub.real**2 + sub.imag**2)
            e += 1
            if e == len(exits):
                break
        fft.inverse()
    # map back to the caller's exit order
    idx = [exits.index(int(x)) for x in exit_after]
    return out[idx]


def probe_waves(gpts, extent_A, energy_eV: float, semiangle_mrad: float, positions_A, defocus_A: float = 0.0,
                cs_A: float = 0.0, tilt_mrad=(0.0, 0.0)) -> np.ndarray:
    """abTEM probe waves (B, G_x, G_y) complex64 at ``positions_A`` (B, 2), real space.

    Defocus follows abTEM: positive ``defocus_A`` is underfocus (C10 = −defocus).
    """
    import abtem
    from abtem import Probe

    probe = Probe(gpts=gpts, extent=extent_A, energy=energy_eV, semiangle_cutoff=semiangle_mrad,
                  defocus=defocus_A, Cs=cs_A, tilt=tuple(float(t) for t in tilt_mrad))
    pos = np.atleast_2d(np.asarray(positions_A, dtype=float))
    # abTEM's own FFTW_MEASURE plan of the probe has the propagation buffer's shape; its timed choice
    # would enter this process's FFTW wisdom and, with fft_planning "estimate" (no shared wisdom),
    # decide the propagation's plan too: last-bit differences from one run to the next
    with abtem.config.set({"fftw.planning_effort": "FFTW_ESTIMATE"}):
        waves = probe.build(scan=pos, lazy=False)
    return np.asarray(waves.array, dtype=np.complex64).reshape(len(pos), *gpts)


def vacuum_intensity(waves: np.ndarray, gpts, sampling_A, crop: tuple[int, int]) -> np.ndarray:
    """|FFT(ψ)|² of the incident probe, band-limited, shifted and cropped like ``propagate``."""
    f = sp_fft.fft2(np.asarray(waves, np.complex64)) * antialias_aperture(gpts, sampling_A)
    ix, iy = centred_crop_index(gpts[0], crop[0]), centred_crop_index(gpts[1], crop[1])
    sub = f[..., ix[:, None], iy[None, :]]
    return (sub.real**2 + sub.imag**2).astype(np.float32)
