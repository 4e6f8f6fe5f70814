"""`fourdcrystal evaluate`: the model against the ground truth and against the classical baseline.

On one split of a simulated dataset (default: test, crystals never seen in training), every
pattern is given to both methods, clean and at a series of electron doses (the same Poisson
draw for both). The truth is physical: the exact position of every reflection, from the
specimen's lattice, orientation, tilt and strain (:mod:`fourdcrystal.simulation.truth`, stored in
the shards), sorted by a stated visibility rule (:class:`~fourdcrystal.simulation.truth.VisibilityRule`)
into required, ignored (neither required nor penalised: near the strength threshold, HOLZ-fed,
off the scored region) and absent. Each method's peaks are matched one-to-one to the required and
ignored reflections within a radius (``match_radius_px``, at most half the spacing of the visible
reflections), and the report gives, per method, dose, thickness bin, beam energy and zone-axis index:

* precision, recall and F1 of the Bragg peaks (micro-averaged over patterns): a peak on a required
  reflection is found, on an ignored one it does not count, anywhere else it is false;
* position error of found peaks against the exact g, in pixels and Å⁻¹, its rms and radial bias
  by |g|;
* Pearson correlation of the intensities of found peaks with the kinematic |V_g| (zero beam left out);
* recall by the reflection's strength in the pattern, and what lies under the false peaks;
* q_z error at found peaks (model only), Å⁻¹, beside the error of predicting q_z = 0 there
  (the label's own mean |q_z|): a model whose q_z error is not below it has not learned q_z.

The V_g label score (peaks matched to the maxima of the label map, the target the network is
trained on) is a secondary table, ``vg_label``: how well the predicted intensities match.

Writes ``report.json``, ``metrics_vs_thickness.png`` and ``worst.png`` (the patterns where
the model does worst: input, label, prediction, baseline peaks).
"""

from __future__ import annotations

import functools
import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..atomic import write_text_atomic
from ..config import default
from ..errors import FourdError
from ..detection.peaks import PeakConfig, Peaks, find_peaks, match_peaks
from ..progress import bar
from ..simulation.truth import ABSENT, REQUIRED, VisibilityRule

log = logging.getLogger("fourdcrystal")

METHODS = ("model", "baseline")


THICKNESS_BINS_A = (200.0, 400.0)  # edges of the thickness bins of the report, Å
# Where the misses and the false peaks lie: recall per bin of the reflection's strength in the pattern (mean
# disk intensity over the zero beam's; zero beam left out), and what lies under each false peak.
STRENGTH_EDGES = (0.03, 0.1, 0.3)
FALSE_PEAK_KINDS = ("off the lattice", "on an absent reflection", "on a reflection another peak found")
G_EDGES_INVA = (0.5, 1.0, 1.5)  # |g| bins of the position error, Å⁻¹


def bin_names(edges: tuple[float, ...]) -> list[str]:
    """Names of the bins below, between and above ``edges``, in order (the report's keys)."""
    return ([f"< {edges[0]:g}"] + [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:])]
            + [f">= {edges[-1]:g}"])


@dataclass(frozen=True)
class EvalConfig:
    # defaults written once, in the config schema (fourdcrystal/config.py)
    split: Literal["test", "val", "train"] = default("evaluate", "split")
    doses_e: tuple = default("evaluate", "doses")  # electrons per pattern; None = the clean simulation
    match_radius_px: float = default("evaluate", "match_radius_px")
    # V_g falls off slowly with |g| (it is the potential, not the intensity): label peaks are the
    # reflections holding ≥ 5% of the zero beam's V_g
    label_peaks: PeakConfig = field(default_factory=lambda: PeakConfig(
        min_relative=default("evaluate", "label_min_relative"), max_peaks=400))
    model_min_relative: float | None = default("evaluate", "min_relative")  # None: the model card's tuned threshold
    margin_disk_radii: float = 1.0  # peaks closer than this many disk radii to the pattern's edge are not scored
    limit: int | None = default("evaluate", "limit")  # evaluate only the first N patterns of the split
    batch_size: int = default("evaluate", "batch_size")
    worst: int = 4  # patterns in the gallery
    seed: int = default("evaluate", "seed")
    tta: Literal["none", "flips", "d4"] = default("evaluate", "tta")  # test-time mirrors (model.inference.Predictor)
    precision: Literal["auto", "fp32", "bf16"] = default("evaluate", "precision")  # the network's arithmetic
    thick_from_A: float = default("evaluate", "thick_from_A")  # also report the patterns at least this thick (Å)
    visibility: VisibilityRule = field(default_factory=VisibilityRule)  # which reflections are required
    tilt: bool = True  # score the out-of-plane tilt (fourdcrystal.detection.tilt) against the shards' true tilt
    tilt_max_mrad: float = 8.0  # only patterns whose true tilt is within this are scored for tilt


