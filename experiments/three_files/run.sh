#!/bin/bash
# The README's commands on the three files make_files.py writes, with the calibration the README says to give.
#   bash experiments/three_files/run.sh OUT      (OUT: make_files.py's folder; fourdcrystal on the PATH)
set -euo pipefail
cd "$1"
# a Merlin .mib carries no calibration: the camera length (mm) and pixel pitch (µm), the energy and semi-angle
L=52.95   # mm: k = p / (L λ) = 55 µm / (52.95 mm × 0.025079 Å) = 0.04142 Å⁻¹, the demo's pixel size
fourdcrystal predict demo.mib --camera-length $L --detector-pixel 55 --energy 200e3 --semiangle 2 --out mib-bragg.h5
# fpd's file has the scan's shape but no diffraction calibration either
fourdcrystal predict demo_fpd.hdf5 --camera-length $L --detector-pixel 55 --energy 200e3 --semiangle 2 --out fpd-bragg.h5
# py4DSTEM's file carries its Q pixel size; the beam's energy and semi-angle it does not hold
fourdcrystal predict demo_py4dstem.h5 --energy 200e3 --semiangle 2 --out emd-bragg.h5
for f in mib fpd emd; do
  fourdcrystal strain $f-bragg.h5 --reference 0:4,0:4 --out $f-strain.h5
  fourdcrystal export $f-bragg.h5 --out $f-braggvectors.h5
done
