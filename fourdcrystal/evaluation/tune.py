"""`fourdcrystal tune`: choose both methods' peak settings on the validation split; store them in the card.

A comparison is only fair when the classical detector gets the same care as the model. On the
validation split (crystals used neither for training nor for the test), at each dose of the
config (the same Poisson draws for both methods), a grid search picks:

* for the **model**: the V_g threshold ``min_relative``, what it is a fraction of (``threshold_of``:
  the strongest maximum, or the zero beam's V_g, the network's own unit) and the spacing
  ``min_spacing_px`` that maximise the F1 averaged over the doses (over the doses ≥ 3·10⁴ e⁻ where lower
  ones are listed too, which get a threshold of their own, ``low_dose_min_relative``: the noisier a pattern,
  the fewer reflections stand out of it); then the position refinement (``vg``: a
  parabola through the V_g maximum, or ``correlation``: the probe correlation of the measured
  pattern near it) with the lower rms position error, averaged over the doses;
* for the **baseline**: the correlation power, the Gaussian smoothing, ``min_relative`` and
  ``min_spacing_px`` that maximise the same mean F1; then its sub-pixel mode (parabola or DFT
  up-sampling) with the lower rms error.

Every score is against the physical truth (the exact reflections, sorted by evaluate's visibility
rule), as ``evaluate`` scores. With a strain benchmark (``strain_benchmark``, ``tune --strain-benchmark``)
the objective includes strain: among the model thresholds within ``strain_f1_margin`` of the best mean
F1, the one whose vectors give the lowest strain error on the benchmark's tuning series is kept where
it lowers that error by at least ``strain_min_gain`` (5 %)
(:func:`fourdcrystal.evaluation.strain_benchmark.threshold_strain_errors`), the low-dose one on its low-dose files.

Thresholds only remove peaks, and the circular spacing suppression keeps the stronger peak,
so the peaks at a threshold t are those at the lowest threshold of the grid whose value is
≥ t × the strongest: each (map, spacing) is searched once and every threshold is a filter.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from ..detection.baseline import BaselineConfig, correlations
from ..config import default
from ..detection.detect import (
    DetectionSettings,
    ModelPeakSettings,
    baseline_peaks,
    model_peaks,
    relative_threshold,
)
from ..errors import FourdError
from .evaluate import EvalConfig, ExactTruth, dose_name, precision_recall_f1, match_exact, require_truth, split_samples
from ..detection.peaks import (
    PeakConfig,
    maxima_above,
    parabolic_offsets,
    suppress_close,
)
from ..progress import bar
from ..simulation.truth import ABSENT, REQUIRED

log = logging.getLogger("fourdcrystal")
MAX_PEAKS = ModelPeakSettings().max_peaks  # the same cap for both methods
LOW_DOSE_E = 3e4  # e⁻ per pattern: doses under this get the model a threshold of their own (between 10⁴ and 10⁵)


@dataclass(frozen=True)
class TuneConfig:
    split: Literal["val", "train", "test"] = default("tune", "split")
    doses_e: tuple = default("tune", "doses")  # electrons per pattern; None = clean
    match_radius_px: float = default("tune", "match_radius_px")
    label_min_relative: float = default("evaluate", "label_min_relative")  # label peaks: ≥ this × the zero beam's
    limit: int | None = default("tune", "limit")  # only the first N patterns of the split
    batch_size: int = 16
    seed: int = 0
    # up to 0.5: a network trained on a truth target of height 1 (presence) reads its peaks near 0.3-0.5
    model_min_relative: tuple = (0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35,
                                 0.4, 0.45, 0.5)
    model_spacing_px: tuple = (2.0, 3.0, 4.0)
    # the model's threshold as a fraction of its strongest maximum, or of the zero beam's V_g (its output unit)
    model_threshold_of: tuple = ("strongest", "zero_beam")
    # baseline templates: the probe, or minus a gaussian (width in probe rms radii) or a sigmoid disk (radii in
    # disk radii), the kernels of py4DSTEM's Probe.get_kernel
    kernels: tuple = (("flat", None), ("gaussian", 2.0), ("gaussian", 4.0), ("sigmoid", (1.0, 2.0)),
                      ("sigmoid", (1.0, 4.0)))
    corr_power: tuple = (0.5, 0.75, 1.0)
    sigma_px: tuple = (0.0, 1.0, 2.0)
    baseline_min_relative: tuple = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.07, 0.1)
    baseline_spacing_px: tuple = (2.0, 3.0, 4.0)
    # a strain benchmark folder (fourdcrystal strain-benchmark): among the model thresholds within
    # strain_f1_margin of the best mean F1, the one whose vectors fit the tuning series' strain best
    strain_benchmark: str | None = None
    strain_f1_margin: float = 0.01
    # and only where its strain error is at least this much (relative) below the F1-best threshold's: detection is
    # not traded for a strain gain within the noise of a few series
    strain_min_gain: float = 0.05
    # the classical tilt's rocking-curve widths tried (Å⁻¹); empty: the tilt is not tuned
    tilt_sigma_invA: tuple = (2.5e-4, 5e-4, 1e-3, 2e-3)

    def eval_config(self) -> EvalConfig:
        base = EvalConfig()
        return replace(base, split=self.split, doses_e=tuple(self.doses_e), match_radius_px=self.match_radius_px,
                       label_peaks=replace(base.label_peaks, min_relative=self.label_min_relative),
                       limit=self.limit, batch_size=self.batch_size, seed=self.seed)


class _Grid:
    """Matched / predicted / label counts per (setting, dose), and matched position errors."""

    def __init__(self):
        self.counts = defaultdict(lambda: np.zeros(3, np.int64))
        self.errors = defaultdict(list)

    def add(self, key, dose: str, pred_px: np.ndarray, truth: ExactTruth, errors: bool = False):
        """Count one pattern's peaks against its physical truth (as :func:`~fourdcrystal.evaluation.evaluate.score` does)."""
        found, counted, mp, mt = _match_exact(pred_px, truth)
        self.counts[(key, dose)] += (found, counted, int((truth.status == REQUIRED).sum()))
        if errors:
            self.errors[(key, dose)].extend(np.linalg.norm(pred_px[mp] - truth.px[mt], axis=1).tolist())

    def f1(self, key, doses) -> float:
        """F1 averaged over the doses (each micro-averaged over patterns)."""
        return float(np.mean([precision_recall_f1(*self.counts[(key, d)])[2] for d in doses]))

    def rms(self, key, doses) -> float:
        return float(np.mean([np.sqrt(np.mean(np.square(self.errors[(key, d)]))) if self.errors[(key, d)]
                              else np.inf for d in doses]))

    def row(self, key, dose) -> dict:
        p, r, f1 = precision_recall_f1(*self.counts[(key, dose)])
        e = self.errors.get((key, dose))
        return {"f1": f1, "precision": p, "recall": r,
                "position_rms_px": float(np.sqrt(np.mean(np.square(e)))) if e else None}


