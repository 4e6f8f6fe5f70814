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
from .config import default
from .errors import FourdError
from .peaks import PeakConfig, Peaks, find_peaks, match_peaks
from .progress import bar

log = logging.getLogger("fourdcrystal")

METHODS = ("model", "baseline")


THICKNESS_BINS_A = (200.0, 400.0)  # edges of the thickness bins of the report, Å
# Where the misses and the false peaks lie: recall per bin of the label's V_g, and the largest true V_g within
# the match radius of each unmatched predicted peak; both relative to the zero beam's V_g (zero beam left out).
LABEL_STRENGTH_EDGES = (0.1, 0.2, 0.5)
FALSE_PEAK_EDGES = (0.01, 0.05)


def bin_names(edges: tuple[float, ...]) -> list[str]:
    """Names of the bins below, between and above ``edges``, in order (the report's keys)."""
    return ([f"< {edges[0]:g}"] + [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:])]
            + [f">= {edges[-1]:g}"])


@dataclass(frozen=True)
class EvalConfig:
    # defaults written once, in the config schema (fourdcrystal/config.py)
    split: str = default("evaluate", "split")
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
    thick_from_A: float = default("evaluate", "thick_from_A")  # also report the patterns at least this thick (Å)


@dataclass
class _Tally:
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
    patterns: int = 0
    strength_true: np.ndarray = field(default_factory=lambda: np.zeros(len(LABEL_STRENGTH_EDGES) + 1, int))
    strength_found: np.ndarray = field(default_factory=lambda: np.zeros(len(LABEL_STRENGTH_EDGES) + 1, int))
    false_peaks: np.ndarray = field(default_factory=lambda: np.zeros(len(FALSE_PEAK_EDGES) + 1, int))

    def summary(self) -> dict:
        p, r, f1 = _prf(self.matched, self.pred, self.true)
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
                "recall_by_label_strength": {
                    name: {"true_peaks": int(n), "recall": float(k / n) if n else None}
                    for name, n, k in zip(bin_names(LABEL_STRENGTH_EDGES), self.strength_true, self.strength_found)},
                "false_peaks_by_true_vg": {name: int(n) for name, n in zip(bin_names(FALSE_PEAK_EDGES),
                                                                           self.false_peaks)}}


