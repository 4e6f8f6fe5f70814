"""Blend the two placements of the model's peaks on the strain surveys (experiment, issue 30).

predict places each model peak twice over, in effect: at the maximum of the network's V_g (a parabola on the
model's 0.0296 Å⁻¹ grid, what evaluate scores on the test split) and on the measured pattern's correlation with
the probe at the detector's own pixels (``fine_detector_refine correlation``, the default on finer detectors).
Their errors come from different places (the network's output; the pattern's noise and dynamical contrast), so a
weighted mean of the two could beat either. The weight is chosen on the tuning series, with each blend's strain
fit, as the benchmark chooses fits; scored on the test series on the positions every method fitted.

    python experiments/placement_blend/run.py predict /work/runs/sbench240 --work W --doses clean,1e5
    python experiments/placement_blend/run.py score /work/runs/sbench240 --work W --doses clean,1e5 \
        --py4dstem-python .py4dstem-venv/bin/python --json experiments/placement_blend/results_sbench240.json
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "strain_subpixel"))
from survey import add_py4dstem, load_survey, main_for, predict_survey, print_common, result_name  # noqa: E402  (experiments/strain_subpixel/survey.py)

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the V_g placement's share


def run_predict(a) -> int:
    return predict_survey(a, lambda s: replace(s, model=replace(s.model, fine_detector_refine="model_grid",
                                                                refine="vg")), False)


def run_score(a) -> int:
    from fourdcrystal.evaluation.strain_benchmark import choose_and_score, mean_strain_error, score_fit, summarise
    from fourdcrystal.io.vectors import VectorSet, read_vectors

    def fill(v, path, cached):
        corr = read_vectors(cached / result_name(path), "model")
        vg = read_vectors(Path(a.work) / result_name(path), "model")
        if not np.array_equal(corr.offsets, vg.offsets):
            raise SystemExit(f"{path}: the two placements hold different peaks")
        for w in WEIGHTS:
            v.methods[f"model vg {w:g}"] = VectorSet(corr.scan_shape, corr.offsets, w * vg.q + (1 - w) * corr.q,
                                                     corr.intensity, corr.units, corr.bin_width, corr.source, "model")
        v.methods["baseline"] = read_vectors(cached / result_name(path), "baseline")

    survey = Path(a.survey)
    report, cached, files, vectors = load_survey(survey, a.doses.split(","), fill)
    blends = [f"model vg {w:g}" for w in WEIGHTS]
    others = ["baseline"]
    if a.py4dstem_python:
        add_py4dstem(Path(a.py4dstem_python), survey, report, cached, vectors)
        others.append("py4DSTEM")
    chosen, rows = choose_and_score(vectors, blends + others)
    # the blend the tuning series choose, per dose (predict knows the counts per pattern)
    by_dose = {}
    for d in a.doses.split(","):
        per = {m: mean_strain_error([r for r in (score_fit(v, m, chosen[m]["fit"]) for v in vectors["tune"]
                                           if v.dose == d)]) for m in blends}
        by_dose[d] = min(per, key=per.get)
    rows += [r | {"method": "model blend (tuned)"} for r in rows if r["method"] == by_dose.get(r["dose"])]
    methods = blends + ["model blend (tuned)"] + others
    summary = summarise(rows, methods)
    print("chosen on the tuning series per dose:", by_dose)
    print_common(summary, methods, a.doses.split(","))
    if a.json:
        Path(a.json).write_text(json.dumps({"survey": str(survey), "doses": a.doses, "methods": methods,
                                            "chosen_on_tune_series": chosen, "blend_by_dose": by_dose,
                                            "summary": summary, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main_for(__doc__.splitlines()[0], "where the V_g-placed predict results go", run_predict, run_score))
