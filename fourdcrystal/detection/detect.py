"""Bragg peaks of the model and of the classical baseline, with the settings a model card carries.

One place turns (measured pattern, vacuum probe, network output) into peaks, for `predict`,
`evaluate` and `tune`, so the three can never disagree:

* the **model**: maxima of the predicted V_g ≥ ``min_relative`` of a reference, ``min_spacing_px``
  apart, only where the detector has data (``mask``); each then placed by ``refine``: ``"vg"`` a
  parabola through the V_g maximum, or ``"correlation"`` the maximum of the measured pattern's
  correlation with the probe within ``search_px`` (sub-pixel as the baseline's settings say),
  which averages the noise over the whole disk. Where ``predict`` has the detector's own pixels finer than
  the model's grid, ``fine_detector_refine`` (default ``"correlation"``) places the peaks on that
  correlation there instead (:func:`fourdcrystal.prediction.chunks.placed_on_detector`). The reference
  (``threshold_of``) is ``"strongest"``, the strongest maximum inside ``mask``, or ``"zero_beam"``,
  the network's own unit: it is trained on V_g divided by the zero beam's, so its output is a
  fraction of the zero beam's already. A network trained without the zero-beam pixel in its loss
  (a cropped training, such as ``configs/release2.yaml``'s) predicts some value there and sometimes overshoots one
  reflection; a threshold relative to that maximum then moves from pattern to pattern;
* the **baseline**: :func:`fourdcrystal.detection.baseline.find_bragg_disks_batch` with its settings.

``tune`` chooses both sets of settings on a validation split and stores them in the model card
(``card["peaks"]``); :func:`settings_from_card` reads them back, falling back to the defaults
for cards without them. Pure numpy: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np

from .baseline import BaselineConfig, find_bragg_disks_batch, refine_positions
from .peaks import PeakConfig, Peaks, find_peaks

REFINE_MODES = ("vg", "correlation")
FINE_DETECTOR_REFINES = ("correlation", "edges", "model_grid")
THRESHOLD_REFERENCES = ("strongest", "zero_beam")


@dataclass(frozen=True)
class ModelPeakSettings:
    """How peaks are read off the network's V_g."""

    min_relative: float = 0.05  # maxima ≥ this fraction of the reference (threshold_of)
    min_spacing_px: float = 3.0  # model-grid pixels between two peaks
    refine: Literal["vg", "correlation"] = "vg"
    # predict on a detector finer than the model's grid: "correlation" places every peak on the measured
    # correlation at the detector's own pixels (fourdcrystal.prediction.chunks.placed_on_detector); "edges" on the
    # correlation of the pattern's and the probe's edge maps there (baseline.place_on_edges), the baseline's disks
    # too, in patterns of at least low_dose_e electrons (below it, on the correlation); "model_grid": as refine
    fine_detector_refine: Literal["correlation", "edges", "model_grid"] = "correlation"
    edge_sigma_detector_px: float = 1.0  # "edges": the Gaussian smoothing before the gradient, detector pixels
    search_px: float = 1.5  # correlation refinement: search radius around the V_g maximum, pixels
    max_peaks: int = 400
    threshold_of: str = "strongest"  # strongest: the strongest maximum; zero_beam: the network's unit, V_g(0)
    # patterns whose counts say they hold fewer than low_dose_e electrons (estimate_dose) are read at
    # low_dose_min_relative instead; 0 / None: one threshold for every pattern
    low_dose_e: float = 0.0
    low_dose_min_relative: float | None = None

    def peak_config(self) -> PeakConfig:
        return PeakConfig(min_relative=self.min_relative, min_spacing_px=self.min_spacing_px,
                          max_peaks=self.max_peaks, subpixel="parabolic")


@dataclass(frozen=True)
class DetectionSettings:
    """Both methods' settings; what a model card stores under ``peaks``."""

    model: ModelPeakSettings = field(default_factory=ModelPeakSettings)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def as_dict(self) -> dict:
        return {"model": asdict(self.model), "baseline": asdict(self.baseline)}

    @classmethod
    def from_dict(cls, d: dict) -> "DetectionSettings":
        b = dict(d.get("baseline", {}))
        peaks = PeakConfig(**b.pop("peaks", {}))
        return cls(ModelPeakSettings(**d.get("model", {})), BaselineConfig(**b, peaks=peaks))


