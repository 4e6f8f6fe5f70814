"""A trained model applied to stacks of patterns: batched, on the GPU if present, labels in physical units."""

from __future__ import annotations

import numpy as np
import torch

from .fcunet import FCUNet, enable_mc_dropout


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Predictor:
    """``predictor(cbed, probe)`` → (vg relative to the zero beam, qz in Å⁻¹), numpy (n, H, W) each.

    ``cbed`` is (n, H, W) with H and W multiples of 2^depth (the network is convolutional: the
    card's training shape is not required); ``probe`` is (H, W) (shared) or (n, H, W). Runs in batches of
    ``batch_size`` without gradients. ``mc_samples`` > 1 averages that many Monte-Carlo dropout
    passes (the spread is available from :meth:`with_spread`).
    """

    def __init__(self, model: FCUNet, card: dict, device: str | torch.device = "auto", batch_size: int = 16):
        self.device = pick_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.card = card
        self.qz_scale_invA = float(card["labels"]["qz_scale_invA"])
        self.shape = tuple(card["input"]["shape"])
        self.batch_size = batch_size

    def __call__(self, cbed: np.ndarray, probe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cbed = np.asarray(cbed, dtype=np.float32)
        probe = np.asarray(probe, dtype=np.float32)
        m = 2 ** self.model.config.depth  # convolutional: any size the U-Net's pooling divides
        if cbed.shape[-2] % m or cbed.shape[-1] % m:
            raise ValueError(f"patterns are {cbed.shape[-2]}×{cbed.shape[-1]}; the model takes sides that are "
                             f"multiples of {m}")
        vg = np.empty(cbed.shape, np.float32)
        qz = np.empty(cbed.shape, np.float32)
        with torch.no_grad():
            for s in range(0, len(cbed), self.batch_size):
                c = torch.from_numpy(_writable(cbed[s:s + self.batch_size]))[:, None].to(self.device)
                p = probe[s:s + self.batch_size] if probe.ndim == 3 else np.broadcast_to(probe, (len(c), *probe.shape))
                p = torch.from_numpy(_writable(p))[:, None].to(self.device)
                out = self.model(c, p)
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
