"""`fourdcrystal evaluate`: the model against the ground truth and against the classical baseline.

On one split of a simulated dataset (default: test, crystals never seen in training), every
pattern is given to both methods, clean and at a series of electron doses (the same Poisson
draw for both). Each method's peaks are matched one-to-one to the label peaks (maxima of the
true V_g) within a radius, and the report gives, per method, dose and thickness:

* precision, recall and F1 of the Bragg peaks (micro-averaged over patterns);
* position error of matched peaks, in pixels and Å⁻¹;
* Pearson correlation of the intensities of matched peaks with the true V_g (zero beam left out);
* q_z error at matched peaks (model only), Å⁻¹, beside the error of predicting q_z = 0 there
  (the label's own mean |q_z|): a model whose q_z error is not below it has not learned q_z.

Writes ``report.json``, ``metrics_vs_thickness.png`` and ``worst.png`` (the patterns where
the model does worst: input, label, prediction, baseline peaks).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .atomic import write_text_atomic
from .baseline import BaselineConfig, find_bragg_disks
from .errors import FourdError
from .peaks import PeakConfig, Peaks, find_peaks, match_peaks
from .progress import bar

log = logging.getLogger("fourdcrystal")

METHODS = ("model", "baseline")


@dataclass(frozen=True)
class EvalConfig:
    split: str = "test"
    doses_e: tuple = (None, 1e5, 1e4)  # electrons per pattern; None = the clean simulation
    match_radius_px: float = 2.0
    # V_g falls off slowly with |g| (it is the potential, not the intensity): label peaks are the
    # reflections holding ≥ 5% of the zero beam's V_g
    label_peaks: PeakConfig = field(default_factory=lambda: PeakConfig(min_relative=0.05, max_peaks=400))
    model_peaks: PeakConfig = field(default_factory=lambda: PeakConfig(min_relative=0.05, max_peaks=400))
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    limit: int | None = None  # evaluate only the first N patterns of the split
    batch_size: int = 16
    worst: int = 4  # patterns in the gallery
    seed: int = 0
    thick_from_A: float = 300.0  # also report the patterns at least this thick (Å) together


@dataclass
class _Tally:
    """Counts and matched-peak values accumulated over patterns."""

    true: int = 0
    pred: int = 0
    matched: int = 0
    err_px: list = field(default_factory=list)
    err_invA: list = field(default_factory=list)
    i_pred: list = field(default_factory=list)
    i_true: list = field(default_factory=list)
    qz_err: list = field(default_factory=list)
    qz_zero_err: list = field(default_factory=list)  # |q_z| of the label at the same peaks: the error of q_z = 0
    patterns: int = 0

    def summary(self) -> dict:
        p, r, f1 = _prf(self.matched, self.pred, self.true)
        corr = (float(np.corrcoef(self.i_pred, self.i_true)[0, 1])
                if len(self.i_pred) > 2 and np.std(self.i_pred) > 0 and np.std(self.i_true) > 0 else None)
        return {"patterns": self.patterns, "true_peaks": self.true, "predicted_peaks": self.pred,
                "matched": self.matched, "precision": p, "recall": r, "f1": f1,
                "position_error_px": float(np.mean(self.err_px)) if self.err_px else None,
                "position_error_invA": float(np.mean(self.err_invA)) if self.err_invA else None,
                "intensity_pearson_r": corr,
                "qz_mae_invA": float(np.mean(self.qz_err)) if self.qz_err else None,
                "qz_mae_zero_invA": float(np.mean(self.qz_zero_err)) if self.qz_zero_err else None}


def score(pred: Peaks, true: Peaks, true_vg: np.ndarray, radius_px: float, dk_invA, pred_values: np.ndarray | None,
          qz_pred: np.ndarray | None, qz_true: np.ndarray | None) -> dict:
    """Match ``pred`` to ``true`` peaks of one pattern; the numbers a tally needs."""
    mp, mt = match_peaks(pred.pos_px, true.pos_px, radius_px)
    d = pred.pos_px[mp] - true.pos_px[mt]
    h, w = true_vg.shape
    centre = np.array([h // 2, w // 2])
    ti = np.rint(true.pos_px[mt]).astype(int)
    off_zero = np.linalg.norm(true.pos_px[mt] - centre, axis=1) > radius_px  # leave the zero beam out
    out = {"true": len(true), "pred": len(pred), "matched": len(mp),
           "err_px": np.linalg.norm(d, axis=1), "err_invA": np.linalg.norm(d * np.asarray(dk_invA), axis=1),
           "i_true": true_vg[ti[:, 0], ti[:, 1]][off_zero],
           "i_pred": (pred.intensity[mp] if pred_values is None else pred_values[mp])[off_zero]}
    if qz_pred is not None:
        pi = np.clip(np.rint(pred.pos_px[mp]).astype(int), 0, [h - 1, w - 1])
        out["qz_err"] = np.abs(qz_pred[pi[:, 0], pi[:, 1]] - qz_true[ti[:, 0], ti[:, 1]])[off_zero]
        out["qz_zero_err"] = np.abs(qz_true[ti[:, 0], ti[:, 1]])[off_zero]
    return out


def _add(t: _Tally, s: dict) -> None:
    t.patterns += 1
    t.true += s["true"]
    t.pred += s["pred"]
    t.matched += s["matched"]
    t.err_px.extend(s["err_px"].tolist())
    t.err_invA.extend(s["err_invA"].tolist())
    t.i_true.extend(s["i_true"].tolist())
    t.i_pred.extend(s["i_pred"].tolist())
    t.qz_err.extend(s.get("qz_err", np.zeros(0)).tolist())
    t.qz_zero_err.extend(s.get("qz_zero_err", np.zeros(0)).tolist())


def _dose_name(dose) -> str:
    return "clean" if dose is None else f"{dose:.0e}"


def evaluate(model_path: str | Path, dataset: str | Path, out: str | Path, config: EvalConfig = EvalConfig(),
             device: str = "auto") -> dict:
    """Evaluate a model and the baseline on one split; write the report and figures; return the report."""
    from .simulation import shards
    from .training.augment import shot_noise
    from .training.card import load_model, resolve_weights
    from .training.data import open_dataset, zero_beam
    from .model.inference import Predictor

    model_path = resolve_weights(model_path)
    model, card = load_model(model_path)
    index, where, info = open_dataset(dataset)
    locations = where[config.split]
    if not locations:
        raise FourdError(f"{dataset}: the {config.split} split is empty; nothing to evaluate")
    if tuple(card["input"]["shape"]) != tuple(info.shape):
        raise FourdError(f"{model_path} takes {card['input']['shape'][0]}×{card['input']['shape'][1]} patterns, "
                         f"{dataset} has {info.shape[0]}×{info.shape[1]}")
    if config.limit is not None:
        locations = locations[:config.limit]
    predictor = Predictor(model, card, device, config.batch_size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    tallies: dict[tuple, _Tally] = defaultdict(_Tally)
    per_pattern = []  # (model F1 at the first dose, position in locations) for the gallery
    by_shard: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for n, (name, row) in enumerate(locations):
        by_shard[name].append((n, row))
    with bar(total=len(locations) * len(config.doses_e), desc="evaluate", unit="pattern") as pbar:
        for name, rows in by_shard.items():
            with shards.Shard(Path(dataset) / name) as sh:
                thick = sh.meta("thickness_nominal_A")
                dk_all = sh.meta("k_sampling_invA")
                for start in range(0, len(rows), config.batch_size):
                    chunk = rows[start:start + config.batch_size]
                    imgs = [sh.images(r) for _, r in chunk]
                    cbed = np.stack([im["cbed"] for im in imgs]).astype(np.float32)
                    probes = np.stack([im["probe"] for im in imgs]).astype(np.float32)
                    vg_true = [im["vg"] / max(zero_beam(im["vg"]), 1e-12) for im in imgs]
                    truths = [find_peaks(v, config.label_peaks) for v in vg_true]
                    for dose in config.doses_e:
                        if dose is None:
                            x = cbed
                        else:  # the same noisy pattern for both methods, seeded per pattern and dose
                            x = np.stack([shot_noise(c, dose, np.random.default_rng([config.seed, n, int(dose)]))
                                          for c, (n, _) in zip(cbed, chunk)])
                        vg_pred, qz_pred = predictor(x, probes)
                        base = [find_bragg_disks(x[j], probes[j], config.baseline) for j in range(len(x))]
                        for j, (n, r) in enumerate(chunk):
                            key_t = float(thick[r])
                            dk = dk_all[r]
                            mpk = find_peaks(vg_pred[j], config.model_peaks)
                            s_model = score(mpk, truths[j], vg_true[j], config.match_radius_px, dk, None,
                                            qz_pred[j], imgs[j]["qz"])
                            zero = _zero_value(base[j], x.shape[-2:], config.match_radius_px)
                            s_base = score(base[j], truths[j], vg_true[j], config.match_radius_px, dk,
                                           base[j].intensity / zero, None, None)
                            for method, s in (("model", s_model), ("baseline", s_base)):
                                keys = [(method, _dose_name(dose), key_t), (method, _dose_name(dose), "all"),
                                        (method, "all", "all")]
                                if key_t >= config.thick_from_A:
                                    keys.append((method, _dose_name(dose), "thick"))
                                for key in keys:
                                    _add(tallies[key], s)
                            if dose == config.doses_e[0]:
                                f1 = _prf(s_model["matched"], s_model["pred"], s_model["true"])[2]
                                per_pattern.append((f1, n, name, r, x[j], vg_true[j], vg_pred[j], truths[j], mpk,
                                                    base[j], key_t))
                        pbar.update(len(chunk))

    report = {
        "schema": "fourdcrystal.evaluation/1",
        "model": str(model_path), "model_weights_sha256": card["weights_sha256"],
        "dataset": str(dataset), "dataset_index_sha256": info.index_sha256, "split": config.split,
        "patterns": len(locations), "config": asdict(config),
        "overall": {m: tallies[(m, "all", "all")].summary() for m in METHODS},
        "by_dose": {m: {_dose_name(d): tallies[(m, _dose_name(d), "all")].summary() for d in config.doses_e}
                    for m in METHODS},
        "by_dose_and_thickness_A": {
            m: {_dose_name(d): {f"{t:g}": tallies[(m, _dose_name(d), t)].summary()
                                for t in sorted({k[2] for k in tallies if k[2] not in ("all", "thick")})}
                for d in config.doses_e} for m in METHODS},
        "thick_from_A": config.thick_from_A,
        "by_dose_thick": {m: {_dose_name(d): tallies[(m, _dose_name(d), "thick")].summary() for d in config.doses_e}
                          for m in METHODS},
        "definitions": "peaks matched one-to-one within match_radius_px, closest first; precision = matched / "
                       "predicted, recall = matched / label peaks (maxima of the true V_g ≥ label_peaks.min_relative "
                       "of the zero beam), micro-averaged; intensity r over matched peaks off the zero beam "
                       "(model: predicted relative V_g; baseline: correlation relative to the zero beam's)",
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=1, sort_keys=True) + "\n")
    from .plots import evaluation_gallery, metrics_vs_thickness

    metrics_vs_thickness(report, out / "metrics_vs_thickness.png")
    worst = sorted(per_pattern, key=lambda p: (p[0], p[1]))[:config.worst]
    if worst:
        evaluation_gallery(worst, _dose_name(config.doses_e[0]), out / "worst.png")
    return report


def _prf(matched: int, pred: int, true: int) -> tuple[float, float, float]:
    """Precision, recall, F1."""
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
    """Model against baseline per dose: F1, precision, recall, position error, intensity r, q_z error."""
    lines = [f"{'dose (e/pattern)':>16s} {'method':>9s} {'F1':>6s} {'prec':>6s} {'recall':>6s} {'err px':>7s} "
             f"{'err 1/Å':>8s} {'I r':>6s} {'qz MAE 1/Å':>11s} {'(q_z=0)':>8s}"]

    def f(v, fmt):
        return format(v, fmt) if v is not None else "-".rjust(int(fmt.split(".")[0]))

    sections = [("all thicknesses", report["by_dose"])]
    thick = report.get("by_dose_thick")
    if thick and any(s["patterns"] for s in thick["model"].values()):
        sections.append((f"thickness ≥ {report['thick_from_A'] / 10:g} nm", thick))
    for title, table in sections:
        lines.append(f"{title}:")
        for dose in table["model"]:
            for m in METHODS:
                s = table[m][dose]
                lines.append(f"{dose:>16s} {m:>9s} {f(s['f1'], '6.3f')} {f(s['precision'], '6.3f')} "
                             f"{f(s['recall'], '6.3f')} {f(s['position_error_px'], '7.3f')} "
                             f"{f(s['position_error_invA'], '8.4f')} {f(s['intensity_pearson_r'], '6.3f')} "
                             f"{f(s['qz_mae_invA'], '11.4f')} {f(s.get('qz_mae_zero_invA'), '8.4f')}")
    return "\n".join(lines)
