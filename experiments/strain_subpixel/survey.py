"""Parabolic or DFT sub-pixel placement on the strain surveys' fine detectors (experiment, issue 30).

predict places the model's peaks (and the baseline's disks) on the measured pattern's correlation with the
probe at the detector's own pixels, refined to sub-pixel precision by the card's ``subpixel`` mode, chosen on the
data set's validation split (0.0296 Å⁻¹ pixels, parabolic 0.552 px against DFT 0.564 px for the baseline). The
strain surveys' detectors have 1/60 Å⁻¹ pixels. This runs predict again on every survey file with
``subpixel="dft"`` (DFT up-sampling ×16 of the unsmoothed correlation) and scores strain as the benchmark does:
each method's fit chosen on the tuning series, scored on the test series on the positions every method fitted.

    python experiments/strain_subpixel/survey.py predict /work/runs/sbench60 --work W --doses clean,1e5
    python experiments/strain_subpixel/survey.py score /work/runs/sbench60 --work W --doses clean,1e5 \
        --py4dstem-python .py4dstem-venv/bin/python --json experiments/strain_subpixel/results_survey60.json
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path


def survey_files(survey: Path, doses: list[str]) -> dict:
    from fourdcrystal.evaluation.strain_benchmark import SPLITS

    return {s: [t.parent / n for t in sorted((survey / "series" / s).glob("*/truth.json"))
                for n in json.loads(t.read_text())["files"] if any(n.endswith(f"-{d}.h5") for d in doses)]
            for s in SPLITS}


def result_name(path: Path) -> str:
    return f"{path.parent.parent.name}-{path.parent.name}-{path.stem}-bragg.h5"  # the benchmark's own naming


def run_predict(a) -> int:
    from fourdcrystal.detection.detect import settings_from_card
    from fourdcrystal.model.card import RELEASE_WEIGHTS, read_card
    from fourdcrystal.prediction.stage import PredictConfig, predict

    s = settings_from_card(read_card(RELEASE_WEIGHTS))[0]
    st = replace(s, baseline=replace(s.baseline, peaks=replace(s.baseline.peaks, subpixel="dft")))
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    for split, files in survey_files(Path(a.survey), a.doses.split(",")).items():
        for path in files:
            res = work / result_name(path)
            if not res.exists():
                predict(None, str(path), res, PredictConfig(settings=st, baseline=True, tilt=False))
    return 0


def run_score(a) -> int:
    from fourdcrystal.evaluation.strain_benchmark import (FIT_GRID, SPLITS, _mean_error, file_truth,
                                                          py4dstem_vectors, score_fit, summarise)
    from fourdcrystal.io.vectors import read_vectors

    survey = Path(a.survey)
    report = json.loads((survey / "report.json").read_text())
    cached = next(p for p in (survey / "vectors").iterdir() if p.is_dir() and any(p.glob("*-bragg.h5")))
    files = survey_files(survey, a.doses.split(","))
    vectors = {}
    for s in SPLITS:
        vectors[s] = []
        for path in files[s]:
            v = file_truth(path)
            for m in ("model", "baseline"):
                v.methods[m] = read_vectors(cached / result_name(path), m)
                v.methods[m + " dft"] = read_vectors(Path(a.work) / result_name(path), m)
            vectors[s].append(v)
    methods = ["model", "model dft", "baseline", "baseline dft"]
    if a.py4dstem_python:  # its cached runs hold every file of a series folder, so it reads them all
        every = survey_files(survey, [str(d) for d in report["config"]["doses"]])
        for s in SPLITS:
            full = [file_truth(p) for p in every[s]]
            py4dstem_vectors(Path(a.py4dstem_python), every[s], full, report["py4dstem_settings"], cached)
            found = {str(v.file): v.methods["py4DSTEM"] for v in full}
            for v in vectors[s]:
                v.methods["py4DSTEM"] = found[str(v.file)]
        methods.append("py4DSTEM")
    chosen, rows = {}, []
    for m in methods:
        tune = {json.dumps(fit): [score_fit(v, m, fit) for v in vectors["tune"]] for fit in FIT_GRID}
        best = min(tune, key=lambda k: _mean_error(tune[k]))
        chosen[m] = {"fit": json.loads(best), "tune_mean_strain_rms_error_pct": _mean_error(tune[best])}
        rows += [score_fit(v, m, chosen[m]["fit"]) for v in vectors["test"]]
    summary = summarise(rows, methods)
    common = summary["common_by_dose_and_thickness_A"]
    print("dose thickness_A " + " | ".join(methods) + "   (rms strain error %, positions every method fitted)")
    for d in a.doses.split(","):
        for t in sorted(common.get(d, {}), key=float):
            cell = common[d][t]
            print(d, t, " | ".join(f"{cell[m]['strain_rms_error_pct']:.3f}" if cell[m]["strain_rms_error_pct"] is not None
                                   else "-" for m in methods), f"({cell[methods[0]]['fitted']}/{cell[methods[0]]['positions']})")
    if a.json:
        Path(a.json).write_text(json.dumps({"survey": str(survey), "doses": a.doses, "methods": methods,
                                            "chosen_on_tune_series": chosen, "summary": summary, "rows": rows},
                                           indent=1) + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=["predict", "score"])
    ap.add_argument("survey", help="a strain-benchmark folder (fourdcrystal strain-benchmark made it)")
    ap.add_argument("--work", required=True, help="where the DFT-placed predict results go")
    ap.add_argument("--doses", default="clean,1e5")
    ap.add_argument("--py4dstem-python")
    ap.add_argument("--json")
    a = ap.parse_args()
    return run_predict(a) if a.cmd == "predict" else run_score(a)


if __name__ == "__main__":
    sys.exit(main())
