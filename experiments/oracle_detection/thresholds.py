"""Both methods' thresholds read for strain: more, fainter peaks (experiment, issue 30; see README.md).

``run.py`` found that a perfect detector of the reflections the pattern shows gives worse strain than the model,
which reports two to five times as many (faint lattice reflections). Would either method do better still with a
lower threshold? ``tune`` chose the model's ``min_relative`` (0.35 at and above ``low_dose_e``) among the
thresholds within 0.01 of the best F1 (0.25–0.4), and the baseline's (0.005) by F1 alone; here predict runs on the
strain surveys with lower ones (``--thresholds`` the model's, ``--baseline-thresholds`` the baseline's), each
method's fit chosen on the tuning series as the benchmark chooses it.

    python experiments/oracle_detection/thresholds.py predict /work/runs/sbench60 --work T60 --thresholds 0.1,0.2 \
        --baseline-thresholds 0.002,0.001
    python experiments/oracle_detection/thresholds.py score /work/runs/sbench60 --work T60 --thresholds 0.1,0.2 \
        --baseline-thresholds 0.002,0.001 \
        --py4dstem-python .py4dstem-venv/bin/python --json experiments/oracle_detection/thresholds_survey60.json
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "strain_subpixel"))
from survey import main_for, predict_survey, result_name, score_survey  # noqa: E402  (experiments/strain_subpixel/survey.py)


def baseline_threshold(s, t: float):
    return replace(s, baseline=replace(s.baseline, peaks=replace(s.baseline.peaks, min_relative=t)))


def run_predict(a) -> int:
    for t in filter(None, a.thresholds.split(",")):
        predict_survey(argparse.Namespace(survey=a.survey, work=Path(a.work) / f"t{t}", doses=a.doses),
                       lambda s, t=float(t): replace(s, model=replace(s.model, min_relative=t)), False)
    for t in filter(None, a.baseline_thresholds.split(",")):
        predict_survey(argparse.Namespace(survey=a.survey, work=Path(a.work) / f"b{t}", doses=a.doses),
                       lambda s, t=float(t): baseline_threshold(s, t), True)
    return 0


def run_score(a) -> int:
    from fourdcrystal.io.vectors import read_vectors

    thresholds = list(filter(None, a.thresholds.split(",")))
    base = list(filter(None, a.baseline_thresholds.split(",")))

    def fill(v, path, cached):
        for m in ("model", "baseline"):
            v.methods[m] = read_vectors(cached / result_name(path), m)
        for t in thresholds:
            v.methods[f"model t{t}"] = read_vectors(Path(a.work) / f"t{t}" / result_name(path), "model")
        for t in base:
            v.methods[f"baseline t{t}"] = read_vectors(Path(a.work) / f"b{t}" / result_name(path), "baseline")

    return score_survey(a, fill, ["model"] + [f"model t{t}" for t in thresholds] + ["baseline"]
                        + [f"baseline t{t}" for t in base])


def options(ap) -> None:
    ap.add_argument("--thresholds", default="0.1,0.2", help="the model's min_relative, comma-separated")
    ap.add_argument("--baseline-thresholds", default="",
                    help="the baseline's min_relative (its card's: 0.005), comma-separated; each in WORK/bT")


if __name__ == "__main__":
    sys.exit(main_for(__doc__.splitlines()[0], "where each threshold's predict results go (WORK/tT)", run_predict,
                      run_score, options))
