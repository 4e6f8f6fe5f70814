"""The classical Laue tilt's rocking-curve width on the tilted strain series: bias and error per width.

For each series file (300 and 600 Å, clean and 10⁵ e⁻) the Laue fit (``detection.tilt.laue_tilt``, gain 1) on
the baseline's vectors that ``score.py`` cached, for several widths σ and for the width of least misfit per
pattern; against the true crystal tilt: the least-squares slope of fitted on true tilt (1: unbiased) and the rms
error (mrad). Exploration on a series the shipped settings were not chosen on; nothing here is tuned for it.

    python experiments/orientation/laue_sigma.py SERIES_DIR WORK > experiments/orientation/laue_sigma.txt
"""

import sys
from pathlib import Path

import h5py
import numpy as np

from fourdcrystal.detection.tilt import TiltSettings, laue_tilt
from fourdcrystal.simulation.optics import wavelength_A

SIGMAS_INVA = [5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 8e-3]


def score(tilts, truth) -> str:
    x = np.array(tilts)
    ok = np.isfinite(x).all(1)
    slope = (x[ok] * truth[ok]).sum() / (truth[ok] ** 2).sum()
    return f"slope {slope:.2f} rms {np.sqrt(np.mean(np.sum((x[ok] - truth[ok]) ** 2, 1))):.2f} n {ok.sum()}"


def main(series: Path, work: Path) -> None:
    for t in ("0300", "0600"):
        for dose in ("clean", "1e5"):
            with h5py.File(series / f"series-t{t}A-{dose}.h5") as src:
                data = src["data"][()]
                truth = src["truth/tilt_mrad"][()].reshape(-1, 2)
                cal = dict(src["data"].attrs)
            data = data.reshape(-1, *data.shape[2:])
            with h5py.File(work / f"series-t{t}A-{dose}-bragg.h5") as f:
                g = f["baseline"]
                off, q = g["offsets"][()], np.stack([g["qx_invA"][()], g["qy_invA"][()]], 1)
            radius = cal["semiangle_mrad"] * 1e-3 / wavelength_A(cal["energy_eV"])
            centre = (data.shape[1] // 2, data.shape[2] // 2)
            by_sigma = {s: [] for s in SIGMAS_INVA}
            least_misfit = []
            for p in range(len(data)):
                fits = [laue_tilt(data[p], centre, cal["k_pixel_invA"], q[off[p]:off[p + 1]], cal["energy_eV"],
                                  radius, TiltSettings(sigma_invA=s, gain=1.0)) for s in SIGMAS_INVA]
                for s, fit in zip(SIGMAS_INVA, fits):
                    by_sigma[s].append(fit.tilt_mrad)
                ok = [fit for fit in fits if fit.ok]
                least_misfit.append(min(ok, key=lambda fit: fit.misfit).tilt_mrad if ok else np.full(2, np.nan))
            print(f"{t} Å {dose}: answering zero {np.sqrt(np.mean(np.sum(truth ** 2, 1))):.2f} mrad")
            for s in SIGMAS_INVA:
                print(f"  sigma {s:g} Å⁻¹: {score(by_sigma[s], truth)}")
            print(f"  least misfit per pattern: {score(least_misfit, truth)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
