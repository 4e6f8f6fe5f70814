"""Finding Bragg disks: peaks (maxima, sub-pixel), the classical baseline, the model's peaks and settings (detect), the crystal tilt from disks."""
