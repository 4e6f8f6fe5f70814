"""A trained model applied to stacks of patterns: batched, on the GPU if present, labels in physical units."""

from __future__ import annotations

import copy
import re
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .fcunet import FCUNet, enable_mc_dropout

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device, cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether ``device`` does bfloat16 arithmetic in hardware: a CUDA GPU that supports it, or a CPU with
    AVX-512 BF16 or AMX (read from ``cpuinfo``'s flags). Elsewhere bfloat16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


BF16_MIN_WIDTH = 16  # auto takes bf16 for networks at least this wide (first-level channels)


def resolve_precision(precision: str, device: torch.device, width: int | None = None) -> str:
    """``auto`` → ``bf16`` where :func:`native_bf16` and the network is at least :data:`BF16_MIN_WIDTH` channels
    wide (``width``; None: any), else ``fp32``; ``fp32`` and ``bf16`` as given.

    On the test split bf16 gave the shipped model's (width 16) F1 and position errors to ±0.001 at every dose
    (docs/reference.md, predict) at 1.6× the end-to-end speed on the 2-core development machine. A narrower
    network loses more to the casts than it gains: the quickstart's width-8 smoke model evaluated in 28 s in bf16
    against 19 s in fp32. The rule depends on the network, not on a timing, so a run's numbers do not."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        wide = width is None or width >= BF16_MIN_WIDTH
        return "bf16" if wide and native_bf16(device) else "fp32"
    return precision


def pick_device(device: str = "auto", what: str = "device") -> torch.device:
    """``auto`` (CUDA if present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a device that is not there is
    one line (:class:`~fourdcrystal.errors.FourdError`) naming ``what`` (e.g. the option), not torch's error."""
    from ..config import DEVICE_PATTERN
    from ..errors import FourdError

    m = re.fullmatch(DEVICE_PATTERN, str(device))
    if m is None:
        raise FourdError(f"{what} {device}: expected auto, cpu, cuda or cuda:N")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(m.group(1) or 0) >= n:
            raise FourdError(f"{what} {device}: this machine has {n or 'no'} CUDA device{'s' if n != 1 else ''}"
                             + (f" (cuda:0 … cuda:{n - 1})" if n else "; use cpu or auto"))
    return torch.device(device)


# the mirrors of each mode, as steps of :func:`mirror`: "T" swaps the two axes, −2 / −1 mirror one axis
_TTA_STEPS: dict[str, list[tuple]] = {
    "none": [()],
    "flips": [(), (-2,), (-1,), (-2, -1)],
    "d4": [(), (-2,), (-1,), (-2, -1), ("T",), ("T", -2), ("T", -1), ("T", -2, -1)],
}
TTA = tuple(_TTA_STEPS)


def inference_copy(model: FCUNet, device: torch.device) -> FCUNet:
    """An evaluation-mode copy of ``model`` for inference: each batch norm folded into the convolution before it
    (a pattern-domain network's real blocks; the spectral network's complex blocks are left as they are), in
    channels-last memory on the CPU. The answers equal the model's to float rounding (about 1e-6 of the
    largest V_g); on the 2-core development machine it is 1.45× the model's speed (channels-last: oneDNN's
    convolutions run on NHWC without reordering each layer's input; the folded layers save a pass over each
    activation). The caller's model is not changed (a trainer may still be using it)."""
    model = copy.deepcopy(model).to(device).eval()
    for mod in model.modules():
        if isinstance(mod, nn.Sequential):
            for i in range(len(mod) - 1):
                if isinstance(mod[i], nn.Conv2d) and isinstance(mod[i + 1], nn.BatchNorm2d):
                    mod[i], mod[i + 1] = fuse_conv_bn_eval(mod[i], mod[i + 1]), nn.Identity()
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


def mirror(a: np.ndarray, steps: tuple) -> np.ndarray:
    """Mirror (…, H, W) patterns about the zero beam at pixel (H//2, W//2), not the array's centre.

    Each step is −2 or −1 (i → H − i mod H along that axis) or "T" (axes swapped, square patterns). A mirrored
    pattern is the pattern of the mirrored crystal, so a network's answer to it, mirrored back, is a second
    estimate of the same map.

    >>> a = np.arange(16.0).reshape(4, 4)
    >>> float(mirror(a, (-2,))[2, 1]), float(a[2, 1])  # the zero beam's row stays in place
    (9.0, 9.0)
    >>> bool(np.array_equal(unmirror(mirror(a, ("T", -1)), ("T", -1)), a))
    True
    """
    for step in steps:
        a = np.swapaxes(a, -1, -2) if step == "T" else np.roll(np.flip(a, axis=step), 1, axis=step)
    return a


def unmirror(a: np.ndarray, steps: tuple) -> np.ndarray:
    """The inverse of :func:`mirror` (each step is its own inverse; undone in reverse order)."""
    return mirror(a, tuple(reversed(steps)))


class Predictor:
    """``predictor(cbed, probe)`` → (vg relative to the zero beam, qz in Å⁻¹), numpy (n, H, W) each.

    ``cbed`` is (n, H, W) with H and W multiples of 2^depth (the network is convolutional: the
    card's training shape is not required); ``probe`` is (H, W) (shared) or (n, H, W). Runs in batches of
    ``batch_size`` without gradients. ``mc_samples`` > 1 averages that many Monte-Carlo dropout
    passes (the spread is available from :meth:`with_spread`).

    ``precision``: ``fp32``, ``bf16`` (the convolutions in bfloat16 under autocast, the FFTs in float32; on a CPU
    with AVX-512 BF16 about twice the network's speed) or ``auto`` (:func:`resolve_precision`: bf16 where the
    hardware does it natively); :attr:`precision` is the one used. The model is copied for inference
    (:func:`inference_copy`).

    ``compile``: run the copy through ``torch.compile`` (TorchInductor; the first batch of each shape waits for
    the compilation, about 35 s for the shipped network on 2 CPU cores, where it then ran 5 % faster; meant for
    GPUs, where compiled graphs save more).

    ``tta``: test-time mirrors. ``flips`` averages the answers to the pattern and its three mirrors about the
    zero beam (each mirrored back), ``d4`` adds the four with the axes swapped (square patterns): 4× and 8× the
    network time, for fewer false and better-placed peaks under noise (docs/model.md, "Test-time mirrors").
    """

    def __init__(self, model: FCUNet, card: dict, device: str | torch.device = "auto", batch_size: int = 16,
                 tta: str = "none", precision: Precision = "fp32", compile: bool = False):
        if tta not in TTA:
            raise ValueError(f"tta must be one of {TTA}, got {tta!r}")
        self.device = pick_device(device) if isinstance(device, str) else device
        self.precision = resolve_precision(precision, self.device, model.config.width)
        self.model = inference_copy(model, self.device)
        self._run_model = torch.compile(self.model) if compile else self.model
        self.card = card
        self.qz_scale_invA = float(card["labels"]["qz_scale_invA"])
        self.shape = tuple(card["input"]["shape"])
        self.batch_size = batch_size
        self.tta = tta

    def __call__(self, cbed: np.ndarray, probe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cbed = np.asarray(cbed, dtype=np.float32)
        probe = np.asarray(probe, dtype=np.float32)
        steps = _TTA_STEPS[self.tta]
        if len(steps) == 1:
            return self._run(cbed, probe)
        if "T" in sum(steps, ()) and cbed.shape[-1] != cbed.shape[-2]:
            raise ValueError(f"tta {self.tta!r} swaps the axes: it needs square patterns, not "
                             f"{cbed.shape[-2]}×{cbed.shape[-1]}")
        vg = np.zeros(cbed.shape, np.float32)
        qz = np.zeros(cbed.shape, np.float32)
        for st in steps:
            v, q = self._run(np.ascontiguousarray(mirror(cbed, st)), np.ascontiguousarray(mirror(probe, st)))
            vg += unmirror(v, st)
            qz += unmirror(q, st)
        return vg / len(steps), qz / len(steps)

    def _run(self, cbed: np.ndarray, probe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = 2 ** self.model.config.depth  # convolutional: any size the U-Net's pooling divides
        if cbed.shape[-2] % m or cbed.shape[-1] % m:
            raise ValueError(f"patterns are {cbed.shape[-2]}×{cbed.shape[-1]}; the model takes sides that are "
                             f"multiples of {m}")
        vg = np.empty(cbed.shape, np.float32)
        qz = np.empty(cbed.shape, np.float32)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        with torch.inference_mode(), autocast:
            for s in range(0, len(cbed), self.batch_size):
                c = torch.from_numpy(_writable(cbed[s:s + self.batch_size]))[:, None].to(self.device)
                p = probe[s:s + self.batch_size] if probe.ndim == 3 else np.broadcast_to(probe, (len(c), *probe.shape))
                p = torch.from_numpy(_writable(p))[:, None].to(self.device)
                out = self._run_model(c, p)
                vg[s:s + len(c)] = out["vg"][:, 0].float().cpu().numpy()
                qz[s:s + len(c)] = out["qz"][:, 0].float().cpu().numpy() * self.qz_scale_invA
        return vg, qz

    def with_spread(self, cbed: np.ndarray, probe: np.ndarray, mc_samples: int = 8) -> dict[str, np.ndarray]:
        """Monte-Carlo dropout: mean and standard deviation of ``mc_samples`` stochastic passes."""
        enable_mc_dropout(self.model)
        try:
            runs = [self(cbed, probe) for _ in range(mc_samples)]
        finally:
            self.model.eval()
        vg = np.stack([r[0] for r in runs])
        qz = np.stack([r[1] for r in runs])
        return {"vg": vg.mean(0), "vg_std": vg.std(0), "qz": qz.mean(0), "qz_std": qz.std(0)}


def _writable(a: np.ndarray) -> np.ndarray:
    """A contiguous array torch may wrap: a read-only view (a broadcast probe, a memory map) is copied,
    which torch would otherwise warn about."""
    a = np.ascontiguousarray(a)
    return a if a.flags.writeable else a.copy()
