"""Per-vector position errors of the model's and the baseline's vectors on the Si [110] strain series.

The truth proxy for each position is the lattice fitted to the noise-free baseline vectors (strain error
there ≤ 0.1 %); every noisy vector is indexed on it and its distance from the lattice point is its error.
Prints the rms error (in 1e-3 Å⁻¹) by the vector's rank in intensity, per method.

    python experiments/strain_noise/vector_errors.py strain-series [--model-grid]

after ``scripts/strain_benchmark.py strain-series`` has written the vectors (``strain-series/benchmark``).
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from strain_benchmark import scaled_settings  # noqa: E402

from fourdcrystal import lattice  # noqa: E402
from fourdcrystal.io.vectors import read_vectors  # noqa: E402
from fourdcrystal.maps.strain import StrainConfig, strain_maps  # noqa: E402


def vec_file(folder, stem, factor, model_grid):
    st = scaled_settings("release", factor, model_grid)
    digest = hashlib.sha256(json.dumps(["release", st.as_dict()], sort_keys=True).encode()).hexdigest()
    return folder / "benchmark" / f"{stem}-x{factor:g}-{digest[:10]}-bragg.h5"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("series")
    ap.add_argument("--model-grid", action="store_true", help="the model's peaks placed on its own grid")
    ap.add_argument("--factor", type=float, default=1.0)
    ap.add_argument("--dose", default="1e5")
    a = ap.parse_args()
    folder = Path(a.series)
    for t in ("0200", "0499", "1000"):
        clean = read_vectors(sorted((folder / "benchmark").glob(f"series-t{t}A-clean-x0.5-*-bragg.h5"))[0], "baseline")
        ref = strain_maps(clean, StrainConfig(method="baseline", reference="0:1,0:1", weights="none", tolerance=0.15))
        for method in ("model", "baseline"):
            f = (vec_file(folder, f"series-t{t}A-{a.dose}", a.factor, a.model_grid) if method == "model" else
                 sorted((folder / "benchmark").glob(f"series-t{t}A-{a.dose}-x0.5-*-bragg.h5"))[0])
            if not f.exists():
                print("missing", f)
                continue
            v = read_vectors(f, method)
            errs, ranks, gabs = [], [], []
            for p in range(v.positions):
                basis = np.stack([ref["g1"].reshape(-1, 2)[p], ref["g2"].reshape(-1, 2)[p]], axis=1)
                q, w = v.position(p)
                hk, _ = lattice.index_vectors(q, basis, ref["origin"].reshape(-1, 2)[p])
                pred = hk @ basis.T + ref["origin"].reshape(-1, 2)[p]
                d = np.linalg.norm(q - pred, axis=1)
                order = np.argsort(np.argsort(-w))
                keep = d < 0.25 * np.linalg.norm(basis, axis=1).min()
                errs += list(d[keep]); ranks += list(order[keep]); gabs += list(np.linalg.norm(pred[keep], axis=1))
            errs, ranks, gabs = map(np.array, (errs, ranks, gabs))
            line = []
            for lo, hi in ((0, 5), (5, 10), (10, 20), (20, 40), (40, 400)):
                s = (ranks >= lo) & (ranks < hi)
                line.append(f"r{lo}-{hi}: {1e3 * np.sqrt(np.mean(errs[s] ** 2)) if s.any() else float('nan'):5.2f} (n{s.sum()})")
            print(f"t{t} {method:8s} {a.dose} all {1e3 * np.sqrt(np.mean(errs ** 2)):.2f}  " + "  ".join(line))


main()
