"""Write tests/data/py4dstem_datacube.h5 with py4DSTEM itself (run in the py4DSTEM 0.14 environment).

    .py4dstem-venv/bin/python tests/data/make_py4dstem_fixture.py

A 2×3 scan of 32×32 Poisson-noisy patterns (a zero-beam disk and four Bragg disks), saved by
py4DSTEM.save as a DataCube with py4DSTEM's calibration bundle: Q and R pixel sizes and units,
QR_flip and a QR rotation. The file is committed; the tests read it with fourdcrystal.
"""

from pathlib import Path

import numpy as np
import py4DSTEM

rng = np.random.default_rng(7)
ii, jj = np.mgrid[:32, :32]
clean = np.zeros((32, 32))
for (ci, cj), weight in (((16.2, 15.7), 1.0), ((9.1, 12.3), 0.4), ((23.3, 19.1), 0.4), ((12.4, 24.0), 0.3),
                         ((20.0, 7.4), 0.3)):
    clean += weight * ((ii - ci) ** 2 + (jj - cj) ** 2 <= 2.5**2)
clean += 0.01
data = np.stack([rng.poisson(clean * 400 * (1 + 0.1 * k)) for k in range(6)]).reshape(2, 3, 32, 32).astype(np.uint16)
dc = py4DSTEM.DataCube(data=data, name="datacube")
dc.calibration.set_Q_pixel_size(0.08)
dc.calibration.set_Q_pixel_units("A^-1")
dc.calibration.set_R_pixel_size(1.5)
dc.calibration.set_R_pixel_units("nm")
dc.calibration.set_QR_flip(False)
dc.calibration.set_QR_rotation_degrees(2.5)
out = Path(__file__).with_name("py4dstem_datacube.h5")
py4DSTEM.save(str(out), dc, mode="o")
print(f"wrote {out} with py4DSTEM {py4DSTEM.__version__}")