@dataclass
class Tally:
    """Counts and matched-peak values accumulated over patterns."""

    true: int = 0
    pred: int = 0
    matched: int = 0
    err_px: list = field(default_factory=list)
    err_invA: list = field(default_factory=list)
    radial_px: list = field(default_factory=list)  # |q_pred| − |q_true| of matched peaks off the zero beam
    i_pred: list = field(default_factory=list)
    i_true: list = field(default_factory=list)
    qz_err: list = field(default_factory=list)
    qz_zero_err: list = field(default_factory=list)  # |q_z| of the label at the same peaks: the error of q_z = 0
    g_invA: list = field(default_factory=list)  # |g| of each matched peak's reflection (aligned with err_px)
    radial_g_invA: list = field(default_factory=list)  # |g| aligned with radial_px
    patterns: int = 0
    strength_true: np.ndarray = field(default_factory=lambda: np.zeros(len(STRENGTH_EDGES) + 1, int))
    strength_found: np.ndarray = field(default_factory=lambda: np.zeros(len(STRENGTH_EDGES) + 1, int))
    false_peaks: np.ndarray = field(default_factory=lambda: np.zeros(len(FALSE_PEAK_KINDS), int))

    def summary(self) -> dict:
        p, r, f1 = precision_recall_f1(self.matched, self.pred, self.true)
        corr = (float(np.corrcoef(self.i_pred, self.i_true)[0, 1])
                if len(self.i_pred) > 2 and np.std(self.i_pred) > 0 and np.std(self.i_true) > 0 else None)

        def mean(v):
            return float(np.mean(v)) if len(v) else None

        def rms(v):
            return float(np.sqrt(np.mean(np.square(v)))) if len(v) else None

        return {"patterns": self.patterns, "true_peaks": self.true, "predicted_peaks": self.pred,
                "matched": self.matched, "precision": p, "recall": r, "f1": f1,
                "position_error_px": mean(self.err_px), "position_error_invA": mean(self.err_invA),
                "position_rms_px": rms(self.err_px), "position_rms_invA": rms(self.err_invA),
                "radial_offset_px": mean(self.radial_px),
                "intensity_pearson_r": corr,
                "qz_mae_invA": mean(self.qz_err), "qz_mae_zero_invA": mean(self.qz_zero_err),
                "recall_by_strength": {
                    name: {"true_peaks": int(n), "recall": float(k / n) if n else None}
                    for name, n, k in zip(bin_names(STRENGTH_EDGES), self.strength_true, self.strength_found)},
                "false_peaks_by_kind": {name: int(n) for name, n in zip(FALSE_PEAK_KINDS, self.false_peaks)},
                "position_by_g_invA": self._by_g()}

    def _by_g(self) -> dict:
        """rms position error and mean radial offset (px) of matched peaks per |g| bin."""
        g, e = np.asarray(self.g_invA), np.asarray(self.err_px)
        rg, rad = np.asarray(self.radial_g_invA), np.asarray(self.radial_px)
        out = {}
        for k, name in enumerate(bin_names(G_EDGES_INVA)):
            sel, rsel = np.digitize(g, G_EDGES_INVA) == k, np.digitize(rg, G_EDGES_INVA) == k
            out[name] = {"matched": int(sel.sum()),
                         "position_rms_px": float(np.sqrt(np.mean(e[sel] ** 2))) if sel.any() else None,
                         "radial_offset_px": float(np.mean(rad[rsel])) if rsel.any() else None}
        return out


@dataclass
class ExactTruth:
    """The physical truth of one pattern on the scoring grid: every reflection, where it is, whether it counts."""

    px: np.ndarray  # (m, 2) exact positions, pixels of the (padded) grid
    status: np.ndarray  # (m,) REQUIRED, IGNORED or ABSENT (fourdcrystal.simulation.truth)
    g_invA: np.ndarray  # (m,) |g_xy|
    strength: np.ndarray  # (m,) in the pattern, fraction of the zero beam's
    vg_relative: np.ndarray  # (m,) kinematic |V_g| / |V_0|
    radius_px: float  # match radius of this pattern

    def required(self) -> Peaks:
        """The required reflections as peaks (for drawing)."""
        keep = self.status == REQUIRED
        return Peaks(self.px[keep], self.strength[keep])


