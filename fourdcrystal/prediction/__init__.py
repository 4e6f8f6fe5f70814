"""The predict stage: preparation (calibration, probe, masks, zero beam), chunks (local, dask) and the stage itself (offline and --follow)."""
