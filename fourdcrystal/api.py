"""The stages as Python functions, each taking its typed settings (:mod:`fourdcrystal.settings`).

The command line calls these same functions: ``fourdcrystal predict scan.mib --energy 300e3`` is
``predict("scan.mib", settings=PredictSettings(energy_eV=300e3))``. Every function checks its inputs and
outputs before any work and raises :class:`~fourdcrystal.errors.FourdError` (a ``ValueError``) with one line
that names the file or field at fault. Outputs are written atomically and locked while written; a killed
run resumes where the stage supports it (simulate, train, predict).

A whole run from Python, from crystals to strain maps (``train`` is optional: ``predict`` runs the model
shipped in the package unless given another)::

    import fourdcrystal as fc

    fc.select(fc.SelectSettings(max_crystals=12, out="cat"))
    fc.supercell("cat", fc.SupercellSettings(out="spec"))
    index = fc.simulate("spec", fc.SimulateSettings(out="data", output_px=128))
    result = fc.predict("scan.mib", "scan-bragg.h5", fc.PredictSettings(energy_eV=300e3, semiangle_mrad=1.5))
    maps = fc.strain("scan-bragg.h5", "scan-strain.h5")
    fc.export("scan-bragg.h5", "scan-py4dstem.h5")
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from pathlib import Path

from .atomic import check_new_folder, rank_zero_lock
from .errors import FourdError
from .settings import (EvaluateSettings, PredictSettings, SelectSettings, SimulateSettings, StrainSettings,
                       SupercellSettings, TrainSettings, TuneSettings)

__all__ = ["select", "supercell", "simulate", "train", "tune", "evaluate", "predict", "strain", "export"]


def _check_device(device: str) -> None:
    from .model.inference import pick_device

    pick_device(device, what="`device`")


def select(settings: SelectSettings | None = None, *, api_key: str | None = None, overwrite: bool = False,
           dry_run: bool = False, quiet: bool = True):
    """Build a crystal catalogue grouped by AFLOW prototype, √N-sampled per group.

    Parameters
    ----------
    settings : the catalogue's sources, sampling and output folder (``settings.out``).
    api_key : Materials Project key for the ``mp`` source (else the ``MP_API_KEY`` environment variable).
    overwrite : replace an existing ``settings.out``.
    dry_run : build the catalogue but write nothing.

    Returns
    -------
    The :class:`~fourdcrystal.catalog.catalogue.Catalogue` (crystals with CIF text, prototype labels, space
    groups, lattice parameters in Å and degrees); written to ``settings.out/catalogue.json`` unless ``dry_run``.
    """
    from .catalog import build_catalogue, write_catalogue

    cfg = (settings or SelectSettings()).as_dict()
    out = Path(cfg["out"])
    if not dry_run:  # before any work (or any Materials Project query)
        from .atomic import check_writable

        check_new_folder(out, overwrite)
        check_writable(out.parent, "catalogue")
    with contextlib.nullcontext() if dry_run else rank_zero_lock(out):
        catalogue = build_catalogue(cfg, api_key=api_key, quiet=quiet)
        if not dry_run:
            write_catalogue(catalogue, out, overwrite=overwrite)
    return catalogue


def supercell(catalogue: str | Path, settings: SupercellSettings | None = None, *, overwrite: bool = False) -> dict:
    """Plan oriented specimens (zone axis, in-plane rotation φ in degrees, tilt in mrad, lateral box in Å,
    thicknesses in Å, applied strain in %) from a catalogue folder.

    Parameters
    ----------
    catalogue : the folder ``select`` wrote.
    settings : zone axes, rotations, tilts, boxes, thicknesses, strain and the output folder (``settings.out``).
    overwrite : replace an existing ``settings.out``.

    Returns
    -------
    dict with ``rows`` (one :class:`~fourdcrystal.specimens.supercell.SpecimenRow` per specimen), ``header`` and
    ``out``; ``settings.out`` holds specimens.csv, crystals.json and manifest.json.
    """
    from .specimens.supercell import plan_specimens, write_specimens

    cfg = (settings or SupercellSettings()).as_dict()
    out = Path(cfg["out"])
    check_new_folder(out, overwrite)  # before planning
    with rank_zero_lock(out):
        rows, crystals, header = plan_specimens(catalogue, cfg)
        write_specimens(out, rows, crystals, header, overwrite=overwrite)
    return {"rows": rows, "header": header, "out": out}


def simulate(specimens: str | Path, settings: SimulateSettings | None = None, *, overwrite: bool = False,
             scheduler: str | None = None, progress_bar: bool = True) -> dict:
    """Multislice CBED with V_g / q_z labels and the exact reflections of each pattern, into HDF5 shards.

    Parameters
    ----------
    specimens : the folder ``supercell`` wrote.
    settings : optics (energy in eV, semi-angle in mrad, defocus and Cs in Å), grid, slices (Å), positions,
        phonons, ``workers`` and the output folder (``settings.out``).
    overwrite : start again in an ``settings.out`` that holds another run (a killed run of the same settings
        resumes without it).
    scheduler : a dask.distributed scheduler address (tcp://HOST:PORT) to run the shards on.

    Returns
    -------
    The data set's index (dict): shards, samples, splits by crystal, and ``run`` (patterns, seconds).
    """
    from .simulation.runner import simulate_dataset

    cfg = (settings or SimulateSettings()).as_dict()
    with rank_zero_lock(Path(cfg["out"])):
        return simulate_dataset(specimens, cfg, workers=cfg["workers"], scheduler=scheduler, overwrite=overwrite,
                                progress_bar=progress_bar)


def train(dataset: str | Path, settings: TrainSettings | None = None, *, resume: bool = False,
          overwrite: bool = False, epochs_this_run: int | None = None, init: str | Path | None = None) -> dict:
    """Train the FCU-Net on a data set's train split, selecting on its val split.

    Parameters
    ----------
    dataset : the folder ``simulate`` wrote.
    settings : the network (``model``), epochs, crop (px), batch, learning rate, augmentation (doses in electrons
        per pattern), device and the output folder (``settings.out``).
    resume : continue the run in ``settings.out`` from its last checkpoint.
    overwrite : start over in a ``settings.out`` that holds another run.
    epochs_this_run : stop after this many epochs (a job's time limit); ``resume`` continues.
    init : start from a trained model.pt of the same architecture (fine-tuning).

    Returns
    -------
    dict: ``finished``, ``epoch``, ``epochs``, ``out`` and, when finished, the model ``card``
    (``settings.out/model.pt`` + ``model.json``).
    """
    from .training.loop import train_model

    cfg = (settings or TrainSettings()).as_dict()
    if epochs_this_run is not None and epochs_this_run < 1:
        raise FourdError(f"`epochs_this_run` must be >= 1, got {epochs_this_run}")
    with rank_zero_lock(cfg["out"]):
        return train_model(dataset, cfg, resume=resume, overwrite=overwrite, epochs_this_run=epochs_this_run,
                           init=init)


def tune(model: str | Path, dataset: str | Path, settings: TuneSettings | None = None, *,
         strain_benchmark: str | Path | None = None, write: bool = True) -> dict:
    """Choose the peak settings of a model and of the classical baseline on a data set's validation split.

    Parameters
    ----------
    model : model.pt with its card, or ``"release"`` (the shipped model).
    dataset : a folder ``simulate`` wrote (with the physical truth).
    settings : split, doses (electrons per pattern; None = clean), match radius (px), limit, device.
    strain_benchmark : a ``strain-benchmark`` folder: among the thresholds within 0.01 of the best F1, take the
        one whose vectors fit its tuning series' strain best.
    write : write the settings into the model's card (else only return them).

    Returns
    -------
    The card's ``peaks`` section (dict): both methods' settings and what they scored.
    """
    from .evaluation.tune import TuneConfig
    from .evaluation.tune import tune as run_tune
    from .model.card import card_path, resolve_weights, update_card

    c = (settings or TuneSettings()).as_dict()
    _check_device(c["device"])
    cfg = replace(TuneConfig(), split=c["split"], doses_e=tuple(c["doses"]), match_radius_px=c["match_radius_px"],
                  limit=c["limit"], strain_benchmark=str(strain_benchmark) if strain_benchmark else None)
    if strain_benchmark:  # before the 10-minute sweep
        from .evaluation.strain_benchmark import tuning_files

        tuning_files(strain_benchmark)
    card = card_path(resolve_weights(model))
    if write:  # a read-only card folder fails now, not after the sweep
        from .atomic import check_writable

        check_writable(card.parent, "model card")
    with rank_zero_lock(card) if write else contextlib.nullcontext():
        section = run_tune(model, dataset, cfg, device=c["device"])
        if write:
            update_card(model, "peaks", section)
    return section


def evaluation_folder(model: str | Path, out: str | Path | None = None) -> Path:
    """Where :func:`evaluate` writes its report.

    Parameters
    ----------
    model : the model's weights (``model.pt``).
    out : the report folder asked for, if any.

    Returns
    -------
    ``out``, else the folder ``evaluation`` beside the model's weights.

    >>> evaluation_folder("runs/m/model.pt").as_posix(), evaluation_folder("runs/m/model.pt", "r").as_posix()
    ('runs/m/evaluation', 'r')
    """
    return Path(out) if out else Path(model).parent / "evaluation"


def evaluate(model: str | Path, dataset: str | Path, out: str | Path | None = None,
             settings: EvaluateSettings | None = None) -> dict:
    """Score a model and the tuned classical baseline against the physical truth of a data set's split.

    Parameters
    ----------
    model : model.pt with its card, or ``"release"``.
    dataset : a folder ``simulate`` wrote (with the physical truth).
    out : report folder [default: ``evaluation`` beside the model].
    settings : split, doses (electrons per pattern; None = clean), match radius (px), thresholds, device.

    Returns
    -------
    The report (dict; also ``out/report.json``, ``metrics_vs_thickness.png``, ``worst.png``): precision, recall,
    F1, position errors (px, Å⁻¹), tilt errors (mrad) by dose, thickness (Å), semi-angle and zone axis.
    """
    from .evaluation.evaluate import EvalConfig
    from .evaluation.evaluate import evaluate as run_evaluate

    c = (settings or EvaluateSettings()).as_dict()
    _check_device(c["device"])
    base = EvalConfig()
    cfg = replace(base, split=c["split"], doses_e=tuple(c["doses"]), match_radius_px=c["match_radius_px"],
                  label_peaks=replace(base.label_peaks, min_relative=c["label_min_relative"]),
                  model_min_relative=c["min_relative"], limit=c["limit"], batch_size=c["batch_size"], seed=c["seed"],
                  thick_from_A=c["thick_from_A"], tta=c["tta"], precision=c["precision"])
    out = evaluation_folder(model, out)
    with rank_zero_lock(out):
        return run_evaluate(model, dataset, out, cfg, device=c["device"])


def predict(data: str | Path, out: str | Path | None = None, settings: PredictSettings | None = None, *,
            model: str | Path | None = None, centre_px: tuple[float, float] | None = None,
            scan_shape: tuple[int, int] | None = None, overwrite: bool = False, follow: bool = False) -> dict:
    """Bragg vectors (Å⁻¹) from a 4D-STEM file, with the model and/or the classical baseline.

    Parameters
    ----------
    data : a 4D-STEM file (.npy, HDF5 ``FILE.h5[:/dataset]``, EMD, Merlin .mib, fpd, RosettaSciIO formats).
    out : result HDF5 [default: DATA's name with ``-bragg.h5``, in the current folder]; a summary PNG beside it.
    settings : calibration (``k_pixel_invA`` Å⁻¹, or ``camera_length_mm`` with ``detector_pixel_um`` µm;
        ``energy_eV``, ``semiangle_mrad``), the vacuum ``probe``, ``method``, thresholds, device, chunking.
    model : model.pt with its card [default: the shipped model].
    centre_px : the zero beam on the detector (row, column), px [default: found].
    scan_shape : (rows, columns) for files that do not store it.
    follow : ``data`` is still being written: process it as it grows (``settings.idle``, ``settings.refresh``, s).

    Returns
    -------
    dict: output paths, positions, vectors per method, the method chosen, calibration and the zero beam found,
    patterns/s.
    """
    from .io.readers import split_spec
    from .prediction.stage import FollowSettings, PredictConfig
    from .prediction.stage import predict as run_predict

    c = (settings or PredictSettings()).as_dict()
    _check_device(c["device"])
    cfg = replace(PredictConfig(), chunk_positions=c["chunk"], batch_size=c["batch_size"], baseline=c["baseline"],
                  method=c["method"], save_maps=c["maps"], device=c["device"], min_relative=c["min_relative"],
                  max_peaks=c["max_peaks"], tilt=c["tilt"], qz=c["qz"], tta=c["tta"], precision=c["precision"],
                  prepare_positions=c["prepare_first"])
    out = Path(out) if out else Path(split_spec(data)[0].stem + "-bragg.h5")
    calibration = {k: c[k] for k in ("k_pixel_invA", "camera_length_mm", "detector_pixel_um", "energy_eV",
                                     "semiangle_mrad")}
    return run_predict(model, str(data), out, cfg, calibration, probe=c["probe"], vacuum=c["vacuum"],
                       centre_px=centre_px, scan_shape=scan_shape, scheduler=c["scheduler"], overwrite=overwrite,
                       mask=c["mask"], follow=FollowSettings(idle_s=c["idle"], refresh_s=c["refresh"]) if follow
                       else None)


def strain(vectors: str | Path, out: str | Path | None = None, settings: StrainSettings | None = None, *,
           structure: str | Path | None = None, zone_axis: tuple[int, int, int] | None = None,
           g1: tuple[float, float] | None = None, g2: tuple[float, float] | None = None,
           overwrite: bool = False) -> dict:
    """Strain (ε_xx, ε_yy, ε_xy), in-plane rotation (°) and, where the vectors carry it, tilt (mrad) maps; with
    the crystal as the reference and a tilt, the 3D orientation per position.

    Parameters
    ----------
    vectors : a predict result, or a py4DSTEM BraggVectors file (EMD 1.0).
    out : maps HDF5 [default: VECTORS's name with ``-strain.h5``]; a PNG beside it.
    settings : method, reference (median, a region R0:R1,C0:C1, or crystal), tolerance, weights, scan step (nm).
    structure, zone_axis : with ``settings.reference == "crystal"``: the crystal's file and zone axis [uvw].
    g1, g2 : the reciprocal basis (q_x, q_y) in Å⁻¹ [default: found from the Bragg vector map].

    Returns
    -------
    dict: ``maps`` (exx, eyy, exy as fractions, theta_deg, residual_rms, n_indexed, fit_ok; ``orientation``: None,
    or orientation_matrix, beam_direction_uvw, off_axis_mrad, euler_bunge_deg, fitted, failed: see
    :data:`fourdcrystal.maps.strain.ORIENTATION_CONVENTION`), the reference basis, positions fitted and failed,
    the scan step and the paths written.
    """
    from .maps.strain import StrainConfig, crystal_reference, run_strain

    c = (settings or StrainSettings()).as_dict()
    reference = c["reference"]
    if (reference == "crystal") != (structure is not None and zone_axis is not None) or \
            (reference != "crystal" and (structure is not None or zone_axis is not None)):
        raise FourdError("`reference` crystal goes with `structure` FILE and `zone_axis` U V W, and they with it")
    crystal = crystal_reference(structure, zone_axis) if reference == "crystal" else {}
    cfg = StrainConfig(method=c["method"], reference=reference, g1=g1, g2=g2, tolerance=c["tolerance"],
                       min_vectors=c["min_vectors"], weights=c["weights"], correct=c["correct"],
                       min_indexed_fraction=c["min_indexed_fraction"], scan_step_nm=c["scan_step_nm"], **crystal)
    out = Path(out) if out else Path(Path(vectors).stem + "-strain.h5")
    return run_strain(vectors, out, cfg, overwrite=overwrite)


def export(vectors: str | Path, out: str | Path, *, method: str = "auto", overwrite: bool = False):
    """A predict result's Bragg vectors as a py4DSTEM BraggVectors file (EMD 1.0) that ``py4DSTEM.read`` loads.

    Parameters
    ----------
    vectors : a predict result.
    out : the py4DSTEM file (.h5, .hdf5 or .emd).
    method : "auto" (the vectors predict chose), "model" or "baseline".
    overwrite : replace an existing ``out``.

    Returns
    -------
    The :class:`~fourdcrystal.io.vectors.VectorSet` written (raw vectors in detector pixels; origin and Q pixel
    size in Å⁻¹ in the file's calibration, the crystal tilt in mrad in its metadata where predict fitted it).
    """
    from .atomic import atomic_file, check_new_file, check_not_inputs, output_lock
    from .io.vectors import read_vectors, write_py4dstem_braggvectors

    check_not_inputs("`out`", [out], {"the predict result": vectors})
    if method not in ("auto", "model", "baseline"):
        raise FourdError(f"`method` {method!r}: expected auto, model or baseline")
    vs = read_vectors(vectors, method)
    if "py4dstem_group" in vs.attrs or vs.method not in ("model", "baseline"):
        raise FourdError(f"{vectors}: already a py4DSTEM file; export takes a fourdcrystal predict result")
    out = check_new_file(out, (".h5", ".hdf5", ".emd"), overwrite)
    cal = vs.attrs["calibration"]
    k = cal.get("k_pixel_invA")
    centre = vs.attrs["centre_px"]
    if not k or not all(math.isfinite(c) for c in centre):
        raise FourdError(f"{vectors}: no detector calibration (k_pixel_invA, centre_px) recorded")
    fc = vs.attrs.get("file_calibration") or {}
    r_size, r_units = fc.get("r_pixel_size") or 1.0, fc.get("r_pixel_units") or "pixels"
    with output_lock(out), atomic_file(out) as tmp:
        try:
            write_py4dstem_braggvectors(tmp, vs, tuple(vs.attrs["pattern_shape"]), float(k), tuple(centre),
                                        float(r_size), r_units)
        except OSError as exc:
            raise FourdError(f"cannot write {out}: {exc.strerror or exc}") from None
    return vs
