"""FCU-Net: an FFT cross-correlation U-Net that maps a CBED pattern and its vacuum probe to V_g and q_z.

The design follows the reference (crystal4D, used by py4DSTEM's ML disk detection):

1. Cross-correlation in Fourier space: X = FFT(cbed) · conj(FFT(probe)), divided by its largest
   modulus per sample, so the network never sees the overall intensity (dose) of a pattern.
2. A complex-valued U-Net on X (complex convolution as a pair of real convolutions; batch norm,
   ReLU and dropout on the real and imaginary parts), so the encoder works on the
   Patterson-like correlation where disks of every size become compact peaks.
3. An inverse FFT back to the pattern's reciprocal-space grid, a real convolution block on
   (Re, Im), and a linear 1×1 output per head: ``vg`` and ``qz``.

Heads: one decoder with two outputs (``decoders=1``) or one decoder per head (``decoders=2``).
Dropout stays usable at inference as Monte-Carlo dropout (:func:`enable_mc_dropout`).
Inputs are (B, 1, H, W) float tensors with H and W powers of two ≥ 2^depth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

Pair = tuple[torch.Tensor, torch.Tensor]  # (real, imaginary) parts, each (B, C, H, W)


@dataclass(frozen=True)
class FCUNetConfig:
    width: int = 16  # complex channels at the first level
    depth: int = 4  # number of down-samplings
    dropout: float = 0.1
    decoders: int = 1  # 1: shared decoder, two outputs; 2: one decoder per head
    real_width: int = 16  # channels of the real-space block after the inverse FFT

    def as_dict(self) -> dict:
        return asdict(self)


def cross_correlation(cbed: torch.Tensor, probe: torch.Tensor, eps: float = 1e-12) -> Pair:
    """FFT(cbed)·conj(FFT(probe)) divided by its largest modulus per sample: (Re, Im)."""
    x = torch.fft.fft2(cbed.float()) * torch.conj(torch.fft.fft2(probe.float()))
    scale = x.abs().amax(dim=(-3, -2, -1), keepdim=True).clamp_min(eps)
    x = x / scale
    return x.real.contiguous(), x.imag.contiguous()


class ComplexConv2d(nn.Module):
    """(A + iB) ⊛ (W_r + iW_i) = (A⊛W_r − B⊛W_i) + i(A⊛W_i + B⊛W_r), with two real convolutions."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, bias: bool = True):
        super().__init__()
        self.re = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.im = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bias_re = nn.Parameter(torch.zeros(cout)) if bias else None
        self.bias_im = nn.Parameter(torch.zeros(cout)) if bias else None

    def forward(self, x: Pair) -> Pair:
        a, b = x
        re = self.re(a) - self.im(b)
        im = self.im(a) + self.re(b)
        if self.bias_re is not None:
            re = re + self.bias_re[:, None, None]
            im = im + self.bias_im[:, None, None]
        return re, im


class _PairNormActDrop(nn.Module):
    """Batch norm, ReLU and dropout applied to the real and imaginary parts separately."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.bn_re, self.bn_im = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Pair) -> Pair:
        return self.drop(F.relu(self.bn_re(x[0]))), self.drop(F.relu(self.bn_im(x[1])))


class ComplexBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float):
        super().__init__()
        self.conv1, self.act1 = ComplexConv2d(cin, cout), _PairNormActDrop(cout, dropout)
        self.conv2, self.act2 = ComplexConv2d(cout, cout), _PairNormActDrop(cout, 0.0)

    def forward(self, x: Pair) -> Pair:
        return self.act2(self.conv2(self.act1(self.conv1(x))))


def _pool(x: Pair) -> Pair:  # average pooling is linear, so it acts on complex values part by part
    return F.avg_pool2d(x[0], 2), F.avg_pool2d(x[1], 2)


def _up(x: Pair) -> Pair:
    return (F.interpolate(x[0], scale_factor=2, mode="bilinear", align_corners=False),
            F.interpolate(x[1], scale_factor=2, mode="bilinear", align_corners=False))


def _cat(a: Pair, b: Pair) -> Pair:
    return torch.cat([a[0], b[0]], 1), torch.cat([a[1], b[1]], 1)


class _Decoder(nn.Module):
    def __init__(self, widths: list[int], dropout: float, outputs: int, real_width: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            ComplexBlock(widths[i + 1] + widths[i], widths[i], dropout) for i in reversed(range(len(widths) - 1)))
        self.to_complex = ComplexConv2d(widths[0], outputs, kernel=1)
        self.real = nn.Sequential(
            nn.Conv2d(2 * outputs, real_width, 3, padding=1), nn.BatchNorm2d(real_width), nn.ReLU(),
            nn.Conv2d(real_width, real_width, 3, padding=1), nn.BatchNorm2d(real_width), nn.ReLU())
        self.out = nn.Conv2d(real_width, outputs, 1)  # linear output

    def forward(self, x: Pair, skips: list[Pair]) -> torch.Tensor:
        for block, skip in zip(self.blocks, reversed(skips)):
            x = block(_cat(_up(x), skip))
        re, im = self.to_complex(x)
        # float32 for the FFT: under mixed precision the convolutions give half-precision parts
        z = torch.fft.ifft2(torch.complex(re.float(), im.float()))  # back to the pattern's reciprocal-space grid
        return self.out(self.real(torch.cat([z.real, z.imag], 1)))


class FCUNet(nn.Module):
    """cbed, probe (B, 1, H, W) → {"vg": (B, 1, H, W), "qz": (B, 1, H, W)}."""

    def __init__(self, config: FCUNetConfig = FCUNetConfig()):
        super().__init__()
        if config.decoders not in (1, 2):
            raise ValueError(f"decoders must be 1 or 2, got {config.decoders}")
        self.config = config
        widths = [config.width * 2**i for i in range(config.depth + 1)]
        self.encoder = nn.ModuleList(
            ComplexBlock(1 if i == 0 else widths[i - 1], widths[i], config.dropout) for i in range(len(widths)))
        n_out = 2 if config.decoders == 1 else 1
        self.decoders = nn.ModuleList(_Decoder(widths, config.dropout, n_out, config.real_width)
                                      for _ in range(config.decoders))

    def forward(self, cbed: torch.Tensor, probe: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = cbed.shape[-2:]
        if h % 2**self.config.depth or w % 2**self.config.depth:
            raise ValueError(f"pattern size {h}×{w} is not divisible by 2^depth = {2**self.config.depth}")
        x = cross_correlation(cbed, probe)
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else _pool(x))
            skips.append(x)
        skips.pop()  # the deepest level feeds the decoder directly
        if self.config.decoders == 1:
            y = self.decoders[0](x, skips)
            return {"vg": y[:, :1], "qz": y[:, 1:]}
        return {"vg": self.decoders[0](x, skips), "qz": self.decoders[1](x, skips)}


def enable_mc_dropout(model: nn.Module) -> nn.Module:
    """Evaluation mode except dropout, for Monte-Carlo dropout uncertainty at inference."""
    model.eval()
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout2d)):
            m.train()
    return model


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
