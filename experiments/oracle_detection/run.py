"""A perfect detector on the strain surveys: how low can strain go with predict's placement? (experiment, issue 30)

Issue 30 asks the model's strain error at 10⁵ e⁻ to be at most 0.8 × the tuned baseline's. On the surveys' fine
detectors both methods place their disks the same way (the measured pattern's edge correlation with the probe,
``fine_detector_refine edges``); what the network adds is which disks: their number, and the heights the fit
weighs them by. This replaces the network's peaks with the physical truth: every reflection of each pattern's
specimen (rebuilt from the series' applied strain and rotation), at its exact position, handed to predict as
the model's peaks and placed by predict as it places the model's, within the same search radius. Two oracles:

* ``required``: the reflections evaluate's visibility rule requires (ZOLZ, ≥ 1 % of the zero beam's intensity,
  kinematic |V_g| ≥ 1 % of V_0, a disk radius inside the pattern, clear of neighbours and of HOLZ);
* ``visible``: every ZOLZ reflection the pattern shows at ≥ 0.2 % of the zero beam (``weak_strength``) on the
  same region, crowded and HOLZ-fed ones included;

each peak's height its kinematic |V_g| / |V_0| (capped at 1), what the network is trained to give. Strain is
scored as the benchmark scores it (each method's fit chosen on the tuning series, scored on the test series, on
the positions every method fitted). A detector's choice of disks cannot take strain below its oracle's, give or
take the oracle's own choice of disks.

    python experiments/oracle_detection/run.py predict /work/runs/sbench60 --work W60 --doses clean,1e5
    python experiments/oracle_detection/run.py score /work/runs/sbench60 --work W60 --doses clean,1e5 \
        --py4dstem-python .py4dstem-venv/bin/python --json experiments/oracle_detection/results_survey60.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "strain_subpixel"))
from survey import main_for, result_name, score_survey, survey_files  # noqa: E402  (experiments/strain_subpixel/survey.py)

ORACLES = ("required", "visible")


def exact_reflections(truth: dict, structure, position: int, thickness_A: float, clean: np.ndarray, energy_eV: float,
                      semiangle_mrad: float, k_pixel_invA: float):
    """(q Å⁻¹ (m, 2), |V_g|/|V_0| (m,), status (m,) of the visibility rule, strength (m,), ZOLZ (m,) bool, on the
    scored region (m,) bool) of one series position's reflections: the specimen rebuilt as simulate_series built it
    (a cut box, atoms-mode, no tilt), only its lattice used."""
    from fourdcrystal.simulation.optics import disk_radius_invA
    from fourdcrystal.simulation.truth import VisibilityRule, measure_strength, reflections
    from fourdcrystal.specimens.specimen import CellPlan, build_specimen, period_z_A

    uvw = tuple(truth["zone_axis"])
    box = float(truth["box_A"])
    rot = float(truth["rotation_deg"][position])
    plan = CellPlan("cut", rot, None, 0.0, (box, box), (1, 1), period_z_A(structure.lattice.matrix, uvw))
    # the lattice does not depend on the thickness: a thin slab builds few atoms
    sp = build_specimen(structure, uvw, rot, (0.0, 0.0), box, [5.0], plan=plan,
                        strain=tuple(truth["strain"][position]), tilt_mode="atoms")
    refl = reflections(sp.lattice_A, uvw, list(sp.cell_symbols), sp.cell_frac, energy_eV, semiangle_mrad, thickness_A,
                       clean.shape, (k_pixel_invA, k_pixel_invA))
    radius = disk_radius_invA(semiangle_mrad, energy_eV)
    refl.strength = measure_strength(clean, refl, (k_pixel_invA, k_pixel_invA), radius)
    h, w = clean.shape
    px = refl.q_invA / k_pixel_invA + np.array([h // 2, w // 2])
    margin = radius / k_pixel_invA
    scored = np.all((px >= margin) & (px <= np.array([h - 1, w - 1]) - margin), axis=1)
    status = VisibilityRule().classify(refl, scored, radius, k_pixel_invA)
    vg = np.minimum(refl.vg_V / max(refl.vg0_V, 1e-12), 1.0)
    zolz = refl.laue_zone == 0
    return refl.q_invA, vg, status, np.nan_to_num(refl.strength), zolz, scored


def oracle_peaks(path: Path) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per oracle, per scan position of a series file, (q Å⁻¹ (m, 2), height (m,)) of its reflections, zero beam
    first; strengths read on the series' noise-free file."""
    import h5py

    from fourdcrystal.evaluation.strain_benchmark import CRYSTALS
    from fourdcrystal.simulation.truth import REQUIRED, VisibilityRule

    truth = json.loads((path.parent / "truth.json").read_text())
    clean_path = path.with_name(path.name.rsplit("-", 1)[0] + "-clean.h5")
    with h5py.File(clean_path, "r") as f:
        clean = f["data"][()].reshape(-1, *f["data"].shape[-2:])
        cal = dict(f["data"].attrs)
        thickness = float(f.attrs["thickness_A"])
    structure = CRYSTALS[truth["crystal"]].structure()
    out = {o: [] for o in ORACLES}
    for i in range(len(clean)):
        q, vg, status, strength, zolz, scored = exact_reflections(truth, structure, i, thickness, clean[i],
                                                                   float(cal["energy_eV"]),
                                                                   float(cal["semiangle_mrad"]),
                                                                   float(cal["k_pixel_invA"]))
        zero = np.all(np.abs(q) < 1e-12, axis=1)
        for oracle, keep in (("required", status == REQUIRED),
                             ("visible", zolz & scored & (strength >= VisibilityRule().weak_strength))):
            keep = keep | zero
            order = np.argsort(~zero[keep], kind="stable")  # the zero beam first
            out[oracle].append((q[keep][order], vg[keep][order]))
    return out


