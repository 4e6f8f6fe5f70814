"""The strain stage: strain, rotation and tilt maps from Bragg vectors (around fourdcrystal.lattice)."""
