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


def load_survey(survey: Path, doses: list[str] | None, fill) -> tuple[dict, Path, dict, dict]:
    """A strain-benchmark folder's report, the folder of that report's predict results, the series files of ``doses`` (None:
    every dose) by split, and each file's truth with the methods ``fill(v, path, cached)`` puts into ``v.methods``."""
    from fourdcrystal.evaluation.strain_benchmark import SPLITS, file_truth, vectors_folder

    report = json.loads((survey / "report.json").read_text())
    # the report's own predict results (a survey re-run with another card keeps the earlier ones beside them)
    cached = vectors_folder(survey, report["model_weights_sha256"], report["peak_settings"])
    files = survey_files(survey, doses if doses is not None else [str(d) for d in report["config"]["doses"]])
    vectors = {}
    for s in SPLITS:
        vectors[s] = []
        for path in files[s]:
            v = file_truth(path)
            fill(v, path, cached)
            vectors[s].append(v)
    return report, cached, files, vectors


def add_py4dstem(python: Path, survey: Path, report: dict, cached: Path, vectors: dict) -> None:
    """py4DSTEM's vectors (the benchmark's cached runs) added to every file of ``vectors``; a cached run holds every
    file of its series folder, so every file is read, whichever doses ``vectors`` holds."""
    from fourdcrystal.evaluation.strain_benchmark import SPLITS, file_truth, py4dstem_vectors

    every = survey_files(survey, [str(d) for d in report["config"]["doses"]])
    for s in SPLITS:
        full = [file_truth(p) for p in every[s]]
        py4dstem_vectors(python, every[s], full, report["py4dstem_settings"], cached)
        found = {str(v.file): v.methods["py4DSTEM"] for v in full}
        for v in vectors[s]:
            v.methods["py4DSTEM"] = found[str(v.file)]


def print_common(summary: dict, methods: list[str], doses: list[str]) -> None:
    common = summary["common_by_dose_and_thickness_A"]
    print("dose thickness_A " + " | ".join(methods) + "   (rms strain error %, positions every method fitted)")
    for d in doses:
        for t in sorted(common.get(d, {}), key=float):
            cell = common[d][t]
            print(d, t, " | ".join(f"{cell[m]['strain_rms_error_pct']:.3f}" if cell[m]["strain_rms_error_pct"] is not None
                                   else "-" for m in methods), f"({cell[methods[0]]['fitted']}/{cell[methods[0]]['positions']})")


def predict_survey(a, change, baseline: bool) -> int:
    """predict on every survey file of ``a.doses`` with the card's settings as ``change(settings)`` returns them,
    results in ``a.work`` (kept and reused)."""
    from fourdcrystal.detection.detect import settings_from_card
    from fourdcrystal.model.card import RELEASE_WEIGHTS, read_card
    from fourdcrystal.prediction.stage import PredictConfig, predict

    settings = change(settings_from_card(read_card(RELEASE_WEIGHTS))[0])
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    for files in survey_files(Path(a.survey), a.doses.split(",")).values():
        for path in files:
            res = work / result_name(path)
            if not res.exists():
                predict(None, str(path), res, PredictConfig(settings=settings, baseline=baseline, tilt=False))
    return 0


def run_predict(a) -> int:
    return predict_survey(a, lambda s: replace(s, baseline=replace(s.baseline, peaks=replace(s.baseline.peaks,
                                                                                             subpixel="dft"))), True)


def run_score(a) -> int:
    from fourdcrystal.io.vectors import read_vectors

    def fill(v, path, cached):
        for m in ("model", "baseline"):
            v.methods[m] = read_vectors(cached / result_name(path), m)
            v.methods[m + " dft"] = read_vectors(Path(a.work) / result_name(path), m)

    return score_survey(a, fill, ["model", "model dft", "baseline", "baseline dft"])


def score_survey(a, fill, methods: list[str]) -> int:
    """Each of ``methods`` (as ``fill`` puts them into each file's vectors; py4DSTEM added with
    ``a.py4dstem_python``) scored on ``a.survey``'s test series with its fit chosen on the tuning series; prints
    the rows on the positions every method fitted and writes ``a.json``."""
    from fourdcrystal.evaluation.strain_benchmark import choose_and_score, summarise

    survey = Path(a.survey)
    report, cached, files, vectors = load_survey(survey, a.doses.split(","), fill)
    methods = list(methods)
    if a.py4dstem_python:
        add_py4dstem(Path(a.py4dstem_python), survey, report, cached, vectors)
        methods.append("py4DSTEM")
    chosen, rows = choose_and_score(vectors, methods)
    summary = summarise(rows, methods)
    print_common(summary, methods, a.doses.split(","))
    if a.json:
        Path(a.json).write_text(json.dumps({"survey": str(survey), "doses": a.doses, "methods": methods,
                                            "chosen_on_tune_series": chosen, "summary": summary, "rows": rows},
                                           indent=1) + "\n")
    return 0


def main_for(description: str, work_help: str, run_predict, run_score, extra=None) -> int:
    """The command line the survey experiments share: predict | score SURVEY --work W (``extra(parser)`` adds an
    experiment's own options)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("cmd", choices=["predict", "score"])
    ap.add_argument("survey", help="a strain-benchmark folder (fourdcrystal strain-benchmark made it)")
    ap.add_argument("--work", required=True, help=work_help)
    if extra is not None:
        extra(ap)
    ap.add_argument("--doses", default="clean,1e5")
    ap.add_argument("--py4dstem-python")
    ap.add_argument("--json")
    a = ap.parse_args()
    return run_predict(a) if a.cmd == "predict" else run_score(a)


if __name__ == "__main__":
    sys.exit(main_for(__doc__.splitlines()[0], "where the DFT-placed predict results go", run_predict, run_score))
