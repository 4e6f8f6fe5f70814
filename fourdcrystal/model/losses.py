"""The multi-task loss of FCU-Net: V_g and q_z.

* ``vg``: squared error of the relative Bragg potentials (pixel-wise), optionally with pixel
  weights 1 + peak_weight·max(V_g, 0) (zero beam at weight 1). ``nmse`` (default) divides the
  summed error by the summed squared label, Σ w(p − t)² / Σ w t²: 1 for an all-zero prediction
  whatever the pattern size. About 1 % of the pixels hold a reflection, so the plain ``mse`` is
  tiny (≈ 2e-4 for the zero beam alone on the release data set) next to the q_z term, which is
  O(1); with the plain MSE the task weights, learned slowly at the network's learning rate,
  spent the whole of a short run on q_z. The NMSE of the zero beam alone is ≈ 0.8 there, so
  anything below that has learned reflections. ``asinh`` is the NMSE of asinh(V_g/c) (c =
  ``vg_asinh_scale``, a fraction of the zero beam): linear below c, logarithmic above, so a
  reflection at 5 % of the zero beam weighs about a third of the zero beam instead of 1/400.
  The evaluation's label peaks start at 5 % of the zero beam, and most of them lie between 5
  and 15 % (``fourdcrystal evaluate``'s recall by label strength), where the NMSE hardly looks.
* ``qz``: squared error weighted by the true V_g: q_z is only defined where there is a
  reflection, so background pixels (V_g ≈ 0) do not count. The zero beam is left out (its q_z
  is 0 by construction, and it would outweigh every Bragg reflection).
* Combination: fixed weights, or learned uncertainty weighting (Kendall, Gal & Cipolla 2018):
  L = Σ_t exp(−s_t)·L_t + s_t with one learned log-variance s_t per task, so neither task
  needs a hand-tuned weight.
"""

from __future__ import annotations

import torch
from torch import nn


VG_LOSSES = ("nmse", "mse", "asinh")


