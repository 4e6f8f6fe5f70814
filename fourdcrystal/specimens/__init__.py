"""Specimens: orientation, tilt, strain and supercells (specimen, pure) and the supercell stage (planning, manifest)."""
