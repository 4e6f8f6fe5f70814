"""fourdcrystal: crystal structures -> simulated CBED -> FCU-Net -> Bragg vectors from 4D-STEM data."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fourdcrystal")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