def vg_mse(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    return torch.mean((pred.float() - true.float()) ** 2)


def _set_zero_beam(w: torch.Tensor, value: float, zero_px: torch.Tensor | None) -> None:
    """Set the zero beam's pixel of each (B, 1, H, W) sample to ``value``: pixel (H//2, W//2), or per sample
    ``zero_px`` (B, 2) for random crops (a row of −1 where the crop does not hold the zero beam)."""
    if zero_px is None:
        h, wd = w.shape[-2:]
        w[..., h // 2, wd // 2] = value
        return
    inside = (zero_px[:, 0] >= 0).nonzero().flatten()
    w[inside, ..., zero_px[inside, 0], zero_px[inside, 1]] = value


def vg_asinh_nmse(pred: torch.Tensor, true: torch.Tensor, scale: float, peak_weight: float = 0.0,
                  zero_px: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`vg_nmse` of asinh(V_g/scale), pixel weights from the untransformed label: the error of weak
    reflections counts nearly as much as that of strong ones (asinh is smooth through 0, so negative
    predictions keep a gradient, unlike a square root)."""
    return _nmse(torch.asinh(pred.float() / scale), torch.asinh(true.float() / scale),
                 vg_pixel_weights(true, peak_weight, zero_px))


def vg_pixel_weights(true: torch.Tensor, peak_weight: float, zero_px: torch.Tensor | None = None) -> torch.Tensor:
    """w = 1 + peak_weight·max(true, 0) per pixel, the zero beam (pixel (H//2, W//2), or ``zero_px``) at w = 1."""
    w = 1.0 + peak_weight * true.float().clamp_min(0.0)
    _set_zero_beam(w, 1.0, zero_px)
    return w


def vg_peak_weighted_mse(pred: torch.Tensor, true: torch.Tensor, peak_weight: float,
                         zero_px: torch.Tensor | None = None) -> torch.Tensor:
    """Σ w·(pred − true)² / Σ w with the weights of :func:`vg_pixel_weights`."""
    if peak_weight == 0:
        return vg_mse(pred, true)
    w = vg_pixel_weights(true, peak_weight, zero_px)
    return (w * (pred.float() - true.float()) ** 2).sum() / w.sum()


def vg_nmse(pred: torch.Tensor, true: torch.Tensor, peak_weight: float = 0.0,
            zero_px: torch.Tensor | None = None) -> torch.Tensor:
    """Σ w·(pred − true)² / Σ w·true² with the weights of :func:`vg_pixel_weights`."""
    t = true.float()
    return _nmse(pred.float(), t, vg_pixel_weights(t, peak_weight, zero_px))


def _nmse(p: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (w * (p - t) ** 2).sum() / (w * t**2).sum().clamp_min(1e-12)


def qz_weighted_mse(pred: torch.Tensor, true: torch.Tensor, vg_true: torch.Tensor,
                    zero_px: torch.Tensor | None = None, min_vg: float = 0.0) -> torch.Tensor:
    """Σ w·(pred − true)² / Σ w with w = max(vg_true, 0), zero beam (pixel (H//2, W//2), or ``zero_px``)
    excluded; with ``min_vg`` > 0 only pixels whose (relative) V_g reaches it count: q_z means something on
    the reflections, while the diffuse background between them, weak but wide, would otherwise hold most of
    the weight."""
    w = vg_true.float().clamp_min(0.0).clone()
    if min_vg > 0:
        w = torch.where(w >= min_vg, w, torch.zeros_like(w))
    _set_zero_beam(w, 0.0, zero_px)
    return (w * (pred.float() - true.float()) ** 2).sum() / w.sum().clamp_min(1e-12)


class MultiTaskLoss(nn.Module):
    """``weighting``: "fixed" (weights ``vg_weight``, ``qz_weight``) or "uncertainty" (learned)."""

    def __init__(self, weighting: str = "uncertainty", vg_weight: float = 1.0, qz_weight: float = 1.0,
                 vg_peak_weight: float = 0.0, vg_loss: str = "nmse", qz_min_vg: float = 0.0,
                 vg_asinh_scale: float = 0.02):
        super().__init__()
        self.vg_asinh_scale = float(vg_asinh_scale)
        self.qz_min_vg = float(qz_min_vg)
        self.vg_peak_weight = float(vg_peak_weight)
        if weighting not in ("fixed", "uncertainty"):
            raise ValueError(f"weighting must be fixed or uncertainty, got {weighting!r}")
        if vg_loss not in VG_LOSSES:
            raise ValueError(f"vg_loss must be one of {', '.join(VG_LOSSES)}, got {vg_loss!r}")
        self.vg_loss = vg_loss
        self.weighting = weighting
        self.register_buffer("weights", torch.tensor([vg_weight, qz_weight], dtype=torch.float32))
        self.log_var = nn.Parameter(torch.zeros(2)) if weighting == "uncertainty" else None

    def forward(self, pred: dict[str, torch.Tensor], true: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        zero_px = true.get("zero_px")  # random crops: where the zero beam is in each sample, if anywhere
        if self.vg_loss == "nmse":
            vg = vg_nmse(pred["vg"], true["vg"], self.vg_peak_weight, zero_px)
        elif self.vg_loss == "asinh":
            vg = vg_asinh_nmse(pred["vg"], true["vg"], self.vg_asinh_scale, self.vg_peak_weight, zero_px)
        else:
            vg = vg_peak_weighted_mse(pred["vg"], true["vg"], self.vg_peak_weight, zero_px)
        parts = torch.stack([vg, qz_weighted_mse(pred["qz"], true["qz"], true["vg"], zero_px, self.qz_min_vg)])
        if self.log_var is None:
            total = (self.weights * parts).sum()
        else:
            total = (self.weights * (torch.exp(-self.log_var) * parts + self.log_var)).sum()
        with torch.no_grad():  # both vg errors unweighted, for the training log
            logged = {"vg_mse": vg_mse(pred["vg"], true["vg"]), "vg_nmse": vg_nmse(pred["vg"], true["vg"])}
        return total, {**logged, "qz_wmse": parts[1].detach()}
