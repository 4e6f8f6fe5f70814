"""FCU-Net: an FFT cross-correlation U-Net that maps a CBED pattern and its vacuum probe to V_g and q_z.

Both variants start from the cross-correlation of the pattern with its vacuum probe, computed in
Fourier space: X = FFT(cbed) · conj(FFT(probe)), the probe moved so that q = 0 is at pixel
(0, 0) (disk peaks then land on the label grid), divided by its largest modulus per sample, so
the network never sees the overall intensity (dose) of a pattern.

``domain="pattern"`` (default): X is brought back to the pattern's reciprocal-space grid, where
every Bragg disk becomes a compact correlation peak at its centre. A real U-Net (batch norm,
ReLU, dropout; max pooling; bilinear up-sampling with skips) reads that correlation map beside
the pattern itself (√ of the pattern over its maximum, to tame the zero disk) and writes a
linear 1×1 output per head: ``vg`` and ``qz``. Finding a disk and turning its dynamical
intensity into a kinematic potential are local operations there, so a small network learns
them quickly.

``domain="spectral"`` (crystal4D's design, used by py4DSTEM's ML disk detection): a
complex-valued U-Net works on X itself (complex convolution as a pair of real convolutions;
batch norm, ReLU and dropout on the real and imaginary parts), then an inverse FFT, a real
convolution block on (Re, Im) of ``real_width`` channels and the 1×1 outputs. A convolution in
Fourier space is a multiplication across the whole pattern, so this variant learns slowly: fitted
to 15 release patterns for 600 steps (``scripts/memorise.py``) it stayed at F1 0.04–0.13, where
the pattern variant reached 0.49.

Heads: one decoder with two outputs (``decoders=1``) or one decoder per head (``decoders=2``).
Dropout stays usable at inference as Monte-Carlo dropout (:func:`enable_mc_dropout`).
Inputs are (B, 1, H, W) float tensors with H and W powers of two ≥ 2^depth.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .architecture import FCUNetConfig

Pair = tuple[torch.Tensor, torch.Tensor]  # (real, imaginary) parts, each (B, C, H, W)


def cross_correlation(cbed: torch.Tensor, probe: torch.Tensor, eps: float = 1e-12) -> Pair:
    """FFT(cbed)·conj(FFT(probe moved to pixel (0, 0))) divided by its largest modulus per sample: (Re, Im).

    The vacuum probe is recorded centred on q = 0 at pixel (H//2, W//2); it is rolled so that q = 0
    sits at pixel (0, 0) before the FFT. The inverse FFT of X then has a disk's correlation peak at
    the disk's own pixel, on the grid of the V_g label. Without the roll every output would be
    displaced by half the image, a shift no convolution in Fourier space can undo (it is a
    multiplication by (−1)^(i+j) there).
    """
    kernel = torch.fft.ifftshift(probe.float(), dim=(-2, -1))
    x = torch.fft.fft2(cbed.float()) * torch.conj(torch.fft.fft2(kernel))
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


class RealBlock(nn.Sequential):
    """(3×3 conv, batch norm, ReLU) twice; dropout after the first."""

    def __init__(self, cin: int, cout: int, dropout: float):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class _RealDecoder(nn.Module):
    def __init__(self, widths: list[int], dropout: float, outputs: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            RealBlock(widths[i + 1] + widths[i], widths[i], dropout) for i in reversed(range(len(widths) - 1)))
        self.out = nn.Conv2d(widths[0], outputs, 1)  # linear output

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for block, skip in zip(self.blocks, reversed(skips)):
            x = block(torch.cat([F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False), skip], 1))
        return self.out(x)


def pattern_inputs(cbed: torch.Tensor, probe: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(B, 2, H, W): the probe cross-correlation on the pattern grid and √(pattern / its maximum), each ≤ 1.

    Both are divided by a per-sample maximum, so the network never sees the dose.
    """
    re, im = cross_correlation(cbed, probe, eps)
    corr = torch.fft.ifft2(torch.complex(re, im)).real
    corr = corr / corr.amax(dim=(-2, -1), keepdim=True).clamp_min(eps)
    c = cbed.float().clamp_min(0.0)
    c = torch.sqrt(c / c.amax(dim=(-2, -1), keepdim=True).clamp_min(eps))
    return torch.cat([corr, c], 1)


def init_weights(model: nn.Module) -> None:
    """Starting weights by an explicit rule, so they do not depend on the torch version's defaults.

    Convolutions: weights uniform in ±gain·√(3 / fan_in) with the leaky-ReLU gain for a = √5 (He-uniform; this
    is ±1/√fan_in), biases uniform in ±1/√fan_in; batch norm: scale 1, shift 0, fresh running statistics. That
    is the rule torch 2.x applies when it builds the layers, written out with the same arithmetic and drawn in
    the same order (the modules' registration order), so a model built with this rule equals one built
    with torch 2.13's defaults bit for bit (``tests/test_fcunet.py``).
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight.shape[1] * m.weight[0, 0].numel()
                gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))  # written as torch writes it: same float bound
                bound = math.sqrt(3.0) * (gain / math.sqrt(fan_in))
                m.weight.uniform_(-bound, bound)
                if m.bias is not None:
                    m.bias.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, ComplexConv2d) and m.bias_re is not None:
                nn.init.zeros_(m.bias_re)
                nn.init.zeros_(m.bias_im)


COORD_SCALE_PX = 64.0  # coordinate channels are pixel offsets / this: the same q gives the same value on any grid


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W): each pixel's offset from q = 0 at (H//2, W//2) along axes 0 and 1, in pixels / 64."""
    b, _, h, w = x.shape
    i = (torch.arange(h, device=x.device, dtype=x.dtype) - h // 2) / COORD_SCALE_PX
    j = (torch.arange(w, device=x.device, dtype=x.dtype) - w // 2) / COORD_SCALE_PX
    return torch.stack(torch.meshgrid(i, j, indexing="ij"))[None].expand(b, 2, h, w)


class FCUNet(nn.Module):
    """cbed, probe (B, 1, H, W) → {"vg": (B, 1, H, W), "qz": (B, 1, H, W)}."""

    def __init__(self, config: FCUNetConfig = FCUNetConfig()):
        super().__init__()
        if config.decoders not in (1, 2):
            raise ValueError(f"decoders must be 1 or 2, got {config.decoders}")
        if config.domain not in ("pattern", "spectral"):
            raise ValueError(f"domain must be pattern or spectral, got {config.domain!r}")
        if config.coords and config.domain != "pattern":
            raise ValueError("coords needs the pattern domain")
        self.config = config
        # the layers draw torch's default weights as they are built; rewind the generator and draw them again by
        # init_weights' explicit rule, so the weights and the random stream after them are the rule's alone
        rng_state = torch.random.get_rng_state()
        widths = [config.width * 2**i for i in range(config.depth + 1)]
        n_out = 2 if config.decoders == 1 else 1
        if config.domain == "pattern":
            n_in = 4 if config.coords else 2
            self.encoder = nn.ModuleList(
                RealBlock(n_in if i == 0 else widths[i - 1], widths[i], config.dropout) for i in range(len(widths)))
            self.decoders = nn.ModuleList(_RealDecoder(widths, config.dropout, n_out) for _ in range(config.decoders))
        else:
            self.encoder = nn.ModuleList(
                ComplexBlock(1 if i == 0 else widths[i - 1], widths[i], config.dropout) for i in range(len(widths)))
            self.decoders = nn.ModuleList(_Decoder(widths, config.dropout, n_out, config.real_width)
                                          for _ in range(config.decoders))
        torch.random.set_rng_state(rng_state)
        init_weights(self)

    def forward(self, cbed: torch.Tensor, probe: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = cbed.shape[-2:]
        if h % 2**self.config.depth or w % 2**self.config.depth:
            raise ValueError(f"pattern size {h}×{w} is not divisible by 2^depth = {2**self.config.depth}")
        if self.config.domain == "pattern":
            x, pool = pattern_inputs(cbed, probe), (lambda t: F.max_pool2d(t, 2))
            if self.config.coords:
                x = torch.cat([x, coordinate_channels(x)], 1)
        else:
            x, pool = cross_correlation(cbed, probe), _pool
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else pool(x))
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