def settings_from_card(card: dict) -> tuple[DetectionSettings, bool]:
    """(settings, tuned): the card's tuned settings, or the defaults (tuned False) for a card without them."""
    section = card.get("peaks")
    if not section:
        return DetectionSettings(), False
    return DetectionSettings.from_dict(section["settings"]), True


def tilt_settings_from_card(card: dict):
    """(settings, tuned): the classical tilt's settings tuned into the card (``card["peaks"]["tilt"]``), or the
    defaults (tuned False)."""
    from .tilt import TiltSettings

    section = (card.get("peaks") or {}).get("tilt")
    if not section or not section.get("settings"):
        return TiltSettings(), False
    return TiltSettings(**section["settings"]), True


def estimate_dose(patterns: np.ndarray, tolerance: float = 0.05) -> np.ndarray:
    """Electrons per pattern, from the counts themselves, (n,); inf where the values are not counts.

    A pattern of detected electrons holds whole multiples of one value, the count (1 on a counting
    detector; any gain or scale the data carry). The smallest positive value is taken as that count; the
    dose is the sum over it, where at least 90 % of the positive values lie within ``tolerance`` of a whole
    multiple of it. Noise-free simulations and integrating detectors give inf: such a pattern is read with
    the threshold of the high doses.

    >>> estimate_dose(np.array([[[0.0, 2.5], [5.0, 7.5]], [[0.1, 0.37], [0.2, 0.9]]])).tolist()
    [6.0, inf]
    """
    out = np.full(len(patterns), np.inf)
    for i, frame in enumerate(patterns):  # one frame at a time: a chunk of raw frames can be large
        p = np.asarray(frame, dtype=np.float64).ravel()
        pos = p[p > 0]
        if pos.size == 0 or not np.isfinite(pos).all():  # infinite values are not counts
            continue
        ratio = pos / pos.min()
        if np.mean(np.abs(ratio - np.rint(ratio)) < tolerance) >= 0.9:
            out[i] = float(ratio.sum())
    return out


def model_peaks(vg: np.ndarray, patterns: np.ndarray, probe: np.ndarray, settings: DetectionSettings,
                mask: np.ndarray | None = None, dose_e: np.ndarray | None = None) -> list[Peaks]:
    """Peaks of a stack of predicted V_g (n, H, W), placed as ``settings.model.refine`` says.

    ``patterns`` (n, H, W) and ``probe`` ((H, W) or (n, H, W)) are the network's inputs, used
    for the correlation refinement. Intensities stay the predicted V_g at the maxima. With a low-dose
    threshold in the settings, each pattern's dose is ``dose_e`` (n,) or :func:`estimate_dose` of
    ``patterns`` (give ``dose_e`` from the raw frames where ``patterns`` were resampled).
    """
    m = settings.model
    if m.refine not in REFINE_MODES:
        raise ValueError(f"refine must be one of {REFINE_MODES}, got {m.refine!r}")
    if m.fine_detector_refine not in FINE_DETECTOR_REFINES:
        raise ValueError(f"fine_detector_refine must be one of {FINE_DETECTOR_REFINES}, got {m.fine_detector_refine!r}")
    if m.low_dose_e > 0 and m.low_dose_min_relative is not None:
        dose = estimate_dose(patterns) if dose_e is None else np.asarray(dose_e, float)
        per = [replace(m, min_relative=m.low_dose_min_relative) if d < m.low_dose_e else m for d in dose]
    else:
        per = [m] * len(vg)
    found = [find_peaks(v, _peak_config(mp, v, mask), mask=mask) for v, mp in zip(vg, per)]
    if m.refine == "correlation":
        moved = refine_positions(patterns, probe, [p.pos_px for p in found], settings.baseline, m.search_px)
        found = [Peaks(pos, p.intensity) for pos, p in zip(moved, found)]
    return found


