"""Write tests/data/py4dstem_braggvectors.h5 with py4DSTEM itself (run in the py4DSTEM 0.14 environment).

    .py4dstem-venv/bin/python tests/data/make_py4dstem_braggvectors.py

A 3×4 scan of Bragg vectors on an oblique lattice (g1 = (0.30, 0), g2 = (0.10, 0.35) Å⁻¹),
each position deformed by a known strain and rotation (atoms r -> (I + ε) R(θ) r, so
g -> ((I + ε) R(θ))⁻ᵀ g), position (0, 0) undeformed; stored in detector pixels (0.02 Å⁻¹)
about a per-position origin that drifts (py4DSTEM's qx0/qy0 arrays), plus two stray vectors.
The truth goes to py4dstem_braggvectors_truth.json. Both files are committed.
"""

import json
from pathlib import Path

import numpy as np
import py4DSTEM
from py4DSTEM.braggvectors import BraggVectors

rng = np.random.default_rng(11)
rshape, qshape, dk = (3, 4), (96, 96), 0.02
g_ref = np.array([[0.30, 0.10], [0.0, 0.35]])  # columns g1, g2
hk = np.array([(h, k) for h in range(-4, 5) for k in range(-4, 5)])
q_ref = hk @ g_ref.T
keep = np.linalg.norm(q_ref, axis=1) <= 0.9
hk, q_ref = hk[keep], q_ref[keep]
bv = BraggVectors(rshape, qshape)
qx0 = 48.0 + rng.uniform(-1.5, 1.5, rshape)
qy0 = 47.0 + rng.uniform(-1.5, 1.5, rshape)
truth = {"strain": [], "rotation_deg": []}
for i in range(rshape[0]):
    for j in range(rshape[1]):
        eps = np.zeros(3) if (i, j) == (0, 0) else rng.uniform(-0.02, 0.02, 3)
        theta = 0.0 if (i, j) == (0, 0) else rng.uniform(-3, 3)
        c, s = np.cos(np.radians(theta)), np.sin(np.radians(theta))
        f = np.array([[1 + eps[0], eps[2]], [eps[2], 1 + eps[1]]]) @ np.array([[c, -s], [s, c]])
        q = q_ref @ np.linalg.inv(f)  # rows: g' = F^-T g
        inten = np.exp(-np.linalg.norm(q, axis=1) / 0.4)
        q = np.vstack([q, rng.uniform(-0.8, 0.8, (2, 2))])  # two stray vectors
        inten = np.concatenate([inten, [0.05, 0.05]])
        pl = bv._v_uncal.get_pointlist(i, j)
        d = np.zeros(len(q), dtype=pl.dtype)
        d["qx"], d["qy"], d["intensity"] = q[:, 0] / dk + qx0[i, j], q[:, 1] / dk + qy0[i, j], inten
        pl.add(d)
        truth["strain"].append(eps.tolist())
        truth["rotation_deg"].append(float(theta))
bv.calibration.set_Q_pixel_size(dk)
bv.calibration.set_Q_pixel_units("A^-1")
bv.calibration.set_R_pixel_size(2.0)
bv.calibration.set_R_pixel_units("nm")
bv.calibration.set_origin((qx0, qy0))
here = Path(__file__).parent
py4DSTEM.save(str(here / "py4dstem_braggvectors.h5"), bv, mode="o")
truth.update({"scan_shape": list(rshape), "g_ref_invA": g_ref.tolist(), "py4DSTEM": py4DSTEM.__version__})
(here / "py4dstem_braggvectors_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
print("wrote", here / "py4dstem_braggvectors.h5")