def exact_truth(refl, dk_invA, shape: tuple[int, int], usable: np.ndarray, disk_radius_invA: float,
                match_radius_px: float, rule: VisibilityRule = VisibilityRule()) -> ExactTruth:
    """Place a pattern's reflections on its (padded) grid of ``shape`` and classify them by ``rule``.

    A reflection is on the scored region where ``usable`` is true at its nearest pixel. The match radius is
    ``match_radius_px``, or half the spacing of the visible reflections where that is smaller (at least 1 px).
    """
    dk = np.broadcast_to(np.asarray(dk_invA, float), (2,))
    h, w = shape
    px = refl.q_invA / dk + np.array([h // 2, w // 2])
    ij = np.rint(px).astype(int)
    on = np.all((ij >= 0) & (ij < [h, w]), axis=1)
    scored = np.zeros(len(px), bool)
    scored[on] = usable[ij[on, 0], ij[on, 1]]
    status = rule.classify(refl, scored, disk_radius_invA, float(dk.max()))
    radius = float(match_radius_px)
    visible = px[status != ABSENT]
    if len(visible) > 1:
        from scipy.spatial import cKDTree

        radius = min(radius, max(1.0, 0.5 * float(cKDTree(visible).query(visible, k=2)[0][:, 1].min())))
    return ExactTruth(px, status, np.linalg.norm(refl.q_invA, axis=1), np.nan_to_num(refl.strength),
                      refl.vg_V / max(refl.vg0_V, 1e-12), radius)


def match_exact(pred_px: np.ndarray, truth: ExactTruth) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matches of peaks to the required and ignored reflections within the pattern's radius, closest
    first: (matched peak indices, their reflections, whether each reflection is required)."""
    cand = np.nonzero(truth.status != ABSENT)[0]
    mp, mt = match_peaks(pred_px, truth.px[cand], truth.radius_px)
    mt = cand[mt]
    return mp, mt, truth.status[mt] == REQUIRED


def score(pred: Peaks, truth: ExactTruth, dk_invA, pred_values: np.ndarray | None, qz_pred: np.ndarray | None,
          qz_true: np.ndarray | None) -> dict:
    """Match ``pred`` to the required and ignored reflections of one pattern; the numbers a tally needs.

    A peak matched to a required reflection is found; one matched to an ignored reflection is left out of the
    counts; every other peak is false.
    """
    mp, mt, req = match_exact(pred.pos_px, truth)
    fp_, ft = mp[req], mt[req]
    d = pred.pos_px[fp_] - truth.px[ft]
    h_centre = truth.px[np.argmin(truth.g_invA)] if len(truth.px) else np.zeros(2)  # the zero beam's pixel
    g = truth.g_invA[ft]
    off_zero = g > 0
    values = pred.intensity if pred_values is None else pred_values
    out = {"true": int((truth.status == REQUIRED).sum()), "pred": len(pred) - int((~req).sum()),
           "matched": len(fp_), "err_px": np.linalg.norm(d, axis=1),
           "err_invA": np.linalg.norm(d * np.broadcast_to(np.asarray(dk_invA, float), (2,)), axis=1), "g_invA": g,
           "radial_px": (np.linalg.norm(pred.pos_px[fp_] - h_centre, axis=1)
                         - np.linalg.norm(truth.px[ft] - h_centre, axis=1))[off_zero],
           "radial_g_invA": g[off_zero], "i_true": truth.vg_relative[ft][off_zero], "i_pred": values[fp_][off_zero]}
    # the required reflections off the zero beam by strength, and whether each was found
    required = np.nonzero((truth.status == REQUIRED) & (truth.g_invA > 0))[0]
    found = np.zeros(len(truth.px), bool)
    found[ft] = True
    out["strength_bin"] = np.digitize(truth.strength[required], STRENGTH_EDGES)
    out["strength_found"] = found[required]
    # the false peaks: nothing of the lattice under them, an absent reflection, or a visible one already taken
    unmatched = np.setdiff1d(np.arange(len(pred)), mp)
    kinds = np.zeros(len(unmatched), int)
    if len(unmatched) and len(truth.px):
        from scipy.spatial import cKDTree

        dist, nearest = cKDTree(truth.px).query(pred.pos_px[unmatched])
        near = dist <= truth.radius_px
        kinds[near] = np.where(truth.status[nearest[near]] == ABSENT, 1, 2)
    out["false_bin"] = kinds
    if qz_pred is not None:
        h, w = qz_pred.shape
        pi = np.clip(np.rint(pred.pos_px[fp_]).astype(int), 0, [h - 1, w - 1])
        ti = np.clip(np.rint(truth.px[ft]).astype(int), 0, [h - 1, w - 1])
        out["qz_err"] = np.abs(qz_pred[pi[:, 0], pi[:, 1]] - qz_true[ti[:, 0], ti[:, 1]])[off_zero]
        out["qz_zero_err"] = np.abs(qz_true[ti[:, 0], ti[:, 1]])[off_zero]
    return out


def score_label(pred: Peaks, label: Peaks, true_vg: np.ndarray, radius_px: float, pred_values: np.ndarray | None
                ) -> dict:
    """The secondary score: ``pred`` matched to the maxima of the V_g label map; intensities against the label's V_g
    (zero beam left out)."""
    mp, mt = match_peaks(pred.pos_px, label.pos_px, radius_px)
    h, w = true_vg.shape
    centre = np.array([h // 2, w // 2])
    off = np.linalg.norm(label.pos_px[mt] - centre, axis=1) > radius_px
    ti = np.rint(label.pos_px[mt]).astype(int)
    values = pred.intensity if pred_values is None else pred_values
    return {"true": len(label), "pred": len(pred), "matched": len(mp),
            "err_px": np.linalg.norm(pred.pos_px[mp] - label.pos_px[mt], axis=1),
            "i_true": true_vg[ti[:, 0], ti[:, 1]][off], "i_pred": values[mp][off]}


def add_scores(t: Tally, s: dict) -> None:
    """Add one pattern's score (:func:`score`'s dict) to the tally ``t``, in place."""
    t.patterns += 1
    t.true += s["true"]
    t.pred += s["pred"]
    t.matched += s["matched"]
    for name in ("err_px", "err_invA", "radial_px", "i_true", "i_pred", "qz_err", "qz_zero_err", "g_invA",
                 "radial_g_invA"):
        getattr(t, name).extend(s.get(name, np.zeros(0)).tolist())
    if "strength_bin" in s:  # the label score has none
        np.add.at(t.strength_true, s["strength_bin"], 1)
        np.add.at(t.strength_found, s["strength_bin"][s["strength_found"]], 1)
        np.add.at(t.false_peaks, s["false_bin"], 1)


def dose_name(dose) -> str:
    """A dose as reports and tables name it: ``None`` → "clean", 1e5 (electrons per pattern) → "1e+05"."""
    return "clean" if dose is None else f"{dose:.0e}"


def dose_order(names) -> list[str]:
    """Dose names as tables show them: clean first, then the doses from the highest down (a report read back
    from its JSON has them sorted as text: 1e+04, 1e+05, clean).

    >>> dose_order(["1e+04", "1e+05", "clean", "1e+03"])
    ['clean', '1e+05', '1e+04', '1e+03']
    """
    return sorted(names, key=lambda d: (d != "clean", -float(d) if d != "clean" else 0.0))


def thickness_bin(thickness_A: float) -> str:
    """The report's thickness bin of a pattern: '<200 Å', '200-400 Å' or '>=400 Å' (thickness is in Å
    everywhere: options, configs, tables and plots)."""
    lo, hi = THICKNESS_BINS_A
    if thickness_A < lo:
        return f"<{lo:g} Å"
    return f"{lo:g}-{hi:g} Å" if thickness_A < hi else f">={hi:g} Å"


def thickness_bins() -> list[str]:
    """The report's thickness bins, thinnest first."""
    return [thickness_bin(t) for t in (0.0, *THICKNESS_BINS_A)]


