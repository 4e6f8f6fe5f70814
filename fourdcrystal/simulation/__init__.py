"""`fourdcrystal simulate`: multislice CBED with labels (in progress: optics helpers so far)."""
