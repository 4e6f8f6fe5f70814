"""Scoring against the physical truth: evaluate, tune (the settings sweep) and the strain benchmark."""