def pad_to_multiple(images: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Zero-pad (…, H, W) so both sides are multiples of ``multiple`` with q = 0 staying at (H//2, W//2).

    Returns the padded stack and the offset (rows, columns) of the original pixel (0, 0).
    """
    h, w = images.shape[-2:]
    hp, wp = (int(np.ceil(n / multiple) * multiple) for n in (h, w))
    oi, oj = hp // 2 - h // 2, wp // 2 - w // 2
    if (hp, wp) == (h, w):
        return images, (0, 0)
    out = np.zeros((*images.shape[:-2], hp, wp), images.dtype)
    out[..., oi:oi + h, oj:oj + w] = images
    return out, (oi, oj)


@dataclass
class Sample:
    """One pattern of a split at one dose, on the model's (padded) grid, with the model's output."""

    n: int  # position in the split
    shard: str
    row: int
    thickness_A: float
    dk_invA: np.ndarray
    dose: float | None
    pattern: np.ndarray  # (H, W) the input, at this dose
    probe: np.ndarray
    vg_true: np.ndarray  # relative to the zero beam
    qz_true: np.ndarray
    truth: Peaks  # label peaks inside the usable region (the secondary, V_g label score)
    usable: np.ndarray  # (H, W) bool: where peaks are scored
    vg_pred: np.ndarray | None
    qz_pred: np.ndarray | None
    energy_eV: float = 0.0
    zone_axis_index: int = 0  # max(|u|, |v|, |w|) of the zone axis [uvw]
    exact: ExactTruth | None = None  # the physical truth: what the detection is scored on
    semiangle_mrad: float = 0.0
    tilt_mrad: np.ndarray | None = None  # the true crystal tilt (θx, θy), mrad (fourdcrystal.detection.tilt convention)


@dataclass
class _TiltTally:
    """Tilt errors of one method over patterns: the fitted and true tilts (mrad), the fits' standard errors."""

    est: list = field(default_factory=list)
    true: list = field(default_factory=list)
    sigma: list = field(default_factory=list)
    failed: int = 0

    def add(self, est, true, sigma=None) -> None:
        est = np.asarray(est, float)
        if not np.all(np.isfinite(est)):
            self.failed += 1
            return
        self.est.append(est)
        self.true.append(np.asarray(true, float))
        self.sigma.append(np.full(2, np.nan) if sigma is None else np.asarray(sigma, float))

    def summary(self) -> dict:
        n = len(self.est)
        out = {"patterns": n + self.failed, "fitted": n, "failed": self.failed, "rms_mrad": None,
               "zero_rms_mrad": None, "ratio_to_zero": None, "median_mrad": None, "within_1_sigma": None}
        if not n:
            return out
        est, true, sig = np.array(self.est), np.array(self.true), np.array(self.sigma)
        err = np.linalg.norm(est - true, axis=1)
        rms, zero = float(np.sqrt(np.mean(err ** 2))), float(np.sqrt(np.mean(np.sum(true ** 2, axis=1))))
        have = np.all(np.isfinite(sig), axis=1)
        out.update(rms_mrad=rms, zero_rms_mrad=zero, ratio_to_zero=rms / zero if zero > 0 else None,
                   median_mrad=float(np.median(err)),
                   within_1_sigma=float(np.mean(np.abs(est - true)[have] <= sig[have])) if have.any() else None)
        return out


TILT_METHODS = ("classical", "model_vectors", "model_qz", "model_combined", "model_learned")
TILT_DEFINITIONS = {
    "classical": "Laue-circle fit (fourdcrystal.detection.tilt.laue_tilt) to the Friedel pairs of the baseline's disks",
    "model_vectors": "the same fit to the Friedel pairs of the model's vectors",
    "model_qz": "the tilt fitted to the model's q_z at its vectors (lattice.fit_tilt)",
    "model_combined": "the inverse-variance mean of the model's q_z tilt (standard error TiltSettings.qz_sigma_mrad) "
                      "and the Laue fit on its vectors (its own standard error; tilt.combine_tilts)",
    "model_learned": "the learned tilt read (tilt.learned_tilt, the shipped data/tilt-read.json) of the Friedel pairs "
                     "of the model's vectors",
}


def split_samples(predictor, dataset: str | Path, locations: list, config: EvalConfig, pbar=None):
    """Every pattern of ``locations`` at every dose of ``config``, with the model's prediction (a generator;
    ``predictor`` None: without).

    Patterns are zero-padded to a multiple of the network's 2^depth (q = 0 kept centred); peaks
    are scored only in the usable region: on the pattern, at least ``margin_disk_radii`` disk
    radii from its edge (a disk cut by the edge is not a fair target for either method).
    """
    from ..prediction.calibration import usable_region
    from ..simulation import shards
    from ..simulation.optics import disk_radius_invA
    from ..detection.tilt import crystal_tilt_mrad
    from ..training.augment import shot_noise
    from ..training.data import zero_beam

    multiple = 2 ** predictor.model.config.depth if predictor is not None else 1
    by_shard: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for n, (name, row) in enumerate(locations):
        by_shard[name].append((n, row))
    masks: dict[tuple, np.ndarray] = {}
    for name, rows in by_shard.items():
        with shards.Shard(Path(dataset) / name) as sh:
            thick = sh.meta("thickness_nominal_A")
            dk_all = sh.meta("k_sampling_invA")
            energy, alpha = sh.meta("energy_eV"), sh.meta("semiangle_mrad")
            axis_index = np.abs(np.asarray(sh.meta("zone_axis"))).max(axis=1)
            tilt_true, tilt_mode = sh.meta("tilt_mrad"), sh.meta("tilt_mode")
            for start in range(0, len(rows), config.batch_size):
                chunk = rows[start:start + config.batch_size]
                imgs = [sh.images(r) for _, r in chunk]
                stack = {k: pad_to_multiple(np.stack([im[k] for im in imgs]).astype(np.float32), multiple)
                         for k in ("cbed", "probe", "vg", "qz")}
                (oi, oj), (h, w) = stack["cbed"][1], imgs[0]["cbed"].shape
                cbed, probes = stack["cbed"][0], stack["probe"][0]
                usable, truths, vg_true, exact = [], [], [], []
                for j, (_, r) in enumerate(chunk):
                    radius_invA = disk_radius_invA(float(alpha[r]), float(energy[r]))
                    margin = config.margin_disk_radii * radius_invA / float(np.max(dk_all[r]))
                    key = (round(margin, 2), h, w)
                    if key not in masks:
                        cov = np.zeros(cbed.shape[-2:])
                        cov[oi:oi + h, oj:oj + w] = 1.0
                        masks[key] = usable_region(cov, margin)
                    usable.append(masks[key])
                    v = stack["vg"][0][j]
                    vg_true.append(v / max(zero_beam(v), 1e-12))
                    truths.append(find_peaks(vg_true[-1], config.label_peaks, mask=usable[-1]))
                    exact.append(exact_truth(sh.reflections(r), dk_all[r], cbed.shape[-2:], usable[-1], radius_invA,
                                             config.match_radius_px, config.visibility))
                for dose in config.doses_e:
                    if dose is None:
                        x = cbed
                    else:  # the same noisy pattern for both methods, seeded per pattern and dose
                        x = np.stack([shot_noise(c, dose, np.random.default_rng([config.seed, n, int(dose)]))
                                      for c, (n, _) in zip(cbed, chunk)])
                    vg_pred, qz_pred = predictor(x, probes) if predictor is not None else ([None] * len(x),) * 2
                    for j, (n, r) in enumerate(chunk):
                        yield Sample(n, name, r, float(thick[r]), np.asarray(dk_all[r], float), dose, x[j], probes[j],
                                     vg_true[j], stack["qz"][0][j], truths[j], usable[j], vg_pred[j], qz_pred[j],
                                     float(energy[r]), int(axis_index[r]), exact[j], float(alpha[r]),
                                     crystal_tilt_mrad(tilt_true[r], tilt_mode[r]))
                    if pbar is not None:
                        pbar.update(len(chunk))


def tilt_fits(s: Sample, model_pk: Peaks, baseline_pk: Peaks, settings) -> dict:
    """{method: (tilt, standard error)} (mrad, fourdcrystal.detection.tilt convention) of one pattern: the classical fit to
    the baseline's disks, the same fit to the model's, the tilt of the model's q_z where it predicts one, and the
    learned tilt read at the model's vectors."""
    from ..simulation.optics import disk_radius_invA
    from ..detection.tilt import combine_tilts, laue_tilt, learned_tilt, qz_tilt

    centre = np.array([s.pattern.shape[0] // 2, s.pattern.shape[1] // 2], float)
    radius = disk_radius_invA(s.semiangle_mrad, s.energy_eV)
    out = {}
    for method, pk in (("classical", baseline_pk), ("model_vectors", model_pk)):
        fit = laue_tilt(s.pattern, centre, s.dk_invA, (pk.pos_px - centre) * s.dk_invA, s.energy_eV, radius, settings)
        out[method] = (fit.tilt_mrad, fit.sigma_mrad)
    if s.qz_pred is not None and len(model_pk):
        ij = np.clip(np.rint(model_pk.pos_px).astype(int), 0, np.array(s.qz_pred.shape) - 1)
        out["model_qz"] = (qz_tilt((model_pk.pos_px - centre) * s.dk_invA, s.qz_pred[ij[:, 0], ij[:, 1]],
                                   model_pk.intensity, settings.span_mrad), None)
        out["model_combined"] = combine_tilts([out["model_qz"][0], out["model_vectors"][0]],
                                              [np.full(2, settings.qz_sigma_mrad), out["model_vectors"][1]])
    fit = learned_tilt(s.pattern, centre, s.dk_invA, (model_pk.pos_px - centre) * s.dk_invA, s.energy_eV,
                       s.semiangle_mrad, radius, _tilt_reader(), settings)
    out["model_learned"] = (fit.tilt_mrad, fit.sigma_mrad)
    return out


@functools.lru_cache(maxsize=1)
def _tilt_reader():
    from ..model.card import read_tilt_reader

    return read_tilt_reader()


def tilt_report(tallies: dict, doses: list[str], bins: list[str], config: EvalConfig, settings) -> dict:
    """The report's ``tilt`` section: each method's tilt error by dose, and by dose and thickness bin, convergence
    semi-angle and zone-axis index, beside the error of answering zero."""
    from ..detection.tilt import TILT_CONVENTION

    methods = [m for m in TILT_METHODS if any(k[0] == m for k in tallies)]

    return {
        "convention": TILT_CONVENTION, "max_true_mrad": config.tilt_max_mrad, "settings": settings.as_dict(),
        "methods": {m: TILT_DEFINITIONS[m] for m in methods},
        "definitions": "patterns whose true tilt is within max_true_mrad; rms_mrad: rms of |fitted − true| over the "
                       "fitted patterns; zero_rms_mrad: that of answering (0, 0) on the same patterns; failed: fits "
                       "that gave NaN (counted, not scored); within_1_sigma: share of the components within their "
                       "standard error",
        "by_dose": {m: {d: tallies[(m, d, "all")].summary() for d in doses} for m in methods},
        "by_dose_and_thickness_bin": {m: {d: {b: tallies[(m, d, b)].summary() for b in bins if (m, d, b) in tallies}
                                          for d in doses} for m in methods},
        "by_dose_and_semiangle_mrad": _by_group(tallies, "mrad", doses, methods),
        "by_dose_and_zone_axis_index": _by_group(tallies, "axis", doses, methods),
    }


def _by_group(tallies: dict, group: str, doses: list[str], methods=METHODS) -> dict:
    """{method: {dose: {value: summary}}} of the tallies keyed (method, dose, (group, value)), values ascending."""
    values = sorted({k[2][1] for k in tallies if isinstance(k[2], tuple) and k[2][0] == group})
    return {m: {d: {f"{v:g}": tallies[(m, d, (group, v))].summary() for v in values if (m, d, (group, v)) in tallies}
                for d in doses} for m in methods}


def check_memory(config: EvalConfig, width: int, shape: tuple[int, int]) -> None:
    """Refuse, before the report exists, a batch whose forward pass would not fit in memory (the network's
    activations, :func:`fourdcrystal.memory.network_bytes`, and each pattern's maps: pattern, probe, V_g and q_z
    predicted and true, float64)."""
    from ..memory import check_fits, network_bytes

    full = shape[0] * shape[1]
    need = 1.25 * (network_bytes(config.batch_size, full, width) + config.batch_size * 6 * 8 * full)
    check_fits(need, f"evaluate with `batch_size` {config.batch_size} on {shape[0]}×{shape[1]} patterns",
               "lower `batch_size`")


def evaluate(model_path: str | Path, dataset: str | Path, out: str | Path, config: EvalConfig = EvalConfig(),
             device: str = "auto") -> dict:
    """Evaluate a model and the baseline on one split; write the report and figures; return the report.

    Both methods use the settings in the model card (``fourdcrystal tune``), or the defaults for
    a card without them; ``config.model_min_relative`` overrides the model's threshold.
    """
    from ..detection.detect import baseline_peaks, model_peaks, settings_from_card, tilt_settings_from_card, with_threshold
    from ..model.inference import Predictor
    from ..model.card import load_model, resolve_weights
    from ..training.data import open_dataset

    model_path = resolve_weights(model_path)
    model, card = load_model(model_path, inference=True)
    settings, tuned = settings_from_card(card)
    settings = with_threshold(settings, config.model_min_relative)
    index, where, info = open_dataset(dataset)
    check_memory(config, model.config.width, info.shape)
    if not tuned:
        log.warning("%s: its card has no tuned peak settings (fourdcrystal tune); both methods use the defaults",
                    model_path)
    locations = where[config.split]
    if not locations:
        raise FourdError(f"{dataset}: the {config.split} split is empty; nothing to evaluate")
    if config.limit is not None:
        locations = locations[:config.limit]
    require_truth(dataset, locations)
    predictor = Predictor(model, card, device, config.batch_size, tta=config.tta,
                          precision=config.precision)
    out = Path(out)
    from ..atomic import check_writable

    check_writable(out, "evaluation report")
    out.mkdir(parents=True, exist_ok=True)

    tallies: dict[tuple, Tally] = defaultdict(Tally)
    tilt_tallies: dict[tuple, _TiltTally] = defaultdict(_TiltTally)
    tilt_settings = tilt_settings_from_card(card)[0]
    per_pattern = []  # (model F1 at the first dose, position in locations) for the gallery
    with bar(total=len(locations) * len(config.doses_e), desc="evaluate", unit="pattern") as pbar:
        for s in split_samples(predictor, dataset, locations, config, pbar):
            mpk = model_peaks(s.vg_pred[None], s.pattern[None], s.probe, settings, s.usable)[0]
            bpk = baseline_peaks(s.pattern[None], s.probe, settings, s.usable)[0]
            s_model = score(mpk, s.exact, s.dk_invA, None, s.qz_pred, s.qz_true)
            zero = _zero_value(bpk, s.pattern.shape, config.match_radius_px)
            s_base = score(bpk, s.exact, s.dk_invA, bpk.intensity / zero, None, None)
            dose = dose_name(s.dose)
            for method, pk, values in (("model", mpk, None), ("baseline", bpk, bpk.intensity / zero)):
                sc = score_label(pk, s.truth, s.vg_true, config.match_radius_px, values)
                add_scores(tallies[("label:" + method, dose, "all")], sc)
                if s.thickness_A >= config.thick_from_A:
                    add_scores(tallies[("label:" + method, dose, "thick")], sc)
            for method, sc in (("model", s_model), ("baseline", s_base)):
                keys = [(method, dose, s.thickness_A), (method, dose, "all"), (method, "all", "all"),
                        (method, dose, thickness_bin(s.thickness_A)), (method, dose, ("kV", round(s.energy_eV / 1e3))),
                        (method, dose, ("axis", s.zone_axis_index)), (method, dose, ("mrad", s.semiangle_mrad))]
                if s.thickness_A >= config.thick_from_A:
                    keys.append((method, dose, "thick"))
                for key in keys:
                    add_scores(tallies[key], sc)
            if config.tilt and s.tilt_mrad is not None and np.hypot(*s.tilt_mrad) <= config.tilt_max_mrad:
                fits = tilt_fits(s, mpk, bpk, tilt_settings)
                for key in ("all", thickness_bin(s.thickness_A), ("mrad", s.semiangle_mrad),
                            ("axis", s.zone_axis_index)):
                    for method, (est, sigma) in fits.items():
                        tilt_tallies[(method, dose, key)].add(est, s.tilt_mrad, sigma)
            if s.dose == config.doses_e[0]:
                f1 = precision_recall_f1(s_model["matched"], s_model["pred"], s_model["true"])[2]
                per_pattern.append((f1, s.n, s.shard, s.row, s.pattern, s.vg_true, s.vg_pred, s.exact.required(), mpk,
                                    bpk, s.thickness_A, s.dk_invA))

    thick_values = sorted({k[2] for k in tallies if isinstance(k[2], float)})
    bins = [b for b in thickness_bins() if any(k[2] == b for k in tallies)]
    doses = [dose_name(d) for d in config.doses_e]
    report = {
        "schema": "fourdcrystal.evaluation/3",
        "model": str(model_path), "model_weights_sha256": card["weights_sha256"],
        "dataset": str(dataset), "dataset_index_sha256": info.index_sha256, "split": config.split,
        "patterns": len(locations), "config": {**asdict(config), "precision": predictor.precision},
        "settings": settings.as_dict(), "settings_tuned": tuned,
        "overall": {m: tallies[(m, "all", "all")].summary() for m in METHODS},
        "by_dose": {m: {d: tallies[(m, d, "all")].summary() for d in doses} for m in METHODS},
        "by_dose_and_thickness_A": {m: {d: {f"{t:g}": tallies[(m, d, t)].summary() for t in thick_values}
                                        for d in doses} for m in METHODS},
        "by_dose_and_thickness_bin": {m: {d: {b: tallies[(m, d, b)].summary() for b in bins} for d in doses}
                                      for m in METHODS},
        "by_dose_and_energy_kV": _by_group(tallies, "kV", doses),
        "by_dose_and_zone_axis_index": _by_group(tallies, "axis", doses),
        "by_dose_and_semiangle_mrad": _by_group(tallies, "mrad", doses),
        "thick_from_A": config.thick_from_A,
        "by_dose_thick": {m: {d: tallies[(m, d, "thick")].summary() for d in doses} for m in METHODS},
        "truth": "physical",
        "visibility": asdict(config.visibility),
        "definitions": "truth: the exact reflections of each pattern (lattice, orientation, tilt, strain); required: "
                       "zero-order, strength in the pattern (mean disk intensity / the zero beam's) >= "
                       "visibility.min_strength, on the scored region (margin_disk_radii disk radii inside the "
                       "pattern; both methods report peaks only there), not within a disk radius of an excited HOLZ "
                       "reflection; ignored (neither required nor penalised): strength >= weak_strength but not "
                       "required, and excited HOLZ reflections; absent: the rest. Peaks matched one-to-one to the "
                       "required and ignored reflections within match_radius_px (at most half the spacing of the "
                       "visible reflections), closest first; precision = found / (peaks − peaks on ignored "
                       "reflections), recall = found / required, micro-averaged; position error against the exact g, "
                       "mean and rms over found peaks, and by |g| (position_by_g_invA); radial offset = mean "
                       "(|q_pred| − |q_true|) off the zero beam (> 0: outward); intensity r over found peaks off the "
                       "zero beam against the kinematic |V_g| / |V_0| (model: predicted relative V_g; baseline: "
                       "correlation relative to the zero beam's); recall_by_strength: recall of the required "
                       "reflections off the zero beam by their strength; false_peaks_by_kind: what lies under each "
                       "false peak. vg_label: the secondary score against the maxima of the V_g label map (≥ "
                       "label_peaks.min_relative of the zero beam): how well intensities match the label",
        "tilt": tilt_report(tilt_tallies, doses, bins, config, tilt_settings) if config.tilt else None,
        "vg_label": {"by_dose": {m: {d: tallies[("label:" + m, d, "all")].summary() for d in doses} for m in METHODS},
                     "by_dose_thick": {m: {d: tallies[("label:" + m, d, "thick")].summary() for d in doses}
                                       for m in METHODS}},
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=1, sort_keys=True) + "\n")
    from ..plots import evaluation_gallery, metrics_vs_thickness

    metrics_vs_thickness(report, out / "metrics_vs_thickness.png")
    worst = sorted(per_pattern, key=lambda p: (p[0], p[1]))[:config.worst]
    if worst:
        from ..simulation import shards as shard_io

        names = []
        for w in worst:  # formula and zone axis for the titles
            with shard_io.Shard(Path(dataset) / w[2]) as sh:
                za = " ".join(str(int(v)) for v in sh.meta("zone_axis")[w[3]])
                names.append(f"{sh.meta('formula')[w[3]]} [{za}]")
        from ..plots import model_label

        evaluation_gallery(worst, dose_name(config.doses_e[0]), out / "worst.png", names,
                           title=f"{model_label(report['model'])}: its {len(worst)} worst {config.split} patterns")
    return report


def require_truth(dataset: str | Path, locations: list) -> None:
    """One line naming the first shard of ``locations`` without the physical truth, before any work."""
    from ..simulation import shards

    for name in sorted({name for name, _ in locations}):
        with shards.Shard(Path(dataset) / name) as sh:
            if not sh.has_truth:
                raise FourdError(f"{Path(dataset) / name}: no physical truth (a dataset simulated before shards held "
                                 f"it); add it without simulating again: fourdcrystal truth {dataset}")


def precision_recall_f1(matched: int, pred: int, true: int) -> tuple[float, float, float]:
    """Precision (matched / predicted), recall (matched / true) and F1 from peak counts; 0 where undefined."""
    p = matched / pred if pred else 0.0
    r = matched / true if true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _zero_value(peaks: Peaks, shape, radius_px: float) -> float:
    """The baseline's correlation at the zero beam (its intensity scale), or its strongest peak."""
    if len(peaks) == 0:
        return 1.0
    centre = np.array([shape[0] // 2, shape[1] // 2])
    near = np.linalg.norm(peaks.pos_px - centre, axis=1) <= radius_px
    v = peaks.intensity[near].max() if near.any() else peaks.intensity.max()
    return float(v) if v > 0 else 1.0


def format_table(report: dict) -> str:
    """Model against baseline per dose; per thickness bin, beam energy and zone-axis index: F1, precision, recall, rms position error (px, Å⁻¹),
    mean radial offset, intensity r, q_z error beside that of q_z = 0."""
    lines = [f"{'dose (e/pattern)':>16s} {'method':>9s} {'F1':>6s} {'prec':>6s} {'recall':>6s} {'rms px':>7s} "
             f"{'rms Å⁻¹':>8s} {'radial':>7s} {'I r':>6s} {'qz MAE Å⁻¹':>11s} {'(q_z=0)':>8s}"]

    def f(v, fmt):
        return format(v, fmt) if v is not None else "-".rjust(int(fmt.split(".")[0]))

    sections = [("all thicknesses", report["by_dose"])]
    by_bin = report.get("by_dose_and_thickness_bin", {}).get("model", {})
    present = next(iter(by_bin.values()), {}) if by_bin else {}
    for b in (b for b in thickness_bins() if b in present):  # thinnest first, whatever order the JSON kept
        sections.append((f"thickness {b}", {m: {d: report["by_dose_and_thickness_bin"][m][d][b] for d in by_bin}
                                            for m in METHODS}))
    thick = report.get("by_dose_thick")
    if thick and any(s["patterns"] for s in thick["model"].values()):
        sections.append((f"thickness ≥ {report['thick_from_A']:g} Å", thick))
    for key, name, unit in (("by_dose_and_energy_kV", "beam energy", " kV"),
                            ("by_dose_and_zone_axis_index", "zone axis index max|uvw| =", ""),
                            ("by_dose_and_semiangle_mrad", "convergence semi-angle", " mrad")):
        groups = report.get(key, {}).get("model", {})
        for v in next(iter(groups.values()), {}) if groups else {}:
            sections.append((f"{name} {v}{unit}", {m: {d: report[key][m][d][v] for d in groups} for m in METHODS}))
    for title, table in sections:
        lines.append(f"{title}:")
        for dose in dose_order(table["model"]):
            for m in METHODS:
                s = table[m][dose]
                lines.append(f"{dose:>16s} {m:>9s} {f(s['f1'], '6.3f')} {f(s['precision'], '6.3f')} "
                             f"{f(s['recall'], '6.3f')} {f(s.get('position_rms_px'), '7.3f')} "
                             f"{f(s.get('position_rms_invA'), '8.4f')} {f(s.get('radial_offset_px'), '+7.3f')} "
                             f"{f(s['intensity_pearson_r'], '6.3f')} "
                             f"{f(s['qz_mae_invA'], '11.4f')} {f(s.get('qz_mae_zero_invA'), '8.4f')}")
    by_dose = report["by_dose"]
    first = next(iter(by_dose["model"].values()), {})
    if "recall_by_strength" in first:  # reports scored against the label maps lack it
        names = bin_names(STRENGTH_EDGES)
        lines.append("recall by the reflection's strength in the pattern (fraction of the zero beam's), all "
                     "thicknesses:")
        lines.append(f"{'dose (e/pattern)':>16s} {'method':>9s} " + " ".join(f"{n:>9s}" for n in names))
        for dose in dose_order(by_dose["model"]):
            for m in METHODS:
                r = by_dose[m][dose]["recall_by_strength"]
                lines.append(f"{dose:>16s} {m:>9s} " + " ".join(f(r[n]["recall"], "9.3f") for n in names))
    if "position_by_g_invA" in first:
        names = bin_names(G_EDGES_INVA)
        lines.append("position error against the exact g by |g| (Å⁻¹): rms / radial offset, px, all thicknesses:")
        lines.append(f"{'dose (e/pattern)':>16s} {'method':>9s} " + " ".join(f"{n:>15s}" for n in names))
        for dose in dose_order(by_dose["model"]):
            for m in METHODS:
                r = by_dose[m][dose]["position_by_g_invA"]
                lines.append(f"{dose:>16s} {m:>9s} " + " ".join(
                    f"{f(r[n]['position_rms_px'], '6.3f')} / {f(r[n]['radial_offset_px'], '+6.3f')}" for n in names))
    tilt = report.get("tilt")
    if tilt and tilt.get("by_dose"):
        lines.append(f"out-of-plane tilt against the truth (patterns tilted ≤ {tilt['max_true_mrad']:g} mrad): rms "
                     "error, mrad / the rms of answering zero; failed fits:")
        methods = [m for m in TILT_METHODS if m in tilt["by_dose"]]
        lines.append(f"{'':>20s} {'e/pattern':>12s} " + " ".join(f"{m:>21s}" for m in methods))
        groups = [("all thicknesses", tilt["by_dose"])]
        first = tilt["by_dose_and_thickness_bin"][methods[0]]
        present = next(iter(first.values()), {})
        groups += [(f"thickness {b}", {m: {d: tilt["by_dose_and_thickness_bin"][m][d].get(b) for d in first}
                                       for m in methods}) for b in thickness_bins() if b in present]
        for title, table in groups:
            for dose in dose_order(table[methods[0]]):
                cells = []
                for m in methods:
                    r = table[m].get(dose)
                    cells.append("-".rjust(21) if not r or r["rms_mrad"] is None else
                                 f"{r['rms_mrad']:6.2f} / {r['zero_rms_mrad']:5.2f} ({r['failed']:3d})".rjust(21))
                lines.append(f"{title:>20s} {dose:>12s} " + " ".join(cells))
    label = report.get("vg_label")
    if label:
        lines.append("secondary: against the maxima of the V_g label map (F1, intensity r), all thicknesses:")
        for dose in dose_order(label["by_dose"]["model"]):
            for m in METHODS:
                r = label["by_dose"][m][dose]
                lines.append(f"{dose:>16s} {m:>9s} {f(r['f1'], '6.3f')} {f(r['intensity_pearson_r'], '6.3f')}")
    return "\n".join(lines)