def score(pred: Peaks, true: Peaks, true_vg: np.ndarray, radius_px: float, dk_invA, pred_values: np.ndarray | None,
          qz_pred: np.ndarray | None, qz_true: np.ndarray | None) -> dict:
    """Match ``pred`` to ``true`` peaks of one pattern; the numbers a tally needs."""
    mp, mt = match_peaks(pred.pos_px, true.pos_px, radius_px)
    d = pred.pos_px[mp] - true.pos_px[mt]
    h, w = true_vg.shape
    centre = np.array([h // 2, w // 2])
    # every label peak: its pixel, its true V_g, whether it is off the zero beam (the zero beam is left out)
    ti_all = np.rint(true.pos_px).astype(int)
    v_all = true_vg[ti_all[:, 0], ti_all[:, 1]]
    r_all = np.linalg.norm(true.pos_px - centre, axis=1)
    off_all = r_all > radius_px
    ti, r_true, off_zero = ti_all[mt], r_all[mt], off_all[mt]
    out = {"true": len(true), "pred": len(pred), "matched": len(mp),
           "err_px": np.linalg.norm(d, axis=1), "err_invA": np.linalg.norm(d * np.asarray(dk_invA), axis=1),
           "radial_px": (np.linalg.norm(pred.pos_px[mp] - centre, axis=1) - r_true)[off_zero],
           "i_true": v_all[mt][off_zero],
           "i_pred": (pred.intensity[mp] if pred_values is None else pred_values[mp])[off_zero]}
    # the label peaks off the zero beam by strength, and whether each was found
    found = np.zeros(len(true), bool)
    found[mt] = True
    out["strength_bin"] = np.digitize(v_all[off_all], LABEL_STRENGTH_EDGES)
    out["strength_found"] = found[off_all]
    # unmatched predictions: the largest true V_g within the match radius (background, a reflection under the
    # label threshold, or a label peak taken by another prediction)
    unmatched = np.setdiff1d(np.arange(len(pred)), mp)
    r = int(np.ceil(radius_px))
    near = []
    for i, j in np.rint(pred.pos_px[unmatched]).astype(int):
        window = true_vg[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1]
        near.append(window.max() if window.size else 0.0)
    out["false_bin"] = np.digitize(np.asarray(near, float), FALSE_PEAK_EDGES)
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
    for name in ("err_px", "err_invA", "radial_px", "i_true", "i_pred", "qz_err", "qz_zero_err"):
        getattr(t, name).extend(s.get(name, np.zeros(0)).tolist())
    np.add.at(t.strength_true, s["strength_bin"], 1)
    np.add.at(t.strength_found, s["strength_bin"][s["strength_found"]], 1)
    np.add.at(t.false_peaks, s["false_bin"], 1)


def _dose_name(dose) -> str:
    return "clean" if dose is None else f"{dose:.0e}"


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
    truth: Peaks  # label peaks inside the usable region
    usable: np.ndarray  # (H, W) bool: where peaks are scored
    vg_pred: np.ndarray | None
    qz_pred: np.ndarray | None
    energy_eV: float = 0.0
    zone_axis_index: int = 0  # max(|u|, |v|, |w|) of the zone axis [uvw]


def split_samples(predictor, dataset: str | Path, locations: list, config: EvalConfig, pbar=None):
    """Every pattern of ``locations`` at every dose of ``config``, with the model's prediction (a generator;
    ``predictor`` None: without).

    Patterns are zero-padded to a multiple of the network's 2^depth (q = 0 kept centred); peaks
    are scored only in the usable region: on the pattern, at least ``margin_disk_radii`` disk
    radii from its edge (a disk cut by the edge is not a fair target for either method).
    """
    from .calibration import usable_region
    from .simulation import shards
    from .simulation.optics import disk_radius_invA
    from .training.augment import shot_noise
    from .training.data import zero_beam

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
            for start in range(0, len(rows), config.batch_size):
                chunk = rows[start:start + config.batch_size]
                imgs = [sh.images(r) for _, r in chunk]
                stack = {k: pad_to_multiple(np.stack([im[k] for im in imgs]).astype(np.float32), multiple)
                         for k in ("cbed", "probe", "vg", "qz")}
                (oi, oj), (h, w) = stack["cbed"][1], imgs[0]["cbed"].shape
                cbed, probes = stack["cbed"][0], stack["probe"][0]
                usable, truths, vg_true = [], [], []
                for j, (_, r) in enumerate(chunk):
                    margin = config.margin_disk_radii * disk_radius_invA(float(alpha[r]), float(energy[r])) / float(
                        np.max(dk_all[r]))
                    key = (round(margin, 2), h, w)
                    if key not in masks:
                        cov = np.zeros(cbed.shape[-2:])
                        cov[oi:oi + h, oj:oj + w] = 1.0
                        masks[key] = usable_region(cov, margin)
                    usable.append(masks[key])
                    v = stack["vg"][0][j]
                    vg_true.append(v / max(zero_beam(v), 1e-12))
                    truths.append(find_peaks(vg_true[-1], config.label_peaks, mask=usable[-1]))
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
                                     float(energy[r]), int(axis_index[r]))
                    if pbar is not None:
                        pbar.update(len(chunk))


def _by_group(tallies: dict, group: str, doses: list[str]) -> dict:
    """{method: {dose: {value: summary}}} of the tallies keyed (method, dose, (group, value)), values ascending."""
    values = sorted({k[2][1] for k in tallies if isinstance(k[2], tuple) and k[2][0] == group})
    return {m: {d: {f"{v:g}": tallies[(m, d, (group, v))].summary() for v in values if (m, d, (group, v)) in tallies}
                for d in doses} for m in METHODS}


def evaluate(model_path: str | Path, dataset: str | Path, out: str | Path, config: EvalConfig = EvalConfig(),
             device: str = "auto") -> dict:
    """Evaluate a model and the baseline on one split; write the report and figures; return the report.

    Both methods use the settings in the model card (``fourdcrystal tune``), or the defaults for
    a card without them; ``config.model_min_relative`` overrides the model's threshold.
    """
    from .detect import baseline_peaks, model_peaks, settings_from_card, with_threshold
    from .model.inference import Predictor
    from .training.card import load_model, resolve_weights
    from .training.data import open_dataset

    model_path = resolve_weights(model_path)
    model, card = load_model(model_path, inference=True)
    settings, tuned = settings_from_card(card)
    settings = with_threshold(settings, config.model_min_relative)
    if not tuned:
        log.warning("%s: its card has no tuned peak settings (fourdcrystal tune); both methods use the defaults",
                    model_path)
    index, where, info = open_dataset(dataset)
    locations = where[config.split]
    if not locations:
        raise FourdError(f"{dataset}: the {config.split} split is empty; nothing to evaluate")
    if config.limit is not None:
        locations = locations[:config.limit]
    predictor = Predictor(model, card, device, config.batch_size)
    out = Path(out)
    from .atomic import check_writable

    check_writable(out, "evaluation report")
    out.mkdir(parents=True, exist_ok=True)

    tallies: dict[tuple, _Tally] = defaultdict(_Tally)
    per_pattern = []  # (model F1 at the first dose, position in locations) for the gallery
    with bar(total=len(locations) * len(config.doses_e), desc="evaluate", unit="pattern") as pbar:
        for s in split_samples(predictor, dataset, locations, config, pbar):
            mpk = model_peaks(s.vg_pred[None], s.pattern[None], s.probe, settings, s.usable)[0]
            bpk = baseline_peaks(s.pattern[None], s.probe, settings, s.usable)[0]
            s_model = score(mpk, s.truth, s.vg_true, config.match_radius_px, s.dk_invA, None, s.qz_pred, s.qz_true)
            zero = _zero_value(bpk, s.pattern.shape, config.match_radius_px)
            s_base = score(bpk, s.truth, s.vg_true, config.match_radius_px, s.dk_invA, bpk.intensity / zero, None,
                           None)
            dose = _dose_name(s.dose)
            for method, sc in (("model", s_model), ("baseline", s_base)):
                keys = [(method, dose, s.thickness_A), (method, dose, "all"), (method, "all", "all"),
                        (method, dose, thickness_bin(s.thickness_A)), (method, dose, ("kV", round(s.energy_eV / 1e3))),
                        (method, dose, ("axis", s.zone_axis_index))]
                if s.thickness_A >= config.thick_from_A:
                    keys.append((method, dose, "thick"))
                for key in keys:
                    _add(tallies[key], sc)
            if s.dose == config.doses_e[0]:
                f1 = _prf(s_model["matched"], s_model["pred"], s_model["true"])[2]
                per_pattern.append((f1, s.n, s.shard, s.row, s.pattern, s.vg_true, s.vg_pred, s.truth, mpk, bpk,
                                    s.thickness_A, s.dk_invA))

    thick_values = sorted({k[2] for k in tallies if isinstance(k[2], float)})
    bins = [b for b in thickness_bins() if any(k[2] == b for k in tallies)]
    doses = [_dose_name(d) for d in config.doses_e]
    report = {
        "schema": "fourdcrystal.evaluation/2",
        "model": str(model_path), "model_weights_sha256": card["weights_sha256"],
        "dataset": str(dataset), "dataset_index_sha256": info.index_sha256, "split": config.split,
        "patterns": len(locations), "config": asdict(config),
        "settings": settings.as_dict(), "settings_tuned": tuned,
        "overall": {m: tallies[(m, "all", "all")].summary() for m in METHODS},
        "by_dose": {m: {d: tallies[(m, d, "all")].summary() for d in doses} for m in METHODS},
        "by_dose_and_thickness_A": {m: {d: {f"{t:g}": tallies[(m, d, t)].summary() for t in thick_values}
                                        for d in doses} for m in METHODS},
        "by_dose_and_thickness_bin": {m: {d: {b: tallies[(m, d, b)].summary() for b in bins} for d in doses}
                                      for m in METHODS},
        "by_dose_and_energy_kV": _by_group(tallies, "kV", doses),
        "by_dose_and_zone_axis_index": _by_group(tallies, "axis", doses),
        "thick_from_A": config.thick_from_A,
        "by_dose_thick": {m: {d: tallies[(m, d, "thick")].summary() for d in doses} for m in METHODS},
        "definitions": "peaks matched one-to-one within match_radius_px, closest first; precision = matched / "
                       "predicted, recall = matched / label peaks (maxima of the true V_g ≥ label_peaks.min_relative "
                       "of the zero beam, at least margin_disk_radii disk radii inside the pattern; both methods "
                       "report peaks only there), micro-averaged; position error mean and rms over matched peaks; "
                       "radial offset = mean (|q_pred| − |q_true|) off the zero beam (> 0: outward); intensity r "
                       "over matched peaks off the zero beam (model: predicted relative V_g; baseline: correlation "
                       "relative to the zero beam's); recall_by_label_strength: recall of the label peaks off "
                       "the zero beam by their true V_g (fraction of the zero beam's); false_peaks_by_true_vg: "
                       "unmatched predicted peaks by the largest true V_g within match_radius_px (fraction of the "
                       "zero beam's: background, a reflection under the label threshold, or a label peak matched "
                       "to another prediction)",
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=1, sort_keys=True) + "\n")
    from .plots import evaluation_gallery, metrics_vs_thickness

    metrics_vs_thickness(report, out / "metrics_vs_thickness.png")
    worst = sorted(per_pattern, key=lambda p: (p[0], p[1]))[:config.worst]
    if worst:
        from .simulation import shards as shard_io

        names = []
        for w in worst:  # formula and zone axis for the titles
            with shard_io.Shard(Path(dataset) / w[2]) as sh:
                za = " ".join(str(int(v)) for v in sh.meta("zone_axis")[w[3]])
                names.append(f"{sh.meta('formula')[w[3]]} [{za}]")
        evaluation_gallery(worst, _dose_name(config.doses_e[0]), out / "worst.png", names)
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
                            ("by_dose_and_zone_axis_index", "zone axis index max|uvw| =", "")):
        groups = report.get(key, {}).get("model", {})
        for v in next(iter(groups.values()), {}) if groups else {}:
            sections.append((f"{name} {v}{unit}", {m: {d: report[key][m][d][v] for d in groups} for m in METHODS}))
    for title, table in sections:
        lines.append(f"{title}:")
        for dose in table["model"]:
            for m in METHODS:
                s = table[m][dose]
                lines.append(f"{dose:>16s} {m:>9s} {f(s['f1'], '6.3f')} {f(s['precision'], '6.3f')} "
                             f"{f(s['recall'], '6.3f')} {f(s.get('position_rms_px'), '7.3f')} "
                             f"{f(s.get('position_rms_invA'), '8.4f')} {f(s.get('radial_offset_px'), '+7.3f')} "
                             f"{f(s['intensity_pearson_r'], '6.3f')} "
                             f"{f(s['qz_mae_invA'], '11.4f')} {f(s.get('qz_mae_zero_invA'), '8.4f')}")
    by_dose = report["by_dose"]
    first = next(iter(by_dose["model"].values()), {})
    if "recall_by_label_strength" in first:  # reports from before these counts lack them
        names = bin_names(LABEL_STRENGTH_EDGES)
        lines.append("recall by the label's V_g (fraction of the zero beam's), all thicknesses:")
        lines.append(f"{'dose (e/pattern)':>16s} {'method':>9s} " + " ".join(f"{n:>9s}" for n in names))
        for dose in by_dose["model"]:
            for m in METHODS:
                r = by_dose[m][dose]["recall_by_label_strength"]
                lines.append(f"{dose:>16s} {m:>9s} " + " ".join(f(r[n]["recall"], "9.3f") for n in names))
    return "\n".join(lines)