def relative_threshold(vg: np.ndarray, mask: np.ndarray | None, min_relative: float, threshold_of: str) -> float:
    """A model threshold as a fraction of the map's maximum inside ``mask``, the form :func:`find_peaks` takes:
    ``min_relative`` itself for ``"strongest"``; for ``"zero_beam"`` (the map's own unit) divided by that maximum,
    and inf for a map with no positive value (nothing passes)."""
    if threshold_of not in THRESHOLD_REFERENCES:
        raise ValueError(f"threshold_of must be one of {THRESHOLD_REFERENCES}, got {threshold_of!r}")
    if threshold_of == "strongest":
        return min_relative
    inside = vg[mask] if mask is not None else vg
    top = float(inside.max()) if inside.size else 0.0
    return min_relative / top if top > 0 else np.inf


def _peak_config(m: ModelPeakSettings, vg: np.ndarray, mask: np.ndarray | None) -> PeakConfig:
    """The peak search for one map."""
    return replace(m.peak_config(), min_relative=relative_threshold(vg, mask, m.min_relative, m.threshold_of))


def baseline_peaks(patterns: np.ndarray, probe: np.ndarray, settings: DetectionSettings,
                   mask: np.ndarray | None = None) -> list[Peaks]:
    """The classical detector on a stack (n, H, W) with the settings' baseline configuration."""
    return find_bragg_disks_batch(patterns, probe, settings.baseline, mask)


def with_threshold(settings: DetectionSettings, min_relative: float | None) -> DetectionSettings:
    """``settings`` with the model's threshold replaced (a user's ``--min-relative``), if given, for every pattern
    (no low-dose threshold beside it); it keeps the settings' reference (``threshold_of``)."""
    if min_relative is None:
        return settings
    return replace(settings, model=replace(settings.model, min_relative=float(min_relative), low_dose_e=0.0,
                                           low_dose_min_relative=None))


PREDICT_METHODS = ("auto", "model", "baseline", "both")
CLEAN_LOG_DOSE = 7.0  # the clean row stands for 10⁷ counts per pattern when the nearest evaluated dose is sought


def nearest_dose(doses: list[str], counts_per_pattern: float) -> str:
    """The dose name ("clean", "1e+05", …) nearest ``counts_per_pattern`` on a log scale, the clean row standing for
    10⁷ (patterns that are not counts, inf, take the clean row, else the highest dose).

    >>> nearest_dose(["clean", "1e+05", "1e+04"], 3e4), nearest_dose(["1e+05", "1e+04"], float("inf"))
    ('1e+04', '1e+05')
    """
    def log_dose(d: str) -> float:
        return CLEAN_LOG_DOSE if d == "clean" else math.log10(float(d))

    if not math.isfinite(counts_per_pattern):
        return "clean" if "clean" in doses else max(doses, key=log_dose)
    scan = math.log10(max(counts_per_pattern, 1.0))
    return min(doses, key=lambda d: abs(log_dose(d) - scan))


TILT_SOURCES = ("laue", "qz", "combined", "learned")
# each source of the model's tilt and the card's test-evaluation row that measures it
_TILT_ROWS = {"qz": "model_qz", "laue": "model_vectors", "combined": "model_combined", "learned": "model_learned"}
_TILT_WORDS = {"qz": "the tilt of the model's q_z", "laue": "the Laue fit on its vectors",
               "combined": "q_z and the Laue fit combined", "learned": "the learned tilt read at its vectors"}


