"""Electron optics and grids: wavelength, FFT-friendly sizes, reciprocal sampling. Pure functions.

Units: energy in eV, lengths in Å, reciprocal lengths in Å⁻¹ (no 2π), angles in mrad.
"""

from __future__ import annotations

import math

from ..errors import FourdError

# CODATA 2018
_H = 6.62607015e-34  # J s
_C = 299792458.0  # m/s
_ME = 9.1093837015e-31  # kg
_QE = 1.602176634e-19  # C


def wavelength_A(energy_eV: float) -> float:
    """Relativistic electron wavelength λ = h / √(2 m e E (1 + e E / (2 m c²))).

    Parameters
    ----------
    energy_eV : beam energy (kinetic), eV; > 0.

    Returns
    -------
    λ in Å (CODATA 2018 constants).

    >>> round(wavelength_A(200e3), 6), round(wavelength_A(300e3), 6)
    (0.025079, 0.019687)
    """
    if not energy_eV > 0:
        raise FourdError(f"energy {energy_eV!r} eV: expected a positive beam energy, e.g. 200e3")
    e = energy_eV * _QE
    return _H / math.sqrt(2 * _ME * e * (1 + e / (2 * _ME * _C**2))) * 1e10


def is_fft_friendly(n: int, primes: tuple[int, ...] = (2, 3, 5, 7)) -> bool:
    """True when ``n`` has no prime factor outside ``primes`` (FFTs of such sizes are fast).

    Parameters
    ----------
    n : a grid size.
    primes : the allowed prime factors.

    Returns
    -------
    Whether n = ∏ p^k over ``primes`` only.

    >>> is_fft_friendly(384), is_fft_friendly(386)
    (True, False)
    """
    if n < 1:
        return False
    for p in primes:
        while n % p == 0:
            n //= p
    return n == 1


def next_fft_size(n: int, multiple_of: int = 1) -> int:
    """Smallest m ≥ n with m = 2^a·3^b·5^c·7^d and m divisible by ``multiple_of``.

    Parameters
    ----------
    n : the smallest acceptable size.
    multiple_of : m must be a multiple of this.

    Returns
    -------
    m.

    >>> next_fft_size(386), next_fft_size(386, multiple_of=16)
    (392, 400)
    """
    m = max(1, int(n))
    while not (m % multiple_of == 0 and is_fft_friendly(m)):
        m += 1
    return m


def antialiased_gpts(output_px: int) -> int:
    """Real-space grid points whose 2/3 anti-aliasing aperture spans exactly ``output_px`` pixels.

    Multislice keeps only spatial frequencies below 2/3 of the Nyquist limit, so a grid of n
    points yields 2n/3 usable diffraction pixels; n = 3·output/2 must itself be FFT-friendly.

    Parameters
    ----------
    output_px : pattern side in pixels (even).

    Returns
    -------
    Grid points per side, 3·output_px/2. A size whose grid has a large prime factor raises
    :class:`FourdError` naming a good size instead.

    >>> antialiased_gpts(256)
    384
    """
    if output_px < 2 or output_px % 2:
        raise FourdError(f"output size {output_px}: expected an even number of pixels ≥ 2")
    n = 3 * output_px // 2
    if not is_fft_friendly(n):
        raise FourdError(f"output size {output_px} px needs a {n}-point grid, which has a large prime factor; "
                         f"choose a size such as {_suggest(output_px)}")
    return n


def _suggest(output_px: int) -> int:
    m = output_px
    while not is_fft_friendly(3 * m // 2) or m % 2:
        m += 2
    return m


def max_semiangle_mrad(energy_eV: float, sampling_A: float) -> float:
    """Largest scattering angle inside the 2/3 anti-aliasing aperture of a grid.

    Parameters
    ----------
    energy_eV : beam energy, eV.
    sampling_A : real-space grid spacing, Å.

    Returns
    -------
    The angle in mrad: (2/3) · λ / (2 · sampling).

    >>> round(max_semiangle_mrad(200e3, 0.1), 2)
    83.6
    """
    if not sampling_A > 0:
        raise FourdError(f"real-space sampling {sampling_A!r} Å: expected a positive number")
    return (2.0 / 3.0) * wavelength_A(energy_eV) / (2.0 * sampling_A) * 1e3


def disk_radius_invA(semiangle_mrad: float, energy_eV: float) -> float:
    """Radius of the bright-field disk in reciprocal space.

    Parameters
    ----------
    semiangle_mrad : probe convergence semi-angle α, mrad.
    energy_eV : beam energy, eV.

    Returns
    -------
    α / λ in Å⁻¹ (no 2π).

    >>> round(disk_radius_invA(2.0, 200e3), 4)
    0.0797
    """
    return semiangle_mrad * 1e-3 / wavelength_A(energy_eV)


def centred_crop_index(n_grid: int, n_out: int):
    """FFT-order indices of the ``n_out`` lowest frequencies of an ``n_grid`` grid, in shifted order.

    Output pixel j holds frequency j − n_out//2, so q = 0 lands at pixel n_out//2 (fftshift and
    crop in one gather).

    Parameters
    ----------
    n_grid : points of the FFT grid.
    n_out : pixels of the output pattern (≤ n_grid).

    Returns
    -------
    (n_out,) integer indices into an FFT-ordered axis.

    >>> centred_crop_index(8, 4)
    array([6, 7, 0, 1])
    """
    import numpy as np

    return (np.arange(n_out) - n_out // 2) % n_grid
