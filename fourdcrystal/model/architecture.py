"""The FCU-Net's architecture settings and their defaults, without torch (the config schema and the command line
read them at start-up; :mod:`fourdcrystal.model.fcunet` builds the network from them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal


@dataclass(frozen=True)
class FCUNetConfig:
    """The network's shape: the ``train: model:`` keys of a config, and the ``architecture`` of a model card."""

    width: int = 16  # channels at the first level, doubled per level (complex for "spectral")
    depth: int = 4  # number of down-samplings; H and W must be divisible by 2^depth
    dropout: float = 0.1  # after the first conv of each block (also Monte-Carlo dropout at inference)
    decoders: int = 1  # 1: shared decoder, two outputs; 2: one per head
    real_width: int = 16  # "spectral": channels of the real-space block after the inverse FFT
    # "pattern": real U-Net on the probe cross-correlation map and the pattern; "spectral": crystal4D's complex
    # U-Net on the Fourier-space cross-correlation
    domain: Literal["pattern", "spectral"] = "pattern"
    coords: bool = False  # "pattern": + 2 input channels, each pixel's offset from q = 0 (px / 64)

    def as_dict(self) -> dict:
        return asdict(self)
