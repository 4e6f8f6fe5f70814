import math

import pytest

from fourdcrystal.errors import FourdError
from fourdcrystal.simulation.optics import (antialiased_gpts, disk_radius_invA, is_fft_friendly, max_semiangle_mrad,
                                            next_fft_size, wavelength_A)


def test_wavelength_against_textbook_values():
    # standard tabulated relativistic wavelengths (Williams & Carter): 100 kV 3.70 pm, 200 kV 2.51 pm, 300 kV 1.97 pm
    assert wavelength_A(100e3) == pytest.approx(0.03701, abs=2e-5)
    assert wavelength_A(200e3) == pytest.approx(0.02508, abs=2e-5)
    assert wavelength_A(300e3) == pytest.approx(0.01969, abs=2e-5)
    # non-relativistic limit at low energy: λ = h / sqrt(2 m e E) = 12.2643 / sqrt(E) Å
    assert wavelength_A(10.0) == pytest.approx(12.2643 / math.sqrt(10.0), rel=1e-5)


def test_wavelength_rejects_nonpositive_energy():
    with pytest.raises(FourdError, match="expected a positive beam energy"):
        wavelength_A(0)


def test_fft_sizes():
    assert is_fft_friendly(384) and is_fft_friendly(1) and is_fft_friendly(7 * 9 * 25)
    assert not is_fft_friendly(652) and not is_fft_friendly(654)  # 4·163, 2·3·109: the known slow sizes
    assert next_fft_size(651) == 672 and next_fft_size(650, multiple_of=4) == 672
    assert antialiased_gpts(256) == 384 and antialiased_gpts(128) == 192
    with pytest.raises(FourdError, match="large prime factor"):
        antialiased_gpts(434)  # 651 = 3·7·31


def test_semiangle_and_disk():
    # 200 kV, 0.1 Å sampling: Nyquist 1/(2·0.1) = 5 Å⁻¹, ×2/3 ×λ -> 83.6 mrad
    assert max_semiangle_mrad(200e3, 0.1) == pytest.approx(2 / 3 * 5 * wavelength_A(200e3) * 1e3)
    assert disk_radius_invA(2.0, 200e3) == pytest.approx(0.002 / 0.025079, rel=1e-3)