def run_predict(a) -> int:
    """predict on every survey file with the model's peaks replaced by the oracle's (results in WORK/ORACLE)."""
    import fourdcrystal.prediction.chunks as chunks
    from fourdcrystal.detection.detect import settings_from_card
    from fourdcrystal.detection.peaks import Peaks
    from fourdcrystal.model.card import RELEASE_WEIGHTS, read_card
    from fourdcrystal.prediction.stage import PredictConfig, predict

    settings = settings_from_card(read_card(RELEASE_WEIGHTS))[0]
    plain = chunks.model_peaks
    current: dict = {}

    def exact(vg, x, probe, settings, usable, dose_e=None):
        # the network ran; its answer is replaced by the truth, on the model's grid (q = 0 at its centre)
        shape = np.array(x.shape[-2:])
        dk = np.broadcast_to(np.asarray(current["dk"], float), (2,))
        assert len(vg) == len(current["peaks"]), "one chunk per file: the scan's positions in order"
        return [Peaks(q / dk + shape // 2, h.astype(np.float32)) for q, h in current["peaks"]]

    chunks.model_peaks = exact
    orig_init = chunks.ChunkProcessor.__init__

    def init(self, model, card, prep, config):
        orig_init(self, model, card, prep, config)
        current["dk"] = prep.dk_invA

    chunks.ChunkProcessor.__init__ = init
    try:
        oracles = a.oracles.split(",")
        for oracle in oracles:
            (Path(a.work) / oracle).mkdir(parents=True, exist_ok=True)
        for files in survey_files(Path(a.survey), a.doses.split(",")).values():
            for path in files:
                todo = [o for o in oracles if not (Path(a.work) / o / result_name(path)).exists()]
                peaks = oracle_peaks(path) if todo else {}  # every oracle's from one rebuild of the specimens
                for oracle in todo:
                    current["peaks"] = peaks[oracle]
                    predict(None, str(path), Path(a.work) / oracle / result_name(path),
                            PredictConfig(settings=settings, baseline=False, tilt=False, chunk_positions=64))
    finally:
        chunks.model_peaks, chunks.ChunkProcessor.__init__ = plain, orig_init
    return 0


def run_score(a) -> int:
    from fourdcrystal.io.vectors import read_vectors

    oracles = a.oracles.split(",")

    def fill(v, path, cached):
        for m in ("model", "baseline"):
            v.methods[m] = read_vectors(cached / result_name(path), m)
        for o in oracles:
            v.methods[f"oracle {o}"] = read_vectors(Path(a.work) / o / result_name(path), "model")

    return score_survey(a, fill, ["model"] + [f"oracle {o}" for o in oracles] + ["baseline"])


if __name__ == "__main__":
    sys.exit(main_for(__doc__.splitlines()[0], "where each oracle's predict results go (WORK/ORACLE)", run_predict,
                      run_score, lambda ap: ap.add_argument("--oracles", default=",".join(ORACLES),
                                                            help=f"comma-separated, of {', '.join(ORACLES)}")))