def _match_exact(pred_px: np.ndarray, truth: ExactTruth) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(found, counted peaks, matched peak indices, their required reflections): peaks on ignored reflections are
    not counted, as in :func:`~fourdcrystal.evaluation.evaluate.score`."""
    mp, mt, req = match_exact(pred_px, truth)
    return int(req.sum()), len(pred_px) - int((~req).sum()), mp[req], mt[req]


def _threshold_sweep(grid: _Grid, key_of, image, mask, spacings, thresholds, truth: ExactTruth, dose, edge_px=2,
                     max_peaks=None, threshold_of: str = "strongest"):
    """Every (spacing, threshold) of the grid on one map, from one search for maxima.

    The maxima at the lowest threshold are found once; each spacing suppresses close ones among
    them; each threshold is then a prefix of what is left (strongest first). Only candidates
    within the match radius of a required or ignored reflection can match, so the matching runs on those alone.
    ``threshold_of``: what the thresholds are fractions of, as in
    :class:`~fourdcrystal.detection.detect.ModelPeakSettings` (``"zero_beam"``: the map's own unit).
    """
    from scipy.spatial import cKDTree

    max_peaks = max_peaks or MAX_PEAKS
    relative = [relative_threshold(image, mask, t, threshold_of) for t in thresholds]
    ij, top = maxima_above(image, min(relative), edge_px, mask)
    pos = ij + parabolic_offsets(image, ij)
    value = image[ij[:, 0], ij[:, 1]] if len(ij) else np.zeros(0)
    near_any = np.zeros(len(ij), bool)
    visible = truth.px[truth.status != ABSENT]
    if len(ij) and len(visible):
        near_any = np.isfinite(cKDTree(visible).query(pos, distance_upper_bound=truth.radius_px)[0])
    n_required = int((truth.status == REQUIRED).sum())
    for spacing in spacings:
        kept = np.nonzero(suppress_close(ij, spacing))[0][:max_peaks]
        for t, rel in zip(thresholds, relative):
            sel = kept[value[kept] >= rel * top]
            near = sel[near_any[sel]]
            found, counted, _, _ = _match_exact(pos[near], truth)
            grid.counts[(key_of(t, spacing), dose)] += (found, len(sel) - (len(near) - counted), n_required)


def _kernel(spec: tuple) -> dict:
    """("gaussian", 2.0) → BaselineConfig keywords."""
    kind, value = spec
    if kind == "gaussian":
        return {"kernel": kind, "kernel_width": float(value)}
    if kind == "sigmoid":
        return {"kernel": kind, "kernel_radii": tuple(float(v) for v in value)}
    return {"kernel": kind}


def tune(model_path: str | Path, dataset: str | Path, config: TuneConfig = TuneConfig(), device: str = "auto") -> dict:
    """Grid-search both methods' settings on a split; return the card section (``settings``, what was measured)."""
    from ..model.inference import Predictor
    from ..model.card import load_model, resolve_weights
    from ..training.data import open_dataset

    model_path = resolve_weights(model_path)
    model, card = load_model(model_path, inference=True)
    index, where, info = open_dataset(dataset)
    locations = where[config.split]
    if not locations:
        raise FourdError(f"{dataset}: the {config.split} split is empty; nothing to tune on")
    ec = config.eval_config()
    if ec.limit is not None:
        locations = locations[:ec.limit]
    require_truth(dataset, locations)
    predictor = Predictor(model, card, device, ec.batch_size)
    doses = [dose_name(d) for d in ec.doses_e]
    radius = ec.match_radius_px

    samples = []
    with bar(total=len(locations) * len(doses), desc="tune: model", unit="pattern") as pbar:
        for s in split_samples(predictor, dataset, locations, ec, pbar):
            samples.append(s)
    mgrid = _Grid()
    for ref in config.model_threshold_of:
        for s in samples:
            _threshold_sweep(mgrid, lambda t, sp, ref=ref: (ref, t, sp), s.vg_pred, s.usable, config.model_spacing_px,
                             config.model_min_relative, s.exact, dose_name(s.dose), threshold_of=ref)
    # ties go to the first: the strongest-maximum reference, the lower threshold, the smaller spacing. With low
    # doses and higher ones among the doses, the threshold is chosen on the higher ones and a second one for the
    # low doses (model_peaks tells them apart by the counts of each pattern)
    low = [dose_name(d) for d in ec.doses_e if d is not None and d < LOW_DOSE_E]
    high = [d for d in doses if d not in low] or doses
    m_key = max(((ref, t, sp) for ref in config.model_threshold_of for sp in config.model_spacing_px
                 for t in config.model_min_relative), key=lambda k: mgrid.f1(k, high))
    low_t = None
    if low and high != doses:
        low_t = max(config.model_min_relative, key=lambda t: mgrid.f1((m_key[0], t, m_key[2]), low))
    strain_objective = None
    if config.strain_benchmark:
        m_key, low_t, strain_objective = _strain_objective(model_path, config, mgrid, m_key, low_t, high, low)
    low_kw = {"low_dose_e": LOW_DOSE_E, "low_dose_min_relative": low_t} if low_t is not None else {}

    bgrid = _Grid()
    combos = [BaselineConfig(corr_power=cp, sigma_px=sg, **_kernel(k)) for k in config.kernels
              for cp in config.corr_power for sg in config.sigma_px]
    with bar(total=len(samples) * len(combos), desc="tune: baseline", unit="map") as pbar:
        for s in samples:
            for c, cfg in enumerate(combos):
                corr, g = next(correlations(s.pattern[None], s.probe, cfg))
                _threshold_sweep(bgrid, lambda t, sp: (c, t, sp), corr, s.usable, config.baseline_spacing_px,
                                 config.baseline_min_relative, s.exact, dose_name(s.dose))
                pbar.update(1)
    b_key = max(((c, t, sp) for c in range(len(combos)) for t in config.baseline_min_relative
                 for sp in config.baseline_spacing_px), key=lambda k: bgrid.f1(k, doses))

    # positions: the baseline's sub-pixel mode, then the model's refinement, each by rms error
    c, bt, bsp = b_key
    candidates = {sub: DetectionSettings(baseline=replace(combos[c], peaks=PeakConfig(
        min_relative=bt, min_spacing_px=bsp, subpixel=sub, max_peaks=MAX_PEAKS))) for sub in ("parabolic", "dft")}
    pos = _Grid()
    found: dict[tuple, list] = defaultdict(list)  # (method, mode) → each sample's peaks, kept for the tilt
    with bar(total=len(samples), desc="tune: positions", unit="pattern") as pbar:
        for s in samples:
            d = dose_name(s.dose)
            for sub, st in candidates.items():
                pk = baseline_peaks(s.pattern[None], s.probe, st, s.usable)[0]
                pos.add(("baseline", sub), d, pk.pos_px, s.exact, errors=True)
                found[("baseline", sub)].append(pk)
            pbar.update(1)
    best_sub = min(candidates, key=lambda k: pos.rms(("baseline", k), doses))
    settings = candidates[best_sub]
    refines = {}
    for refine in ("vg", "correlation"):
        refines[refine] = replace(settings, model=ModelPeakSettings(
            min_relative=m_key[1], min_spacing_px=m_key[2], refine=refine, threshold_of=m_key[0], **low_kw))
        for s in samples:
            pk = model_peaks(s.vg_pred[None], s.pattern[None], s.probe, refines[refine], s.usable)[0]
            pos.add(("model", refine), dose_name(s.dose), pk.pos_px, s.exact, errors=True)
            found[("model", refine)].append(pk)
    best_refine = min(refines, key=lambda k: pos.rms(("model", k), doses))
    settings = refines[best_refine]
    tilt = (tune_tilt(samples, found[("model", best_refine)], found[("baseline", best_sub)], config)
            if config.tilt_sigma_invA else None)

    return {
        "settings": settings.as_dict(),
        "tuned_on": {"dataset": str(dataset), "dataset_index_sha256": info.index_sha256, "split": config.split,
                     "patterns": len(locations), "doses": doses, "match_radius_px": radius,
                     "label_min_relative": config.label_min_relative,
                     "objective": "F1 averaged over the doses (detection settings); rms position error averaged "
                                  "over the doses (sub-pixel mode, model refinement); both against the physical "
                                  "truth (exact reflections, evaluate's visibility rule); the model's threshold on "
                                  "the doses >= low_dose_e, its low_dose_min_relative on those under it"},
        "validation": {"model": {d: pos.row(("model", best_refine), d) for d in doses},
                       "baseline": {d: pos.row(("baseline", best_sub), d) for d in doses}},
        "position_rms_px": {"model": {k: {d: pos.row(("model", k), d)["position_rms_px"] for d in doses}
                                      for k in refines},
                            "baseline": {k: {d: pos.row(("baseline", k), d)["position_rms_px"] for d in doses}
                                         for k in candidates}},
        "strain_objective": strain_objective,
        "tilt": tilt,
        "grid": {k: v for k, v in asdict(config).items() if isinstance(v, tuple) and k != "doses_e"},
        "grid_size": {"model": len(config.model_threshold_of) * len(config.model_min_relative)
                      * len(config.model_spacing_px),
                      "baseline": len(combos) * len(config.baseline_min_relative) * len(config.baseline_spacing_px)},
        "grid_best_f1": {"model": float(np.mean([mgrid.f1((m_key[0], low_t if d in low and low_t is not None
                                                           else m_key[1], m_key[2]), [d]) for d in doses])),
                         "baseline": bgrid.f1(b_key, doses)},
    }


TILT_COVERAGE = 0.6827  # the share of tilt components meant to lie within one reported standard error


def tune_tilt(samples: list, model_found: list, baseline_found: list, config: TuneConfig) -> dict:
    """The classical tilt's settings (:class:`fourdcrystal.detection.tilt.TiltSettings`), chosen on the samples whose true
    tilt is within evaluate's range, fitted to the Friedel pairs of both methods' vectors at every dose (each
    sample's peaks with the chosen settings, ``model_found`` and ``baseline_found``): for each
    rocking-curve width, the gain of least squares between the fitted and true tilts, and the width of the least
    rms error after it; then ``floor_mrad``, added in quadrature to each fit's standard error so that
    ``TILT_COVERAGE`` of the components lie within it. Returns the card's ``tilt`` section."""
    from .evaluate import Sample
    from ..simulation.optics import disk_radius_invA
    from ..detection.tilt import TiltSettings, laue_tilt

    limit = EvalConfig().tilt_max_mrad
    chosen: list[tuple[Sample, list]] = [(s, [m, b]) for s, m, b in zip(samples, model_found, baseline_found)
                                         if s.tilt_mrad is not None and np.hypot(*s.tilt_mrad) <= limit]
    if not chosen:
        return None
    raw: dict[float, list] = {sg: [] for sg in config.tilt_sigma_invA}
    with bar(total=len(chosen) * len(raw), desc="tune: tilt", unit="fit") as pbar:
        for s, vectors in chosen:
            centre = np.array(s.pattern.shape) // 2
            radius = disk_radius_invA(s.semiangle_mrad, s.energy_eV)
            for sg in raw:
                for pk in vectors:
                    fit = laue_tilt(s.pattern, centre, s.dk_invA, (pk.pos_px - centre) * s.dk_invA, s.energy_eV,
                                    radius, TiltSettings(sigma_invA=sg, gain=1.0, floor_mrad=0.0))
                    raw[sg].append((fit.tilt_mrad, fit.sigma_mrad, s.tilt_mrad))
                pbar.update(1)
    zero = float(np.sqrt(np.mean([np.sum(np.square(s.tilt_mrad)) for s, _ in chosen])))
    return {**choose_tilt_settings(raw), "samples": len(chosen), "zero_rms_mrad": zero}  # samples: patterns × doses


def choose_tilt_settings(raw: dict) -> dict:
    """The tilt settings from fits at gain 1 and no floor: ``raw`` {rocking-curve width: [(fitted, its standard
    error, true tilt), ...]} (mrad; NaN fits count as failed). Per width the least-squares gain; the width of the
    least rms error after it; the floor that brings ``TILT_COVERAGE`` of the components within their error.

    >>> true = [np.array([t, -t / 2]) for t in (1.0, 2.0, 3.0, 4.0)]
    >>> out = choose_tilt_settings({1e-3: [(2 * t, np.zeros(2), t) for t in true],
    ...                             2e-3: [(np.full(2, np.nan), np.zeros(2), t) for t in true]})
    >>> out["settings"]["sigma_invA"], out["settings"]["gain"], out["by_sigma_invA"]["0.002"]["failed"]
    (0.001, 0.5, 4)
    """
    from ..detection.tilt import TiltSettings

    rows = {}
    for sg, fits in raw.items():
        est, sig, true = (np.array([f[k] for f in fits if np.all(np.isfinite(f[0]))]).reshape(-1, 2)
                          for k in range(3))
        gain = float(np.sum(est * true) / np.sum(est ** 2)) if len(est) and np.sum(est ** 2) > 0 else 1.0
        err = est * gain - true
        rows[sg] = {"gain": gain, "fitted": len(est), "failed": len(fits) - len(est),
                    "rms_mrad": float(np.sqrt(np.mean(np.sum(err ** 2, axis=1)))) if len(est) else float("inf"),
                    "err": err, "sigma": sig * abs(gain)}
    best = min(rows, key=lambda sg: rows[sg]["rms_mrad"])
    summary = {"by_sigma_invA": {f"{sg:g}": {k: v for k, v in r.items() if k not in ("err", "sigma")}
                                 for sg, r in rows.items()}}
    if not rows[best]["fitted"]:
        return {"settings": None, "objective": "no tilt fit succeeded on these patterns: the defaults stay", **summary}
    err, sig = np.abs(rows[best]["err"]), rows[best]["sigma"]
    floors = np.arange(0.0, 10.0, 0.01)
    covered = [np.mean(err <= np.sqrt(sig ** 2 + f ** 2)) for f in floors]
    floor = float(floors[np.searchsorted(covered, TILT_COVERAGE)]) if covered[-1] >= TILT_COVERAGE else 10.0
    settings_out = TiltSettings(sigma_invA=best, gain=round(rows[best]["gain"], 3), floor_mrad=round(floor, 2))
    return {"settings": settings_out.as_dict(),
            "objective": "rms tilt error against the true tilt (≤ evaluate's tilt_max_mrad), both methods' vectors, "
                         "all doses pooled; gain by least squares; floor_mrad for 68 % coverage", **summary}


def _strain_objective(model_path, config: TuneConfig, mgrid: _Grid, m_key: tuple, low_t, high: list, low: list):
    """The model's thresholds (main, and low-dose where there is one) chosen again by strain: among those whose mean
    F1 is within ``strain_f1_margin`` of the best (same reference and spacing), the one whose vectors give the
    lowest strain error on the strain benchmark's tuning series at the same doses, where that is at least
    ``strain_min_gain`` (relative) below the F1-best one's. Returns (m_key, low_t, record)."""
    import json

    from .strain_benchmark import file_dose_e, threshold_strain_errors, tuning_files

    ref, _, sp = m_key
    files = tuning_files(config.strain_benchmark)
    doses_e = {f: file_dose_e(f) for f in files}
    report = Path(config.strain_benchmark) / "report.json"
    fit = (json.loads(report.read_text())["chosen_on_tune_series"]["model"]["fit"] if report.is_file()
           else {"weights": "quartic", "tolerance": 0.15})
    settings = DetectionSettings(model=ModelPeakSettings(min_relative=m_key[1], min_spacing_px=sp, threshold_of=ref))
    record = {"benchmark": str(config.strain_benchmark), "fit": fit, "f1_margin": config.strain_f1_margin,
              "min_gain": config.strain_min_gain}

    def choose(best_t, doses, group, name):
        best_f1 = mgrid.f1((ref, best_t, sp), doses)
        near = [t for t in config.model_min_relative if mgrid.f1((ref, t, sp), doses) >= best_f1 - config.strain_f1_margin]
        mine = [f for f in files if (doses_e[f] < LOW_DOSE_E) == (group == "low")]
        if not mine:
            return best_t
        errs = threshold_strain_errors(model_path, mine, settings, near, fit)
        chosen = min(near, key=lambda t: (errs[t], -mgrid.f1((ref, t, sp), doses)))
        if not errs[chosen] <= (1 - config.strain_min_gain) * errs[best_t]:
            chosen = best_t
        record[name] = {"f1_best_threshold": best_t, "chosen": chosen, "files": len(mine),
                        "candidates": {str(t): {"mean_f1": mgrid.f1((ref, t, sp), doses),
                                                "strain_rms_error_pct": errs[t]} for t in near}}
        return chosen

    m_key = (ref, choose(m_key[1], high, "high", "threshold"), sp)
    if low_t is not None:
        low_t = choose(low_t, low, "low", "low_dose_threshold")
    return m_key, low_t, record


def format_tuning(section: dict) -> str:
    """The chosen settings and their validation scores, one line each."""
    st, val = section["settings"], section["validation"]
    m, b = st["model"], st["baseline"]
    kernel = {"flat": "flat", "gaussian": f"gaussian {b['kernel_width']:g}",
              "sigmoid": f"sigmoid {tuple(b['kernel_radii'])}"}[b["kernel"]]
    of = {"strongest": "of the strongest maximum", "zero_beam": "of the zero beam's V_g"}[
        m.get("threshold_of", "strongest")]
    low = (f" ({m['low_dose_min_relative']:g} under {m['low_dose_e']:g} e⁻ per pattern)"
           if m.get("low_dose_min_relative") is not None and m.get("low_dose_e", 0) > 0 else "")
    lines = [f"model:    min_relative {m['min_relative']:g}{low} {of}, spacing {m['min_spacing_px']:g} px, "
             f"refine {m['refine']}",
             f"baseline: kernel {kernel}, corr_power {b['corr_power']:g}, sigma {b['sigma_px']:g} px, min_relative "
             f"{b['peaks']['min_relative']:g}, spacing {b['peaks']['min_spacing_px']:g} px, subpixel "
             f"{b['peaks']['subpixel']}",
             f"{'dose':>8s} {'method':>9s} {'F1':>6s} {'prec':>6s} {'recall':>6s} {'rms px':>7s}"]
    for dose in val["model"]:
        for method in ("model", "baseline"):
            r = val[method][dose]
            rms = f"{r['position_rms_px']:7.3f}" if r["position_rms_px"] is not None else "      -"
            lines.append(f"{dose:>8s} {method:>9s} {r['f1']:6.3f} {r['precision']:6.3f} {r['recall']:6.3f} {rms}")
    for method, by_mode in section["position_rms_px"].items():
        for mode, by_dose in by_mode.items():
            values = ", ".join(f"{d} {v:.3f}" for d, v in by_dose.items() if v is not None)
            lines.append(f"position rms (px), {method} placed by {mode}: {values}")
    tilt = section.get("tilt")
    if tilt and not tilt.get("settings"):
        lines.append(f"tilt: {tilt['objective']}")
    elif tilt:
        t = tilt["settings"]
        r = tilt["by_sigma_invA"][f"{t['sigma_invA']:g}"]
        lines.append(f"tilt: rocking-curve width {t['sigma_invA']:g} Å⁻¹, gain {t['gain']:g}, error floor "
                     f"{t['floor_mrad']:g} mrad: rms {r['rms_mrad']:.2f} mrad against {tilt['zero_rms_mrad']:.2f} for "
                     f"answering zero, {r['failed']} of {r['fitted'] + r['failed']} fits failed")
    so = section.get("strain_objective")
    for name in ("threshold", "low_dose_threshold"):
        r = (so or {}).get(name)
        if r:
            cands = ", ".join(f"{t}: F1 {c['mean_f1']:.3f} strain {c['strain_rms_error_pct']:.3f} %"
                              for t, c in r["candidates"].items())
            lines.append(f"strain objective ({name}, {r['files']} tuning-series files): {r['f1_best_threshold']:g} "
                         f"→ {r['chosen']:g} [{cands}]")
    return "\n".join(lines)