def model_tilt_source(card: dict, counts_per_pattern: float, laue_possible: bool = True) -> tuple[str, float | None, str]:
    """Where ``predict --tilt`` takes the tilt of the model's vectors from: ``"qz"`` (the network's q_z at its
    vectors, fitted per position), ``"laue"`` (the Laue fit on the model's vectors), ``"combined"`` (their
    inverse-variance mean, :func:`fourdcrystal.detection.tilt.combine_tilts`) or ``"learned"`` (the learned tilt read
    at the model's vectors, :func:`fourdcrystal.detection.tilt.learned_tilt`), whichever has the lowest tilt error
    in the card's test evaluation at the dose nearest the scan's counts (a tie goes to the earlier of laue, qz,
    combined, learned); for q_z alone, its standard error per component (the card's rms error there / √2, mrad); and why,
    in words. ``laue_possible`` False (no beam energy for the Laue fit): q_z alone, wherever the card has it.

    >>> ev = {"tilt": {"by_dose": {"model_qz": {"1e+05": {"rms_mrad": 1.6}},
    ...                            "model_vectors": {"1e+05": {"rms_mrad": 1.9}}}}}
    >>> model_tilt_source({"release": {"test_evaluation": ev}}, 1e5)[:2]
    ('qz', 1.131)
    >>> ev["tilt"]["by_dose"]["model_combined"] = {"1e+05": {"rms_mrad": 1.4}}
    >>> model_tilt_source({"release": {"test_evaluation": ev}}, 1e5)[:2]
    ('combined', None)
    >>> ev["tilt"]["by_dose"]["model_learned"] = {"1e+05": {"rms_mrad": 1.2}}
    >>> model_tilt_source({"release": {"test_evaluation": ev}}, 1e5)[:2]
    ('learned', None)
    """
    tilt = card.get("release", {}).get("test_evaluation", {}).get("tilt") or {}
    by_dose = tilt.get("by_dose", {})
    qz = by_dose.get("model_qz", {})
    doses = [d for d in qz if qz[d].get("rms_mrad") is not None and d in by_dose.get("model_vectors", {})]
    if not doses:
        return "laue", None, "the card's test evaluation has no tilt of the model's q_z"
    dose = nearest_dose(doses, counts_per_pattern)
    errs = {src: by_dose.get(row, {}).get(dose, {}).get("rms_mrad") for src, row in _TILT_ROWS.items()}
    why = f"on the card's test split at {dose} " + ", ".join(
        f"{_TILT_WORDS[src]} errs by {e:.2f} mrad rms" if e is not None else f"{_TILT_WORDS[src]}: none fitted"
        for src, e in errs.items() if src in ("laue", "qz") or e is not None)
    if not laue_possible:
        return "qz", round(errs["qz"] / math.sqrt(2), 3), why + " (no beam energy: the Laue fit and the learned read cannot run)"
    best = min((src for src in TILT_SOURCES if errs[src] is not None), key=lambda src: errs[src])
    return best, (round(errs["qz"] / math.sqrt(2), 3) if best == "qz" else None), why


def choose_method(card: dict, counts_per_pattern: float) -> tuple[str, str]:
    """``predict --method auto``: the method (model or baseline) whose F1 against the physical truth is the higher
    in the card's own test evaluation at the dose nearest the scan's counts per pattern (on a log scale, the clean
    row standing for 10⁷; patterns that are not counts, inf, read as the clean row), and why, in words.

    The thick patterns' table is used where the card has one (the regime the card's README rows quote). A card
    without a test evaluation gives the model.

    >>> table = {"model": {"clean": {"f1": 0.85}, "1e+04": {"f1": 0.60}},
    ...          "baseline": {"clean": {"f1": 0.77}, "1e+04": {"f1": 0.70}}}
    >>> card = {"release": {"test_evaluation": {"by_dose": table}}}
    >>> choose_method(card, float("inf"))[0], choose_method(card, 2e4)[0]
    ('model', 'baseline')
    """
    ev = card.get("release", {}).get("test_evaluation", {})
    table = ev.get("by_dose_thick") or ev.get("by_dose") or {}
    model, base = table.get("model", {}), table.get("baseline", {})
    doses = [d for d in model if d in base and model[d].get("f1") is not None and base[d].get("f1") is not None]
    if not doses:
        return "model", "the model's card has no test evaluation of both methods to choose by"

    dose = nearest_dose(doses, counts_per_pattern)
    scan = math.inf if not math.isfinite(counts_per_pattern) else math.log10(max(counts_per_pattern, 1.0))
    f_model, f_base = model[dose]["f1"], base[dose]["f1"]
    chosen = "model" if f_model >= f_base else "baseline"
    where = "its thick test patterns" if ev.get("by_dose_thick") else "its test split"
    counts = "not counts (clean row)" if math.isinf(scan) else f"{counts_per_pattern:.3g} counts per pattern"
    return chosen, (f"{counts}: on {where} at {dose} the card's F1 is {f_model:.3f} for the model and "
                    f"{f_base:.3f} for the baseline")
