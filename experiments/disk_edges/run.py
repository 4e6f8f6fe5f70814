"""Place disks on their edges instead of their whole intensity (experiment, issue 30).

predict places each model peak on the measured pattern's correlation with the probe at the detector's own pixels
(``fine_detector_refine correlation``), and the baseline's disks are that correlation's maxima. The correlation
weighs every count in a disk, so a disk whose intensity is uneven inside (dynamical contrast: the rocking curve
across a CBED disk) is placed off its centre: in the strain surveys' SrTiO3 [001] 600 Å reference the (100) disks
sit 0.74 px inside their exact g (experiments/strain_subpixel/reference_disks.py), and how far changes from
position to position. A disk's edge is where the condenser aperture cuts it, wherever the intensity inside lies.
Here the same correlation runs on the gradient magnitude of the pattern and of the probe (a ring template against
the disks' rims) after a Gaussian of ``sigma`` detector pixels, for the model's peaks (started at the network's
maxima) and the baseline's disks (found on the correlation as before, then placed on the edges), within the model's
search radius; strain is scored as the benchmark does: each method's fit chosen on the tuning series, scored on the
test series on the positions every method fitted.

    python experiments/disk_edges/run.py predict /work/runs/sbench60 --work W --variants edge,edge-s0.5,edge-s1
    python experiments/disk_edges/run.py score /work/runs/sbench60 --work W --variants edge,edge-s0.5,edge-s1 \
        --py4dstem-python .py4dstem-venv/bin/python --json experiments/disk_edges/results_survey60.json

``edge-s1`` is what ``fine_detector_refine edges`` (the shipped card's setting since this experiment) does on
patterns of at least ``low_dose_e`` electrons.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "strain_subpixel"))
from survey import main_for, predict_survey, result_name, score_survey  # noqa: E402  (experiments/strain_subpixel/survey.py)

VARIANTS = {"edge": 0.0, "edge-s0.5": 0.5, "edge-s1": 1.0, "edge-s1.5": 1.5, "edge-s2": 2.0}  # name: Gaussian smoothing before the gradient, px


def found_on_correlation_placed_on_edges(refine, find, sigma_px: float):
    """``find_and_refine`` whose disks (the baseline's) are found on the correlation as before, and whose disks and
    the model's peaks are then both placed on the edges, within the same search radius."""
    from fourdcrystal.detection.baseline import edge_map
    from fourdcrystal.detection.peaks import Peaks

    def both(patterns, probe, config, positions, search_px, mask=None):
        found = find(patterns, probe, config, mask)
        ep, eprobe = edge_map(patterns, sigma_px), edge_map(probe, sigma_px)
        moved = refine(ep, eprobe, positions, config, search_px)
        again = refine(ep, eprobe, [p.pos_px for p in found], config, search_px)
        return [Peaks(r, p.intensity) for p, r in zip(found, again)], moved
    return both


def run_predict(a) -> int:
    import fourdcrystal.prediction.chunks as chunks
    from fourdcrystal.detection.baseline import find_bragg_disks_batch

    plain = chunks.find_and_refine
    for name in a.variants.split(","):
        chunks.find_and_refine = found_on_correlation_placed_on_edges(chunks.refine_positions, find_bragg_disks_batch,
                                                                      VARIANTS[name])
        predict_survey(argparse.Namespace(survey=a.survey, work=Path(a.work) / name, doses=a.doses), lambda s: s, True)
    chunks.find_and_refine = plain
    return 0


def run_score(a) -> int:
    from fourdcrystal.io.vectors import read_vectors

    variants = a.variants.split(",")

    def fill(v, path, cached):
        for m in ("model", "baseline"):
            v.methods[m] = read_vectors(cached / result_name(path), m)
        for name in variants:
            for m in ("model", "baseline"):
                v.methods[f"{m} {name}"] = read_vectors(Path(a.work) / name / result_name(path), m)

    return score_survey(a, fill, ["model"] + [f"model {n}" for n in variants] + ["baseline"]
                        + [f"baseline {n}" for n in variants])


if __name__ == "__main__":
    sys.exit(main_for(__doc__.splitlines()[0], "where each variant's predict results go (WORK/VARIANT)", run_predict,
                      run_score, lambda ap: ap.add_argument("--variants", default="edge,edge-s0.5,edge-s1",
                                                            help=f"comma-separated, of {', '.join(VARIANTS)}")))
