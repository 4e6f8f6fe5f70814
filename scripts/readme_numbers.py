"""Render every number the README states from the shipped artefacts; ``--check`` fails where the README differs.

    python scripts/readme_numbers.py            # rewrite the generated blocks of README.md
    python scripts/readme_numbers.py --check    # exit 1 naming each block that is out of date (a test runs this)

A generated block sits between ``<!-- numbers: NAME -->`` and ``<!-- /numbers -->``; the text
around the blocks is written by hand and states no measured number. Sources, all in the repository:

* the shipped model's card ``fourdcrystal/data/fcunet-release.json`` (training data, range,
  test-split evaluation against the tuned baseline: ``fourdcrystal evaluate release release/dataset``);
* ``benchmarks/release2_on_truth.json``: the former second model on the same test split (its command inside);
* ``benchmarks/compare_py4dstem.json`` (``python scripts/compare_py4dstem.py release release/dataset``);
* ``benchmarks/strain_benchmark.json`` (``python scripts/strain_benchmark.py SERIES --tune-on VAL``) and
  ``benchmarks/strain_survey.json`` (``fourdcrystal strain-benchmark OUT --py4dstem-python PY``: its report.json)
  and ``benchmarks/strain_survey240.json`` (``fourdcrystal strain-benchmark OUT --crystals Si,SrTiO3 --box 240
  --detector-bin 4 --threads 2 --py4dstem-python PY``);
* ``benchmarks/evaluate_tta_d4.json`` (``fourdcrystal evaluate release release/dataset --tta d4 --doses
  clean,1e5,1e4,1e3``: its report);
* ``benchmarks/memorise_truth_*.json`` (``python scripts/memorise.py … --target …``, each with its command);
* ``benchmarks/quickstart.json`` (``python scripts/measure_quickstart.py``);
* ``benchmarks/setup.json`` (``python scripts/measure_setup.py``: the README's set-up lines, run as
  written in fresh clones);
* ``benchmarks/bench_predict*.json`` (``python scripts/bench_predict.py … --json …``, each with its command).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BENCH = ROOT / "benchmarks"
CARD = ROOT / "fourdcrystal" / "data" / "fcunet-release.json"
BLOCK = re.compile(r"(<!-- numbers: (?P<name>[\w-]+) -->\n)(?P<body>.*?)((?P<indent>[ ]*)<!-- /numbers -->)", re.S)
DOSES = {"clean": "clean", "1e+05": "10⁵", "1e+04": "10⁴"}
DOSE_NAMES = DOSES | {"1e5": "10⁵", "1e4": "10⁴"}  # the strain benchmark writes 1e5


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _mmss(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def _f1(a: float, b: float) -> tuple[str, str]:
    """Both F1s, the higher in bold."""
    fa, fb = f"{a:.3f}", f"{b:.3f}"
    return (f"**{fa}**", fb) if a > b else ((fa, f"**{fb}**") if b > a else (fa, fb))


def setup() -> str:
    s, q = _json(BENCH / "setup.json"), _json(BENCH / "quickstart.json")
    return (f"Measured on {s['machine']['cpus']} CPU cores ({s['machine']['processor']}), in fresh clones, the lines "
            f"exactly as written: this one took {_mmss(s['line1_wall_s'])} in all, the installation included (slower "
            f"where the package registry is far; the virtual environment takes {s['venv_MB'] / 1000:.1f} GB). The "
            f"quickstart alone, from an empty folder: {_mmss(q['quickstart_wall_s'])} "
            f"({_mmss(q['quickstart_cpu_s'])} of CPU, {q['peak_memory_MB'] / 1000:.1f} GB peak memory, "
            f"{q['disk_MB']} MB written). The test line (Development, below) took {_mmss(s['line2_wall_s'])}: "
            f"{s['tests_passed']} tests passed, {s['tests_skipped']} skipped, in {_mmss(s['pytest_s'])} of testing.\n")


def quickstart_table() -> str:
    q = _json(BENCH / "quickstart.json")
    sh, sm = q["shipped"], q["smoke"]
    lines = ["| dose (e⁻/pattern) | shipped model F1 | baseline F1 | model precision | model recall | "
             "smoke model F1 (pipeline check) |", "|---|---|---|---|---|---|"]
    for d, name in DOSES.items():
        if d not in sh["model"]:
            continue
        m, b = sh["model"][d], sh["baseline"][d]
        fm, fb = _f1(m["f1"], b["f1"])
        lines.append(f"| {name} | {fm} | {fb} | {m['precision']:.2f} | {m['recall']:.2f} | "
                     f"{sm['model'][d]['f1']:.3f} |")
    n = next(iter(sh["model"].values()))["patterns"]
    at_cap = q["demo_positions_at_cap"].get("model", 0)
    clean = sh["model"].get("clean", {})
    absent = (f" Noise-free, {clean['false_peaks_by_kind']['on an absent reflection']} of the shipped model's "
              f"{clean['predicted_peaks']} counted peaks lie on reflections the scoring counts as absent."
              if "false_peaks_by_kind" in clean else "")
    return ("\n".join(lines) + f"\n\n({n} test patterns.{absent} On the demo scan {at_cap} of {q['demo_positions']} "
            f"positions reach the 400-peak cap with the shipped model; the baseline finds a median of "
            f"{q['demo_peak_counts']['baseline']['median']:.0f} peaks per position.)\n")


def demo_strain() -> str:
    st = _json(BENCH / "quickstart.json")["demo_strain_spread"]

    def rng(m: dict) -> str:
        v = sorted(m[k] for k in ("exx", "eyy", "exy"))
        return f"{v[0]:.2f}–{v[-1]:.2f} %"

    return (f"The demo crystal is unstrained, so the maps show the noise floor at 10⁵ e⁻: a spread of "
            f"{rng(st['model'])} per strain component and {st['model']['theta_deg']:.2f}° in θ from the shipped "
            f"model's vectors, {rng(st['baseline'])} and {st['baseline']['theta_deg']:.2f}° from the baseline's.\n")


def worked_example() -> str:
    """The worked example's commands, with the camera length that gives the demo scan's pixel size on a
    55 µm-pixel detector: L = p / (k·λ)."""
    from fourdcrystal.simulation.optics import wavelength_A

    c = _json(BENCH / "quickstart.json")["demo_calibration"]
    lam = wavelength_A(c["energy_eV"])
    length_mm = 55e-3 / (c["k_pixel_invA"] * lam)
    return (f"The quickstart's demo scan without its calibration, as a bare NumPy array from a 55 µm-pixel "
            f"detector: its pixel size, {c['k_pixel_invA']:.4f} Å⁻¹ at {c['energy_eV'] / 1e3:g} kV (λ = {lam:.5f} Å), "
            f"is what a camera length of {length_mm:.1f} mm gives.\n\n```bash\n"
            f"python -c \"import h5py, numpy as np; np.save('my_scan.npy', h5py.File('quickstart/demo_scan.h5')"
            f"['scan/data'][...])\"\n"
            f"fourdcrystal predict my_scan.npy                  # refused: names the options that give the pixel size\n"
            f"fourdcrystal predict my_scan.npy --camera-length {length_mm:.1f} --detector-pixel 55 --energy "
            f"{c['energy_eV']:.0f} --semiangle {c['semiangle_mrad']:g} --baseline\n"
            f"fourdcrystal strain my_scan-bragg.h5\n```\n")


def qz_experiment() -> str:
    """The focused q_z experiment (``scripts/qz_experiment.py``): the error at the matched test peaks, ≥ 300 Å, of
    each training variant, beside that of answering q_z = 0 at the same peaks, and the linear probe."""
    d = _json(BENCH / "qz_experiment.json")
    probe = d["friedel_probe"]
    names = {"default": "default loss (learned task weights)", "coords": "+ coordinate channels",
             "coords-fixed10": "+ coordinates, q_z term ×10", "peaks": "q_z loss on the reflections only, ×10",
             "coords-peaks": "coordinates + q_z loss on the reflections only, ×10", "fixed10": "q_z term ×10"}
    lines = ["| variant | q_z error at matched peaks, ≥ 300 Å | error of q_z = 0 there | ratio |", "|---|---|---|---|"]
    for name, r in d["variants"].items():
        t = r["thick"]
        lines.append(f"| {names.get(name, name)} | {t['qz_mae_invA']:.4f} Å⁻¹ | {t['qz_mae_zero_invA']:.4f} Å⁻¹ | "
                     f"{t['qz_mae_invA'] / t['qz_mae_zero_invA']:.2f} |")
    lines.append(f"| linear probe: Friedel difference (I(g) − I(−g)) / (I(g) + I(−g)) × one slope, every thickness | "
                 f"{probe['mae_invA']:.4f} Å⁻¹ | {probe['mae_zero_invA']:.4f} Å⁻¹ | "
                 f"{probe['mae_invA'] / probe['mae_zero_invA']:.2f} |")
    text = "\n".join(lines) + "\n"
    tc = d.get("tilt_check")
    if tc:
        text += (f"\nThe crystal tilt fitted per pattern to the q_z of the best variant ({names.get(tc['model'], tc['model'])}; "
                 f"`predict --tilt`, {tc['fitted']} test patterns): rms error {tc['rms_error_mrad']:.1f} mrad "
                 f"(≥ 300 Å: {tc['rms_error_mrad_thick']:.1f} mrad), against {tc['rms_tilt_mrad']:.1f} mrad for "
                 f"answering zero.\n")
    return text


def truth_gate() -> str:
    """The memorisation gate against the physical truth: what each target allows, and how fast a network fits
    16 training patterns to it (``scripts/memorise.py --target ...``)."""
    runs = {"V_g label map (\\|FFT\\| of the windowed potential)": "memorise_truth_label.json",
            "truth_vg: Gaussians at the exact visible reflections, height V_g / V_0": "memorise_truth_vg.json",
            "truth_presence: the same, height 1": "memorise_truth_presence.json"}
    rows = ["| target | F1 of the target itself (best threshold) | F1 of the fitted network after N steps "
            "(one thread) |", "|---|---|---|"]
    for name, file in runs.items():
        r = _json(BENCH / file)
        ceiling = max(r["label_map_f1_truth_by_threshold"].values())
        fits = [x for x in r["reports"] if x["step"] > 0]
        fit = ", ".join(f"{x['step']}: {x['f1_truth']:.2f} ({_mmss(x['seconds'])})" for x in fits) or (
            "not trained: bounded by the target's own F1")
        rows.append(f"| {name} | {ceiling:.2f} | {fit} |")
    r = _json(BENCH / runs["truth_presence: the same, height 1"])
    return ("\n".join(rows) + f"\n\n({r['patterns']} training patterns ≥ 200 Å of the first model's data set, "
            f"{r['pixels'][0]}² px, {r['parameters'] / 1e6:.2f} M parameters from scratch, no augmentation; "
            f"`{r['command']}`, stopped after step {r['reports'][-1]['step']} once it had passed F1 0.95; the "
            f"truth_vg run beside it with `--target vg`.)\n")


def _test_eval() -> dict:
    return _json(CARD)["release"]["test_evaluation"]


def _strain_text(strain_pct) -> str:
    if isinstance(strain_pct, list):
        return f"fixed strain {strain_pct} %"
    return f"strain up to ±{strain_pct:g} %" if strain_pct else "no strain"


def coverage(card: Path = CARD) -> str:
    from fourdcrystal.prediction.preparation import NATIVE_PIXELS_SPAN

    c = _json(card)
    r, rel = c["input"]["range"], c["release"]
    contents, sup, sim = rel["dataset_contents"], rel["dataset_config"]["supercell"], rel["dataset_config"]["simulate"]
    k = r["k_sampling_invA"]
    half = c["input"]["shape"][0] // 2
    q_max = [half * k[0], half * c["input"]["k_sampling_invA"][0], half * k[1]]
    t = contents["thicknesses_A"]
    crystals = sum(contents["crystals"].values())
    return (f"| quantity | trained on |\n|---|---|\n"
            f"| crystals | {crystals} ({', '.join(f'{k} {v}' for k, v in sorted(contents['crystal_systems'].items()))})"
            f"; {contents['crystals']['test']} held out for the test split |\n"
            f"| zone axes | index ≤ {sup['max_index']} ({contents['zone_axes_distinct']} distinct), "
            f"{sup['zone_axes_per_crystal']} per crystal; tilt ≤ {sup['tilt_mrad_max']:g} mrad |\n"
            f"| thickness | {', '.join(f'{x:g}' for x in t)} Å |\n"
            f"| beam energy | {', '.join(f'{float(e) / 1e3:g}' for e in sorted(contents['energies_eV'], key=float))} kV |\n"
            f"| convergence semi-angle | {r['semiangle_mrad'][0]:g}–{r['semiangle_mrad'][1]:g} mrad |\n"
            f"| detector pixel size | {k[0]:.4f}–{k[1]:.4f} Å⁻¹ " + (
                "(the network runs on the detector's own pixels inside this range) |\n" if k[1] / k[0] >= NATIVE_PIXELS_SPAN
                else f"(the network runs at {c['input']['k_sampling_invA'][0]:.4f} Å⁻¹) |\n") +
            f"| field of view seen in training | {sim['output_px']}² patterns" + (
                f" (trained on {c['training']['config']['crop_px']}² crops)" if c['training']['config'].get('crop_px') else "") +
            f": \\|q\\| ≤ {q_max[1]:.1f} Å⁻¹ at its pixel size "
            f"({q_max[0]:.1f}–{q_max[2]:.1f} Å⁻¹ over the range) |\n"
            f"| patterns | {sum(contents['patterns'].values())} (train {contents['patterns']['train']}, "
            f"val {contents['patterns']['val']}, test {contents['patterns']['test']}) |\n"
            f"| strain, frozen phonons | {_strain_text(sup.get('strain_pct', 0.0))}, "
            f"{_phonon_text(sim)} |\n")


def _phonon_text(sim: dict) -> str:
    n, frac = sim.get("frozen_phonons", 0), sim.get("phonon_fraction", 1.0)
    if not n:
        return "no frozen phonons"
    return f"{n} frozen-phonon configurations" + (f" on {frac:.0%} of the specimens" if frac < 1 else "")


def _gname(key: str, v: str) -> str:
    return {"bin": lambda: v.replace(">=", "≥ ").replace("<", "< "), "kV": lambda: f"{v} kV",
            "axis": lambda: f"zone axis index {v}"}[key]()


def release2_truth() -> str:
    """The former second model (release2) on the default model's test split against the physical truth, beside the
    default model (its card), per thickness bin and dose: the evidence it left the package on."""
    ev, r2 = _test_eval(), _json(BENCH / "release2_on_truth.json")
    if r2["patterns"] != ev["patterns"] or r2["split"] != ev["split"]:
        raise SystemExit("benchmarks/release2_on_truth.json: another split than the card's evaluation")
    lines = ["| thickness | dose (e⁻/pattern) | F1 default / release2 | precision default / release2 | "
             "rms position error default / release2 |", "|---|---|---|---|---|"]
    bins = sorted(ev["by_dose_and_thickness_bin"]["model"]["clean"], key=lambda b: {"<": 0, ">": 2}.get(b[0], 1))
    groups = [(_gname("bin", b), lambda e, b=b: {d: e["by_dose_and_thickness_bin"]["model"][d][b]
                                                  for d in e["by_dose_thick"]["model"]}) for b in bins]
    groups.append((f"≥ {ev['thick_from_A']:g} Å", lambda e: e["by_dose_thick"]["model"]))
    for name, get in groups:
        a, b = get(ev), get(r2)
        for d, dname in (DOSES | {"1e+03": "10³"}).items():
            if d not in a or d not in b:
                continue
            fa, fb = _f1(a[d]["f1"], b[d]["f1"])
            lines.append(f"| {name} | {dname} | {fa} / {fb} | {a[d]['precision']:.2f} / {b[d]['precision']:.2f} | "
                         f"{a[d]['position_rms_px']:.2f} / {b[d]['position_rms_px']:.2f} px |")
    return "\n".join(lines) + f"\n\n(`{r2['commands'][0]}`, then `{r2['commands'][1]}`.)\n"


def release_table(brief: bool = False) -> str:
    """The card's test split by thickness bin and dose, model beside the tuned baseline; ``brief``: the thinnest bin
    and everything from the thick bin's edge up (the README's rows)."""
    ev = _test_eval()
    by_bin = ev["by_dose_and_thickness_bin"]
    thick = f"≥ {ev['thick_from_A']:g} Å"
    lines = ["| thickness | dose (e⁻/pattern) | F1 model | F1 baseline | precision model / baseline | "
             "recall model / baseline | rms position error model / baseline |", "|---|---|---|---|---|---|---|"]
    groups = [(b.replace(">=", "≥ ").replace("<", "< "), {m: {d: by_bin[m][d][b] for d in by_bin[m]}
                                                          for m in by_bin}) for b in by_bin["model"]["clean"]]
    order = {"< ": 0, "2": 1, "≥ ": 2}
    groups.sort(key=lambda g: order.get(g[0][:2], order.get(g[0][0], 1)))
    if brief:
        groups = [g for g in groups if g[0].startswith("< ")]
    groups.append((thick, ev["by_dose_thick"]))
    for name, table in groups:
        for d, dname in DOSES.items():
            m, b = table["model"][d], table["baseline"][d]
            fm, fb = _f1(m["f1"], b["f1"])
            lines.append(f"| {name} | {dname} | {fm} | {fb} | {m['precision']:.2f} / {b['precision']:.2f} | "
                         f"{m['recall']:.2f} / {b['recall']:.2f} | {m['position_rms_px']:.2f} / "
                         f"{b['position_rms_px']:.2f} px |")
    return "\n".join(lines) + f"\n\n({ev['patterns']} test patterns of {_json(CARD)['release']['dataset_contents']['crystals']['test']} crystals never seen in training.)\n"


def py4dstem_table() -> str:
    d = _json(BENCH / "compare_py4dstem.json")
    lines = ["| patterns | dose (e⁻/pattern) | F1 model | F1 our baseline | F1 py4DSTEM `find_Bragg_disks` | "
             "rms position error model / ours / py4DSTEM |", "|---|---|---|---|---|---|"]
    for group, gname in (("all", "all"), ("thick", f"≥ {d['thick_from_A']:g} Å")):
        for dose, dname in DOSES.items():
            row = d["table"].get(f"{group}/{dose}")
            if row is None:
                continue
            m, o, p = row["model"], row["baseline"], row["py4DSTEM"]
            lines.append(f"| {gname} | {dname} | {m['f1']:.3f} | {o['f1']:.3f} | {p['f1']:.3f} | "
                         f"{m['position_rms_px']:.2f} / {o['position_rms_px']:.2f} / {p['position_rms_px']:.2f} px |")
    return "\n".join(lines) + f"\n\n({d['test_patterns']} test patterns; py4DSTEM's settings tuned on the validation split: {d['py4dstem_settings']['kernel']} kernel, corrPower {d['py4dstem_settings']['corrPower']:g}, sigma_cc {d['py4dstem_settings']['sigma_cc']:g}, minPeakSpacing {d['py4dstem_settings']['minPeakSpacing']:g}, minRelativeIntensity {d['py4dstem_settings']['minRelativeIntensity']:g}, {d['py4dstem_settings']['subpixel']}.)\n"


def strain_table() -> str:
    d = _json(BENCH / "strain_benchmark.json")
    rows = {(r["thickness_nm"], r["dose"], r["method"]): r for r in d["rows"]}
    lines = ["| thickness | dose (e⁻/pattern) | strain rms error model / baseline | rotation rms error model / baseline "
             "| indexed vectors model / baseline |", "|---|---|---|---|---|"]
    order = list(DOSE_NAMES)  # clean, then falling dose
    for t, dose, _ in sorted({k for k in rows if k[2] == "model"},
                             key=lambda k: (order.index(k[1]) if k[1] in order else len(order), k[0])):
        m, b = rows[(t, dose, "model")], rows[(t, dose, "baseline")]
        sm, sb = m["strain_rms_error_pct"], b["strain_rms_error_pct"]
        strain = f"**{sm:.3f} %** / {sb:.3f} %" if sm < sb else f"{sm:.3f} % / **{sb:.3f} %**"
        lines.append(f"| {round(t * 10, -1):g} Å | {DOSE_NAMES.get(dose, dose)} | {strain} | {m['rotation_rms_error_deg']:.3f}° / "
                     f"{b['rotation_rms_error_deg']:.3f}° | {m['indexed_vectors_mean']:.0f} / "
                     f"{b['indexed_vectors_mean']:.0f} |")
    return "\n".join(lines) + "\n"


SURVEY_DOSES = {"clean": "clean", "1e5": "10⁵", "1e4": "10⁴", "1e3": "10³"}


SURVEYS = {"strain_survey.json": "60 Å boxes", "strain_survey240.json": "240 Å boxes binned 4×"}


def strain_survey(name: str = "strain_survey.json") -> str:
    """``fourdcrystal strain-benchmark``'s summary (``benchmarks/strain_survey.json``, or ``name``): rms strain and
    rotation error by dose and thickness over every crystal and zone axis, per method; the lowest strain error in
    bold."""
    d = _json(BENCH / name)
    methods, table = d["methods"], d["summary"]["by_dose_and_thickness_A"]
    common = d["summary"].get("common_by_dose_and_thickness_A", {})
    names = " / ".join(methods)
    lines = [f"| dose (e⁻/pattern) | thickness | strain rms error {names} | on the positions all fitted | rotation rms "
             f"error {names} | positions fitted {names} |", "|---|---|---|---|---|---|"]

    def bold_lowest(errs: list) -> str:
        best = min((e for e in errs if e is not None), default=None)
        return " / ".join("–" if e is None else (f"**{e:.3f} %**" if e == best else f"{e:.3f} %") for e in errs)

    for dose in [x for x in SURVEY_DOSES if x in table]:
        for t in sorted(table[dose], key=float):
            cells = [table[dose][t].get(m, {}) for m in methods]
            strain = bold_lowest([c.get("strain_rms_error_pct") for c in cells])
            both = common.get(dose, {}).get(t)
            shared = "–" if not both else (bold_lowest([both[m]["strain_rms_error_pct"] for m in methods])
                                           + f" ({both[methods[0]]['fitted']})")
            rot = " / ".join("–" if c.get("rotation_rms_error_deg") is None else f"{c['rotation_rms_error_deg']:.3f}°"
                             for c in cells)
            fitted = " / ".join(f"{c.get('fitted', 0)}/{c.get('positions', 0)}" for c in cells)
            lines.append(f"| {SURVEY_DOSES[dose]} | {float(t):g} Å | {strain} | {shared} | {rot} | {fitted} |")
    c = d["config"]
    series = len(c["crystals"]) * c["zone_axes_per_crystal"]
    chosen = "; ".join(f"{m} {v['fit']['weights']}, tolerance {v['fit']['tolerance']:g}"
                       + (f", offsets {v['fit']['correct']}" if "correct" in v["fit"] else "")
                       for m, v in d["chosen_on_tune_series"].items())
    return ("\n".join(lines) + f"\n\n({series} test series: {', '.join(c['crystals'])}, {c['zone_axes_per_crystal']} zone "
            f"axes each, {c['scan'][0]}×{c['scan'][1]} positions strained up to ±{c['strain_pct']:g} % and rotated up "
            f"to ±{c['rotation_deg']:g}°, {c['energy_eV'] / 1e3:g} kV, {c['semiangle_mrad']:g} mrad, "
            f"{c['output_px']}² px at {c.get('detector_bin', 1) / c['box_A']:.4f} Å⁻¹ ({c['box_A']:g} Å boxes); fit settings chosen on the tuning series: {chosen}; "
            f"`fourdcrystal strain-benchmark OUT --py4dstem-python PY`, OUT/report.json.)\n")


def strain_lowest() -> str:
    """Which method's vectors give the lowest rms strain error, per dose and thickness, in each strain survey, on
    the positions every method fitted."""
    surveys = {boxes: _json(BENCH / name) for name, boxes in SURVEYS.items()}
    thick = {b: sorted(next(iter(d["summary"]["by_dose_and_thickness_A"].values())), key=float)
             for b, d in surveys.items()}
    lines = ["| dose (e⁻/pattern) | " + " | ".join(f"{b}: lowest at " + " / ".join(f"{float(t):g}" for t in thick[b])
                                                + " Å" for b in surveys) + " |", "|---|" + "---|" * len(surveys)]
    for dose, name in SURVEY_DOSES.items():
        cells = []
        for b, d in surveys.items():
            table = (d["summary"].get("common_by_dose_and_thickness_A")
                     or d["summary"]["by_dose_and_thickness_A"]).get(dose, {})
            best = []
            for t in thick[b]:
                errs = {m: e["strain_rms_error_pct"] for m, e in table.get(t, {}).items()
                        if e.get("strain_rms_error_pct") is not None}
                best.append(min(errs, key=errs.get) if errs else "–")
            cells.append(" / ".join(best))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def acceptance() -> str:
    """Issue 30's acceptance rows, read off the card's test evaluation and the strain survey: met or not."""
    ev = _test_eval()
    th, bins = ev["by_dose_thick"], ev["by_dose_and_thickness_bin"]
    m5, b5, m4, b4 = th["model"]["1e+05"], th["baseline"]["1e+05"], th["model"]["1e+04"], th["baseline"]["1e+04"]
    pos = [(b, dose) for dose in ("clean", "1e+05", "1e+04", "1e+03") if dose in bins["model"]
           for b in bins["model"][dose]]
    worse = [f"{b.replace('>=', '≥ ').replace('<', '< ')} at {DOSES.get(dose, dose)}" for b, dose in pos
             if bins["model"][dose][b]["position_rms_px"] > bins["baseline"][dose][b]["position_rms_px"]]
    fails5, clean = {}, {}  # per survey: the thicknesses missed at 10⁵, the model's noise-free errors
    for name, boxes in SURVEYS.items():
        d = _json(BENCH / name)
        table = d["summary"]["by_dose_and_thickness_A"]
        s5 = d["summary"].get("common_by_dose_and_thickness_A", table).get("1e5", {})
        fails5[boxes] = [t for t in s5 if not (s5[t]["model"]["strain_rms_error_pct"] is not None and all(
            s5[t][m]["strain_rms_error_pct"] is not None for m in d["methods"]) and s5[t]["model"][
            "strain_rms_error_pct"] <= 0.8 * s5[t]["baseline"]["strain_rms_error_pct"] and ("py4DSTEM" not in s5[t]
            or s5[t]["model"]["strain_rms_error_pct"] <= s5[t]["py4DSTEM"]["strain_rms_error_pct"]))]
        clean[boxes] = [table["clean"][t]["model"] for t in sorted(table.get("clean", {}), key=float)]
    ok_clean = all(c and all(e["strain_rms_error_pct"] is not None and e["strain_rms_error_pct"] <= 0.08
                             and e["fitted"] == e["positions"] for e in c) for c in clean.values())
    missed = "; ".join(f"{boxes}: " + ("met at every thickness" if not f else "missed at " + ", ".join(
        f"{float(t):g} Å" for t in sorted(f, key=float))) for boxes, f in fails5.items())
    clean_text = "; ".join(f"{boxes}: " + ", ".join("–" if e["strain_rms_error_pct"] is None else
                                                     f"{e['strain_rms_error_pct']:.3f} %" + (
                                                         f" ({e['fitted']}/{e['positions']} fitted)"
                                                         if e["fitted"] < e["positions"] else "") for e in c)
                           for boxes, c in clean.items())
    rows = [("F1 at 10⁵ ≥ tuned baseline + 0.05", f"{m5['f1']:.3f} vs {b5['f1']:.3f} + 0.05", m5["f1"] >= b5["f1"] + 0.05),
            ("F1 at 10⁴ ≥ tuned baseline + 0.05", f"{m4['f1']:.3f} vs {b4['f1']:.3f} + 0.05", m4["f1"] >= b4["f1"] + 0.05),
            ("precision at 10⁵ ≥ 0.9", f"{m5['precision']:.3f}", m5["precision"] >= 0.9),
            ("position rms ≤ the baseline's in every thickness bin", "every bin and dose" if not worse else
             "worse at " + ", ".join(worse), not worse),
            ("strain rms at 10⁵ ≤ 0.8 × baseline and ≤ py4DSTEM, every thickness (both surveys; on the positions "
             "all three fitted)", missed,
             not any(fails5.values())),
            ("noise-free strain ≤ 0.08 %, every thickness (100, 300, 600, 1000 Å)", clean_text, ok_clean)]
    lines = ["| target (test split ≥ 200 Å; strain survey) | now | met |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {'yes' if ok else '**no**'} |" for t, v, ok in rows]
    return "\n".join(lines) + "\n"


TILT_NAMES = {"classical": "classical (baseline's disks)", "model_vectors": "Laue fit on the model's vectors",
              "model_qz": "model's q_z", "model_combined": "q_z and Laue fit combined",
              "model_learned": "learned read at the model's vectors"}


def tilt_table() -> str:
    """The out-of-plane tilt on the test split (the card's evaluation): each method's rms error by thickness bin and
    dose beside answering zero, failed fits counted; then issue 33's targets at 10⁵ e⁻, met or not."""
    ev = _test_eval()
    tilt = ev.get("tilt")
    if not tilt:
        return "(the card's test evaluation has no tilt table: re-run `fourdcrystal evaluate`)\n"
    methods = [m for m in TILT_NAMES if m in tilt["by_dose"]]
    bins = tilt["by_dose_and_thickness_bin"]
    order = {"<": 0, "2": 1, ">": 2}
    names = sorted(bins[methods[0]]["clean"], key=lambda b: order.get(b[0], 1))
    lines = ["| thickness | dose (e⁻/pattern) | " + " | ".join(TILT_NAMES.get(m, m) for m in methods)
             + " | answering zero |", "|---|---|" + "---|" * (len(methods) + 1)]
    for b in names + ["all"]:
        for d, dname in {**DOSES, "1e+03": "10³"}.items():
            if d not in bins[methods[0]]:
                continue
            rows = {m: (tilt["by_dose"][m][d] if b == "all" else bins[m][d].get(b)) for m in methods}
            best = min((r["rms_mrad"] for r in rows.values() if r and r["rms_mrad"] is not None), default=None)
            cells = []
            for m in methods:
                r = rows[m]
                if not r or r["rms_mrad"] is None:
                    cells.append("–")
                    continue
                v = f"{r['rms_mrad']:.2f} mrad"
                cells.append((f"**{v}**" if r["rms_mrad"] == best else v) + (f" ({r['failed']} failed)"
                                                                             if r["failed"] else ""))
            zero = rows["classical"]["zero_rms_mrad"]
            label = "all" if b == "all" else b.replace(">=", "≥ ").replace("<", "< ")
            lines.append(f"| {label} | {dname} | " + " | ".join(cells) + f" | {zero:.2f} mrad |")
    n = tilt["by_dose"][methods[0]]["clean"]["patterns"]
    text = "\n".join(lines) + (f"\n\n({n} test patterns tilted up to {tilt['max_true_mrad']:g} mrad; rms over the "
                                f"fitted patterns, failed fits (NaN) counted apart; answering zero over the "
                                f"patterns the classical fit kept.)\n\n")
    # issue 33's targets at 10⁵ e⁻: tilt rms ≤ 0.5 × zero, ≤ 2 mrad and ≤ the classical estimate in every bin
    rows = []
    for m in methods:
        if m == "classical":
            continue
        misses = []
        for b in names:
            r, c = bins[m]["1e+05"].get(b), bins["classical"]["1e+05"].get(b)
            label = b.replace(">=", "≥ ").replace("<", "< ")
            if not r or r["rms_mrad"] is None:
                misses.append(f"{label} (no fit)")
                continue
            why = [f"{r['rms_mrad']:.2f} > 0.5 × {r['zero_rms_mrad']:.2f}" if r["rms_mrad"] > 0.5 * r["zero_rms_mrad"]
                   else "", f"{r['rms_mrad']:.2f} > 2" if r["rms_mrad"] > 2.0 else "",
                   f"classical {c['rms_mrad']:.2f}" if c and r["rms_mrad"] > c["rms_mrad"] else ""]
            if any(why):
                misses.append(f"{label} ({'; '.join(w for w in why if w)} mrad)")
        rows.append(f"| {TILT_NAMES.get(m, m)} at 10⁵ e⁻: rms ≤ 0.5 × zero, ≤ 2 mrad and ≤ classical in every "
                    f"thickness bin | {'met' if not misses else 'missed at ' + ', '.join(misses)} | "
                    f"{'yes' if not misses else '**no**'} |")
    return text + "| target | now | met |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def _indent(text: str) -> str:
    """Blocks inside a list item of docs/reference.md are indented by two spaces."""
    return "".join(f"  {line}" if line.strip() else line for line in text.splitlines(keepends=True))


def release_full_table() -> str:
    """Every thickness bin and dose, model beside the tuned baseline (``scripts/card_table.py`` prints the same)."""
    ev = _test_eval()
    by_bin = ev["by_dose_and_thickness_bin"]
    from fourdcrystal.evaluation.evaluate import thickness_bins

    groups = [(b, {m: {d: by_bin[m][d][b] for d in by_bin[m]} for m in by_bin}) for b in thickness_bins()
              if b in by_bin["model"]["clean"]]
    groups.append((f">={ev['thick_from_A']:g} Å", ev["by_dose_thick"]))
    lines = ["| thickness | dose (e⁻/pattern) | method | F1 | precision | recall | rms position error | radial offset "
             "| intensity r |", "|---|---|---|---|---|---|---|---|---|"]
    for name, table in groups:
        for d, dname in DOSES.items():
            m, b = table["model"][d], table["baseline"][d]
            for method, r, other in (("model", m, b), ("baseline", b, m)):
                f1 = f"**{r['f1']:.3f}**" if r["f1"] > other["f1"] else f"{r['f1']:.3f}"
                lines.append(f"| {name} | {dname} | {method} | {f1} | {r['precision']:.3f} | {r['recall']:.3f} | "
                             f"{r['position_rms_px']:.2f} px, {r['position_rms_invA']:.4f} Å⁻¹ | "
                             f"{r['radial_offset_px']:+.3f} px | {r['intensity_pearson_r']:.2f} |")
    return _indent("\n".join(lines) + "\n")


def py4dstem_full_table() -> str:
    d = _json(BENCH / "compare_py4dstem.json")
    lines = ["| patterns | dose (e⁻/pattern) | method | F1 | precision | recall | rms position error (px) |",
             "|---|---|---|---|---|---|---|"]
    names = {"model": "model", "baseline": "our baseline", "py4DSTEM": "py4DSTEM find_Bragg_disks"}
    for group, gname in (("all", "all"), ("thick", f"≥ {d['thick_from_A']:g} Å")):
        for dose, dname in DOSES.items():
            row = d["table"].get(f"{group}/{dose}")
            for k, label in names.items():
                if row is not None:
                    r = row[k]
                    lines.append(f"| {gname} | {dname} | {label} | {r['f1']:.3f} | {r['precision']:.3f} | "
                                 f"{r['recall']:.3f} | {r['position_rms_px']:.2f} |")
    return _indent("\n".join(lines) + "\n")


def tta_table() -> str:
    """``benchmarks/evaluate_tta_d4.json`` (``fourdcrystal evaluate release release/dataset --tta d4 --doses
    clean,1e5,1e4,1e3``, its report) beside the card's own test evaluation (the same split, no mirrors)."""
    d, ev, card = _json(BENCH / "evaluate_tta_d4.json"), _test_eval(), _json(CARD)
    if d.get("model_weights_sha256") != card["weights_sha256"]:
        raise SystemExit("benchmarks/evaluate_tta_d4.json was measured on other weights than the shipped model's")
    plain, mirrored = ev["by_dose_thick"], d["by_dose_thick"]
    lines = ["| dose (e⁻/pattern) | F1 model / with `--tta d4` / baseline | precision model / `--tta d4` | "
             "rms position error model / `--tta d4` |", "|---|---|---|---|"]
    for dose, name in (DOSES | {"1e+03": "10³"}).items():
        if dose not in mirrored["model"] or dose not in plain["model"]:
            continue
        a, b, base = plain["model"][dose], mirrored["model"][dose], plain["baseline"][dose]
        lines.append(f"| {name} | {a['f1']:.3f} / {b['f1']:.3f} / {base['f1']:.3f} | {a['precision']:.3f} / "
                     f"{b['precision']:.3f} | {a['position_rms_px']:.3f} / {b['position_rms_px']:.3f} px |")
    return "\n".join(lines) + (f"\n\n(test split, patterns ≥ {d['thick_from_A']:g} Å; the card's thresholds; "
                                "`fourdcrystal evaluate release release/dataset --tta d4 --doses clean,1e5,1e4,1e3`.)\n")


def speed() -> str:
    """``benchmarks/bench_predict*.json``: end-to-end patterns/s and peak memory of predict, and --follow."""
    runs = [_json(BENCH / f"bench_predict{s}.json") for s in ("_detectors", "", "_fp32")]
    follow = _json(BENCH / "bench_predict_follow.json")
    lines = ["| detector | scan positions | network arithmetic | model patterns/s | baseline patterns/s | peak memory |",
             "|---|---|---|---|---|---|"]
    rows = sorted(((r["detector"], r["scan"], run["precision"], r) for run in runs for r in run["rows"]),
                  key=lambda x: (x[0], x[2] != "bf16", x[1]))
    for det, side, prec, r in rows:
        lines.append(f"| {det}² | {side}×{side} | {prec} | {r['model_per_s']:.1f} | {r['baseline_per_s']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} MB |")
    m = runs[1]["machine"]
    big = [r for r in runs[1]["rows"] if r["detector"] == 256]
    mem = ", ".join(f"{r['peak_rss_mb']:.0f} MB at {r['scan']}×{r['scan']}" for r in big if r["scan"] >= 32)
    f = follow["follow"]
    cmds = "; ".join(f"`{r['command']}`" for r in (*runs, follow))
    return ("\n".join(lines) + f"\n\n(Synthetic lattices of disks, counts; the model and the baseline with the card's "
            f"settings on the same patterns, each rate counting every step it needs from reading to writing; "
            f"{m['cpus']} CPU cores, {m['processor']}, chunk {runs[1]['chunk']}. {cmds}.) Memory does not grow with "
            f"the scan ({mem}). `predict --follow` behind a writer appending a {f['scan']}×{f['scan']} scan of "
            f"{f['detector']}² frames to a `.mib` at {f['arrival_per_s']:g} frames/s: {f['processed_per_s']:.1f} "
            f"patterns/s over its whole run, start-up included, and the result complete "
            f"{f['done_after_last_frame_s']:.1f} s after the last frame.\n")


def speed_brief() -> str:
    """One sentence of the speed table for the README's list of predict's options."""
    run = _json(BENCH / "bench_predict.json")
    rows = [r for r in run["rows"] if r["detector"] == 256]
    model = [r["model_per_s"] for r in rows]
    base = [r["baseline_per_s"] for r in rows]
    mem = max(r["peak_rss_mb"] for r in rows)
    m = run["machine"]
    return (f"on {m['cpus']} CPU cores ({m['processor']}) the shipped model processes {min(model):.0f}–"
            f"{max(model):.0f} patterns of 256² per second ({run['precision']}), the baseline {min(base):.0f}–"
            f"{max(base):.0f}, in under {math.ceil(mem / 100) / 10:.1f} GB whatever the scan's size; `python "
            f"scripts/bench_predict.py release` measures your machine ([every size](docs/reference.md#speed)).\n")


RENDER: dict[str, Callable[[], str]] = {
    "setup": setup, "worked-example": worked_example, "quickstart-table": quickstart_table, "demo-strain": demo_strain, "coverage": coverage,
    "release-table": release_table, "release2-truth": release2_truth, "truth-gate": truth_gate,
    "strain-survey": strain_survey, "strain-survey-240": lambda: strain_survey("strain_survey240.json"),
    "acceptance": acceptance,
    "py4dstem-table": py4dstem_table, "strain-table": strain_table,
    "release-full-table": release_full_table, "tta-table": tta_table, "qz-experiment": qz_experiment, "tilt-table": tilt_table, "py4dstem-full-table": py4dstem_full_table,
    "speed": speed, "speed-brief": speed_brief, "release-table-brief": lambda: release_table(brief=True),
    "strain-lowest": strain_lowest,
}
FILES = (README, ROOT / "docs" / "model.md", ROOT / "docs" / "reference.md")


def render(text: str, skip: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """The text with every block but ``skip`` rendered, and the names of the blocks that changed."""
    changed: list[str] = []

    def sub(m: re.Match) -> str:
        name = m["name"]
        if name in skip:
            return m.group(0)
        if name not in RENDER:
            raise SystemExit(f"README.md: unknown numbers block {name!r}; known: {', '.join(RENDER)}")
        body = RENDER[name]()
        if body != m["body"]:
            changed.append(name)
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(sub, text), changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is out of date")
    ap.add_argument("--skip", action="append", default=[], help="leave this block as it is (repeatable), e.g. setup "
                                                                 "before scripts/measure_setup.py has run")
    args = ap.parse_args(argv)
    stale = []
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        new, changed = render(text, tuple(args.skip))
        found = [m["name"] for m in BLOCK.finditer(text)]
        if args.check:
            stale += [f"{path.relative_to(ROOT)}: {name}" for name in changed]
            continue
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(path)
        print(f"{path.relative_to(ROOT)}: rendered {len(found)} blocks ({', '.join(changed) or 'none changed'})")
    if stale:
        print("out of date (run python scripts/readme_numbers.py): " + "; ".join(stale))
        return 1
    if args.check:
        print("every generated block is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
