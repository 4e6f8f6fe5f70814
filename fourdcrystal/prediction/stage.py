"""`fourdcrystal predict`: a trained model over a 4D-STEM file, streamed in chunks of scan positions.

For each chunk: read the patterns (:mod:`fourdcrystal.io.readers`), take the virtual
bright-field signal, resample the patterns onto the model's grid (pixel size and q = 0 of the
model card, :mod:`fourdcrystal.prediction.calibration`), run the network with the vacuum probe, and find the
Bragg peaks of the predicted V_g. ``baseline=True`` also runs the classical detector
(:mod:`fourdcrystal.detection.baseline`) on the detector's own pixels (shifted by whole pixels only, so
that the zero beam sits at the centre), with its tuned lengths in pixels scaled to them; on a
detector coarser than the model's grid, on that grid.

The result is one HDF5 file (:mod:`fourdcrystal.io.results`). Work goes to ``RESULT.partial`` and
becomes ``RESULT`` by a rename when every position is done. A killed run resumes from the partial
file: the positions it committed are not redone. ``scheduler`` spreads chunks over a
dask.distributed cluster (:mod:`fourdcrystal.prediction.chunks`); the client alone writes. What the chunk
workers need besides the patterns is prepared once (:mod:`fourdcrystal.prediction.preparation`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from ..atomic import check_writable, output_lock
from .chunks import ChunkProcessor, chunks_distributed, chunks_local
from ..config import default
from ..detection.detect import (
    TILT_SOURCES,
    DetectionSettings,
    model_tilt_source,
    settings_from_card,
    tilt_settings_from_card,
    with_threshold,
)
from ..errors import FourdError
from ..io.readers import Scan4D, file_fingerprint, open_4d, split_spec
from ..io.results import SCHEMA, VECTOR_CHUNK, VECTOR_FIELDS, ResultFile, estimate_output_bytes, write_error
from .preparation import DataCalibration, Preparation, calibration_warnings, prepare, resolve_calibration
from ..progress import bar
from ..detection.tilt import TiltSettings

log = logging.getLogger("fourdcrystal")


@dataclass(frozen=True)
class PredictConfig:
    # defaults written once, in the config schema (fourdcrystal/config.py)
    chunk_positions: int = default("predict", "chunk")  # scan positions read and processed together
    batch_size: int = default("predict", "batch_size")  # patterns per network call
    min_relative: float | None = default("predict", "min_relative")  # model V_g threshold; None = the card's
    method: Literal["auto", "model", "baseline", "both"] = default("predict", "method")  # whose vectors are the result
    baseline: bool = default("predict", "baseline")  # also run the classical detector
    settings: DetectionSettings | None = None  # both methods' peak settings; None = the card's (tuned) ones
    margin_disk_radii: float = 1.0  # no peaks closer than this many disk radii to where the data end
    max_peaks: int | None = default("predict", "max_peaks")  # per pattern and method; None = the card's (400)
    save_maps: bool = default("predict", "maps")  # write the full predicted vg and qz (float16, scan × H × W each)
    device: str = default("predict", "device")
    tta: Literal["none", "flips", "d4"] = default("predict", "tta")  # test-time mirrors (model.inference.Predictor)
    # auto | fp32 | bf16: the network's arithmetic; predict resolves auto for this machine (the file records which)
    precision: Literal["auto", "fp32", "bf16"] = default("predict", "precision")
    # each method's crystal tilt per position (fourdcrystal.detection.tilt), mrad; None (auto): the model's from its q_z where
    # the card shows that ahead of the Laue fit at the scan's dose, else none
    tilt: bool | None = default("predict", "tilt")
    tilt_methods: tuple = ()  # whose vectors get a tilt; resolved from ``tilt`` and the card
    tilt_settings: TiltSettings | None = None  # how the tilt is fitted; None = the card's (tuned) ones
    tilt_model: str | None = None  # the model's tilt: "qz" (its q_z), "laue", "combined" or "learned"; None = the card's best
    tilt_qz_sigma_mrad: float | None = None  # the q_z tilt's standard error per component; None = the card's
    qz: bool | None = default("predict", "qz")  # q_z of each vector; None: when the card shows skill
    # the zero beam, dead pixels and counts per pattern from the first N scan positions only (None: from patterns
    # spread over the scan); --follow sets it to the first chunk, and an offline run given the same N gives the
    # same vectors
    prepare_positions: int | None = None
    compile: bool = False  # the network through torch.compile (model.inference.Predictor)


@dataclass(frozen=True)
class FollowSettings:
    """``predict --follow``: process a file while the detector writes it (:func:`fourdcrystal.io.readers.open_growing`)."""

    idle_s: float = default("predict", "idle")  # stop when the file has not grown for this long, s
    refresh_s: float = default("predict", "refresh")  # the live picture (OUT with .png) and the rate line, s
    poll_s: float = 0.1  # how often the file's size is read while waiting, s


class _Arrivals:
    """Waits for a growing file's positions: ``wait(n)`` returns once ``n`` are there, or raises :class:`FollowIdle`
    when the file has not grown for ``idle_s``; keeps the arrival rate."""

    def __init__(self, available, total: int, settings: FollowSettings):
        self.available, self.total, self.s = available, total, settings
        self.t0 = self.last_t = time.perf_counter()
        self.first = self.last_n = available()

    def wait(self, n: int) -> None:
        n = min(n, self.total)
        while True:
            have = self.available()
            now = time.perf_counter()
            if have > self.last_n:
                self.last_n, self.last_t = have, now
            if have >= n:
                return
            if now - self.last_t > self.s.idle_s:
                raise FollowIdle(have)
            time.sleep(self.s.poll_s)

    def rate(self) -> float:
        """Positions per second that arrived since following began."""
        dt = self.last_t - self.t0
        return (self.last_n - self.first) / dt if dt > 0 else float("nan")


class FollowIdle(Exception):
    """The followed file stopped growing before the scan was complete (``args[0]``: positions in it)."""


def _card_test_table(card: dict) -> tuple[dict, str]:
    """The card's own test evaluation by method and dose: of the thick patterns where it has them, else of all
    (empty without an evaluation), and which of the two, in words."""
    ev = card.get("release", {}).get("test_evaluation", {})
    thick = ev.get("by_dose_thick")
    where = f"patterns ≥ {ev.get('thick_from_A', 0):g} Å thick" if thick else "its test split"
    return thick or ev.get("by_dose") or {}, where


def qz_has_skill(card: dict) -> bool:
    """True when the card's own test evaluation (clean, the thick patterns) has the model's q_z error at most half
    that of predicting q_z = 0: only then are its q_z values per vector worth writing by default (the tilt fitted
    over a pattern's q_z is judged apart, by :func:`fourdcrystal.detection.detect.model_tilt_source`)."""
    row = _card_test_table(card)[0].get("model", {}).get("clean", {})
    qz, qz0 = row.get("qz_mae_invA"), row.get("qz_mae_zero_invA")
    return qz is not None and bool(qz0) and qz <= 0.5 * qz0


def quality_note(card: dict) -> str | None:
    """A note when the card's own test evaluation has the model behind the classical baseline, or its q_z
    error no lower than that of predicting q_z = 0 (the label's mean |q_z|)."""
    table, where = _card_test_table(card)
    notes = []
    try:
        model_row, base = table["model"]["clean"], table["baseline"]["clean"]["f1"]
        f1 = model_row["f1"]
    except (KeyError, TypeError):
        return None
    if f1 < base:
        notes.append(f"model {card.get('name', '?')}: on {where} its Bragg-peak F1 is {f1:.2f}, below the classical "
                     f"baseline's {base:.2f} (see its card); set `baseline` to get both")
    qz, qz0 = model_row.get("qz_mae_invA"), model_row.get("qz_mae_zero_invA")
    if qz is not None and qz0 and qz >= 0.9 * qz0:
        notes.append(f"model {card.get('name', '?')}: on {where} its q_z error ({qz:.4f} Å⁻¹) is not below that of "
                     f"predicting q_z = 0 ({qz0:.4f} Å⁻¹); its q_z values carry no information yet")
    return "; ".join(notes) or None


def check_method(method: str) -> None:
    """One line for a ``--method`` that is not one of :data:`fourdcrystal.detection.detect.PREDICT_METHODS`."""
    from ..detection.detect import PREDICT_METHODS

    if method not in PREDICT_METHODS:
        raise FourdError(f"`method` {method!r}: expected one of {', '.join(PREDICT_METHODS)}")


def resolve_method(method: str, card: dict, counts_per_pattern: float) -> tuple[str, str]:
    """The method whose vectors are the result, and why: ``model`` or ``baseline`` as asked, else (``auto``,
    ``both``) :func:`fourdcrystal.detection.detect.choose_method` on the card's test figures at the scan's counts."""
    from ..detection.detect import choose_method

    check_method(method)
    if method in ("model", "baseline"):
        return method, f"`method` {method}"
    chosen, why = choose_method(card, counts_per_pattern)
    return chosen, f"`method` {method}: {why}"


def check_memory(pattern_shape, grid_shape, config: PredictConfig, width: int) -> None:
    """Refuse, before any output, a chunk and batch whose arrays would not fit in memory: each chunk's patterns
    as read and as float32, resampled onto the model's grid with the peak maps, and the network's activations
    (:func:`fourdcrystal.memory.network_bytes`)."""
    from ..memory import check_fits, network_bytes

    px, grid = int(np.prod(pattern_shape)), int(np.prod(grid_shape))
    chunk = config.chunk_positions
    need = 1.25 * (chunk * (3 * 4 * px + 4 * 4 * grid) + network_bytes(config.batch_size, grid, width))
    check_fits(need, f"predict with `chunk` {chunk} and `batch_size` {config.batch_size} on "
               f"{pattern_shape[0]}×{pattern_shape[1]} patterns", "lower `chunk` or `batch_size`")


def predict(model_path: str | Path | None, data: str, out: str | Path, config: PredictConfig = PredictConfig(),
            calibration: dict | None = None, probe: str | None = None, vacuum: str | None = None,
            centre_px: tuple[float, float] | None = None, scan_shape: tuple[int, int] | None = None,
            scheduler: str | None = None, overwrite: bool = False, mask: str | None = None,
            follow: FollowSettings | None = None) -> dict:
    """Run a model (and optionally the baseline) over a 4D-STEM file; write ``out`` and a PNG summary.

    Peak settings: ``config.settings``, else the card's (tuned on a validation split by
    ``fourdcrystal tune``), else the defaults; ``config.min_relative`` overrides the model's
    threshold. ``mask``: a 2D file of the detector's shape, nonzero where pixels are to be ignored.

    ``calibration`` holds the options of :func:`resolve_calibration` (k_pixel_invA,
    camera_length_mm, detector_pixel_um, energy_eV, semiangle_mrad). Returns a summary dict:
    output paths, positions, vectors per method, patterns/s and the time spent per step.
    ``model_path`` None (or ``"release"``) runs the model shipped inside the package.

    ``follow``: ``data`` is still being written (a Merlin .mib or an HDF5 file in SWMR mode): chunks are processed
    as their frames land, the live picture (OUT with .png) is redrawn every ``follow.refresh_s`` seconds, and the
    run ends when the scan is complete; if the file stops growing for ``follow.idle_s`` seconds first, the
    positions done are kept in OUT.partial (rerun to go on) and :class:`FourdError` says so. Preparation then uses
    the first chunk (``config.prepare_positions``).
    """
    from ..atomic import check_not_inputs
    from ..model.card import card_path, load_model, resolve_weights
    from ..versions import software_versions

    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    source = split_spec(data)[0]
    model_path = resolve_weights(model_path)
    if out.suffix.lower() == ".png":
        raise FourdError(f"`out` {out}: the result is an HDF5 file and its PNG summary is written beside it with the "
                         f"suffix .png; give a name ending in .h5 (nothing was written)")
    # the result, its PNG summary and its partial file must be none of the files this run reads
    check_not_inputs("`out`", [out, out.with_suffix(".png"), partial], {
        "the input data file": source, "the model's weights": model_path, "the model's card": card_path(model_path),
        "the probe file": split_spec(probe)[0] if probe else None, "the mask file": split_spec(mask)[0] if mask else None})
    if out.exists() and not overwrite:
        raise FourdError(f"{out} already exists; pass `overwrite` to replace it")
    model, card = load_model(model_path, inference=True)  # checks weights against the card before any work
    if config.chunk_positions < 1:
        raise FourdError(f"`chunk` must be >= 1, got {config.chunk_positions}")
    check_method(config.method)  # before any work
    if config.tilt_model not in (None, *TILT_SOURCES):
        raise FourdError(f"tilt_model {config.tilt_model!r}: expected one of {', '.join(TILT_SOURCES)}")
    tuned = True
    if config.settings is None:
        settings, tuned = settings_from_card(card)
        config = replace(config, settings=with_threshold(settings, config.min_relative))
    if config.max_peaks is not None:
        if config.max_peaks < 1:
            raise FourdError(f"`max_peaks` must be >= 1, got {config.max_peaks}")
        st = config.settings
        config = replace(config, settings=replace(
            st, model=replace(st.model, max_peaks=config.max_peaks),
            baseline=replace(st.baseline, peaks=replace(st.baseline.peaks, max_peaks=config.max_peaks))))
    if config.qz is None:
        config = replace(config, qz=qz_has_skill(card))
    if config.tilt_settings is None:
        config = replace(config, tilt_settings=tilt_settings_from_card(card)[0])
    if config.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise FourdError(f"`device` {config.device}: this machine has no CUDA GPU that torch can use")
    from ..model.inference import pick_device, resolve_precision

    # resolved here, so that the fingerprint and the file name the arithmetic that ran (a run resumed on a machine
    # without native bf16 is then a new run, not a mixed one)
    config = replace(config, precision=resolve_precision(config.precision, pick_device(config.device, "`device`"),
                                                         int(card["architecture"].get("width", 16))))
    if follow is not None and scheduler:
        raise FourdError("`follow` runs in this process; leave out `scheduler`")
    scan, arrivals = _open_scan(data, scan_shape, follow, config)
    if arrivals is not None and config.prepare_positions is None:
        config = replace(config, prepare_positions=min(config.chunk_positions, len(scan)))
    with scan:
        if np.dtype(scan.dtype).kind == "c":
            raise FourdError(f"{data}: complex-valued patterns ({np.dtype(scan.dtype)}); expected real counts or "
                             f"intensities (take the modulus squared of a wave function first)")
        if len(scan) == 0:
            raise FourdError(f"{data}: the scan has no positions ({scan.scan_shape[0]}×{scan.scan_shape[1]})")
        cal = resolve_calibration(str(data), scan.calibration, **(calibration or {}))
        # the Laue fit and the learned read need the energy: asked for (tilt), or asked for by name
        named = config.tilt is None and config.tilt_model in ("combined", "learned")
        if cal.energy_eV is None and (config.tilt or named):
            raise FourdError(f"`tilt` needs the beam energy: {data} does not record it; give `energy_eV` (eV)")
        if arrivals is not None:  # the patterns the preparation reads must be in the file
            try:
                arrivals.wait(max(config.prepare_positions, _region_end(vacuum, scan.scan_shape)))
            except FollowIdle as idle:
                raise FourdError(f"{data}: no new frames for {follow.idle_s:g} s at {idle.args[0]} of {len(scan)} "
                                 f"positions, before the {config.prepare_positions} the preparation reads; "
                                 f"nothing was written") from None
        prep = prepare(scan, card, cal, probe, vacuum, centre_px, mask, config.margin_disk_radii,
                       first=config.prepare_positions)
        counts = prep.counts_per_pattern  # from the patterns the mean pattern read
        chosen, reason = resolve_method(config.method, card, counts)
        config = replace(config, baseline=config.baseline or config.method in ("baseline", "both")
                         or chosen == "baseline")
        methods = ("model", "baseline") if config.baseline else ("model",)
        tilt_reason = ""
        if config.tilt is not False:
            source, sigma, tilt_reason = (model_tilt_source(card, counts, cal.energy_eV is not None)
                                          if config.tilt_model is None
                                          else (config.tilt_model, None, f"tilt_model {config.tilt_model} as given"))
            # by default the model's tilt alone, where the card shows one of its own ahead of the Laue fit
            tilt_methods = methods if config.tilt else (("model",) if source in ("qz", "combined", "learned") else ())
            config = replace(config, tilt=bool(tilt_methods), tilt_methods=tilt_methods, tilt_model=source,
                             tilt_qz_sigma_mrad=config.tilt_qz_sigma_mrad or sigma)
        if config.tilt and config.tilt_model == "qz" and not config.tilt_qz_sigma_mrad:
            raise FourdError("the model's q_z tilt needs its standard error (tilt_qz_sigma_mrad): the card's test "
                             "evaluation has none")
        # a file still being written grows between runs: it is known by its first chunk's frames instead
        growing = (None if arrivals is None else
                   {"first_frames_sha256": hashlib.sha256(scan.read(0, config.prepare_positions).tobytes()).hexdigest()})
        fingerprint = resume_fingerprint(str(data), list(scan.shape), card["weights_sha256"], config, cal, prep,
                                         growing)
        attrs = {"schema": SCHEMA, "complete": False, "data": str(data), "data_format": scan.format,
                 "scan_shape": list(scan.scan_shape), "pattern_shape": list(scan.pattern_shape),
                 "model": str(model_path), "model_weights_sha256": card["weights_sha256"],
                 "model_k_sampling_invA": list(prep.dk_invA),
                 "model_shape": prep.grid_shape, "dead_or_masked_pixels": prep.dead_pixels,
                 "calibration": json.dumps(asdict(cal)), "file_calibration": json.dumps(scan.calibration, default=str),
                 "centre_px": prep.centre_px,
                 "centre_source": prep.centre_source, "probe_source": prep.probe_source,
                 "method": chosen, "method_requested": config.method, "method_reason": reason,
                 "tilt_model": config.tilt_model or "", "tilt_model_reason": tilt_reason,
                 "tilt_methods": list(config.tilt_methods),
                 "counts_per_pattern": counts,
                 "bf_radius_px": prep.bf_radius_px, "config": json.dumps(asdict(config), default=str),
                 "software": json.dumps(software_versions()),
                 "units": "q in Å⁻¹ from the zero beam along detector axes 0 (qx) and 1 (qy); positions "
                          "p = row·scan_y + column; vectors of p are offsets[p]:offsets[p+1]"}
        check_memory(scan.pattern_shape, prep.grid_shape, config, int(card["architecture"].get("width", 16)))
        check_writable(out.parent, "result")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FourdError(f"cannot create the folder of `out` {out}: {exc.strerror}") from None
        need = estimate_output_bytes(len(scan), prep.grid_shape, methods, config.save_maps)
        if config.baseline:  # the baseline's map and sums on its own grid
            need += 3 * 8 * int(np.prod(prep.baseline_grid.grid_shape))
        have = shutil.disk_usage(out.parent).free + (partial.stat().st_size if partial.exists() else 0)
        if have < need:
            raise FourdError(f"not enough free space for {out}: about {need / 1e6:.1f} MB needed, "
                             f"{have / 1e6:.1f} MB free on {out.parent}")
        with output_lock(out):
            # notes only once the inputs are good and the output is ours: an error is the one line printed
            note = quality_note(card)
            warned = [note] if note else []  # also drawn on the summary
            if note:
                log.warning("%s", note)
            if not tuned:
                log.info("%s: its card has no tuned peak settings (fourdcrystal tune); using the defaults",
                         model_path)
            for w in [*scan.notes, *calibration_warnings(card, cal)]:
                log.warning("%s: %s", data, w)
                warned.append(w)
            if overwrite and partial.exists():  # only under the lock: never another live run's partial
                partial.unlink()
            try:
                summary, run = _run_chunks(scan, data, partial, fingerprint, attrs, prep, methods, config, card,
                                           model, model_path, scheduler, arrivals, follow, out)
            except FollowIdle as idle:
                done = _positions_done(partial)
                raise FourdError(f"{data}: no new frames for {follow.idle_s:g} s at {idle.args[0]} of {len(scan)} "
                                 f"positions; the {done} processed are kept in {partial}: rerun the same command to "
                                 f"go on") from None
            os.replace(partial, out)
    caps = {"model": config.settings.model.max_peaks, "baseline": config.settings.baseline.peaks.max_peaks}
    for m in methods:
        at_cap = int((np.asarray(summary[m]["count"]) >= caps[m]).sum())
        if at_cap:
            log.warning("%s: %d of %d positions reached the cap of %d peaks; more may be there (raise `max_peaks`)",
                        m, at_cap, np.asarray(summary[m]["count"]).size, caps[m])
            warned.append(f"{m}: {at_cap} positions reached the cap of {caps[m]} peaks")
    png = out.with_suffix(".png")
    from ..plots import prediction_summary

    try:
        counts_text = "not counts" if not np.isfinite(counts) else f"{counts:.3g} counts per pattern"
        prediction_summary(summary, card, f"{out.name}: model {card.get('name', '?')}; the result is the {chosen} "
                                          f"vectors ({config.method}; {counts_text})", png,
                           checks={"centre_px": prep.centre_px, "centre_source": prep.centre_source,
                                   "caps": {m: caps[m] for m in methods}, "warnings": warned})
    except OSError as exc:  # the result is complete; only its picture is missing
        log.warning("could not write %s: %s; the result %s is complete", png, exc.strerror or exc, out)
    tilt = {}
    if config.tilt_methods:  # how many positions each tilted method fitted (a failed fit is NaN)
        import h5py

        with h5py.File(out, "r") as f:
            tilt = {m: {"fitted": int(np.isfinite(f[m]["tilt_mrad"][()]).all(-1).sum()),
                        "source": {"qz": "q_z", "combined": "q_z and Laue fit combined",
                                   "learned": "learned tilt read"}.get(
                            config.tilt_model, "Laue fit") if m == "model" else "Laue fit"}
                    for m in config.tilt_methods}
    return {"out": str(out), "png": str(png), **run, "tilt": tilt, "tilt_reason": tilt_reason,
            "vectors": {m: summary[m]["vectors"] for m in methods}, "calibration": asdict(cal),
            "method": chosen, "method_reason": reason,
            "centre_px": prep.centre_px, "centre_source": prep.centre_source, "probe_source": prep.probe_source,
            "grid_shape": prep.grid_shape}


def method_grids(prep: Preparation) -> dict:
    """Per method, (shape, pixel size in Å⁻¹) of the grid its peaks are found on."""
    bg = prep.baseline_grid
    return {"model": (tuple(prep.grid_shape), tuple(prep.dk_invA)), "baseline": (tuple(bg.grid_shape), tuple(bg.dk_invA))}


# Every PredictConfig field is part of a run's resume fingerprint except these, which cannot change its numbers (a
# field added to PredictConfig is fingerprinted unless listed here; tests/test_predict.py checks both ways).
FINGERPRINT_EXCLUDED = ("device",)


def resume_fingerprint(data: str, shape: list, weights_sha256: str, config: PredictConfig, cal: DataCalibration,
                       prep: Preparation, data_file: dict | None = None) -> str:
    """What a partial result must match to be resumed: the input file (its size, time stamp and a sampled
    sha256, or ``data_file`` for a file still being written), the model, every setting but
    :data:`FINGERPRINT_EXCLUDED`, the calibration, the zero beam, the probe and the usable region."""
    data_file = file_fingerprint(split_spec(data)[0]) if data_file is None else data_file
    settings = {"data": data, "data_file": data_file, "shape": shape,
                "model_weights_sha256": weights_sha256,
                "config": asdict(config) | {k: None for k in FINGERPRINT_EXCLUDED}, "calibration": asdict(cal),
                "centre_px": prep.centre_px, "probe_sha256": hashlib.sha256(prep.probe.tobytes()).hexdigest(),
                "usable_sha256": hashlib.sha256(np.packbits(prep.usable).tobytes()).hexdigest(),
                "baseline_grid": method_grids(prep)["baseline"]}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _open_scan(data: str, scan_shape, follow: FollowSettings | None, config: PredictConfig):
    """(the scan, its :class:`_Arrivals` when followed, else None). A followed file may not exist yet: it is waited
    for as for frames."""
    if follow is None:
        return open_4d(data, scan_shape), None
    from ..io.readers import check_followable, open_growing

    path, t0 = split_spec(data)[0], time.perf_counter()
    check_followable(path)  # at once, not after --idle seconds of waiting
    while not path.exists() or path.stat().st_size == 0:
        if time.perf_counter() - t0 > follow.idle_s:
            raise FourdError(f"{data}: not there (or empty) after {follow.idle_s:g} s of `follow`")
        time.sleep(follow.poll_s)
    while True:
        try:
            scan, available = open_growing(data, scan_shape)
            break
        except FourdError:  # a first frame header half written, an HDF5 file not yet in SWMR mode: wait for it
            if time.perf_counter() - t0 > follow.idle_s:
                raise
            time.sleep(follow.poll_s)
    return scan, _Arrivals(available, len(scan), follow)


def _region_end(vacuum: str | None, scan_shape) -> int:
    """The number of positions up to the last one of a ``--vacuum`` region (0 without one)."""
    from .preparation import _parse_region

    region = _parse_region(vacuum, scan_shape)
    return 0 if region is None else (region[1] - 1) * scan_shape[1] + region[3]


def _positions_done(partial: Path) -> int:
    import h5py

    try:
        with h5py.File(partial, "r") as f:
            return int(json.loads(f.attrs["state"])["positions_done"])
    except (OSError, KeyError):
        return 0


def _run_chunks(scan: Scan4D, data: str, partial: Path, fingerprint: str, attrs: dict, prep: Preparation, methods,
                config: PredictConfig, card: dict, model, model_path, scheduler: str | None,
                arrivals: _Arrivals | None = None, follow: FollowSettings | None = None,
                out: Path | None = None) -> tuple[dict, dict]:
    """Process every position not yet committed to ``partial``; (summary arrays, run record). With ``arrivals``
    each chunk is read once its frames are in the file, and the live picture is redrawn every
    ``follow.refresh_s`` seconds."""
    result: ResultFile | None = None

    @contextlib.contextmanager
    def writing():
        """A failed write (disk full, read-only, ...) as one line; the file is then never closed by HDF5."""
        try:
            yield
        except (OSError, RuntimeError) as exc:
            reason = write_error(exc)
            if reason is None:
                raise
            if result is not None:
                result.broken = True
            raise FourdError(f"cannot write {partial}: {reason}; positions already written are kept: make room and "
                             f"rerun the same command to resume") from None

    with writing():
        result = ResultFile(partial, fingerprint, attrs, scan.scan_shape, tuple(prep.grid_shape), methods,
                            config.save_maps, prep.usable, tilt=config.tilt_methods, qz=config.qz,
                            grids=method_grids(prep), tilt_model=config.tilt_model)
    try:
        done = result.state["positions_done"]
        if done:
            log.info("resuming %s: %d of %d positions already done", partial, done, len(scan))
        starts = list(range(done, len(scan), config.chunk_positions))
        timing: dict[str, float] = defaultdict(float)
        t_start = time.perf_counter()
        with bar(total=len(scan), desc="predict", unit="pattern", initial=done) as pbar:
            chunks = (chunks_distributed(scheduler, str(data), scan, starts, config, prep, model_path, fingerprint)
                      if scheduler else chunks_local(scan, starts, ChunkProcessor(model, card, prep, config),
                                                     wait=arrivals.wait if arrivals is not None else None))
            last_view = time.perf_counter()
            for start, chunk in chunks:
                t0 = time.perf_counter()
                _room_for(partial, chunk)
                with writing():
                    result.append(start, chunk)
                timing["write"] += time.perf_counter() - t0
                for k, v in chunk["timing_s"].items():
                    timing[k] += v
                pbar.update(chunk["n"])
                if arrivals is not None and time.perf_counter() - last_view >= follow.refresh_s:
                    last_view = time.perf_counter()
                    _live_view(result, card, out, data, len(scan), time.perf_counter() - t_start, done, arrivals)
        wall = time.perf_counter() - t_start
        processed = len(scan) - done
        run = {"positions": len(scan), "processed_this_run": processed, "wall_s": wall,
               "patterns_per_s": processed / wall if wall > 0 else None, "timing_s": dict(timing)}
        with writing():
            summary = result.finish({"run": json.dumps(run)})
    finally:
        result.close()
    return summary, run


def _live_view(result: ResultFile, card: dict, out: Path, data: str, total: int, elapsed_s: float, done_before: int,
               arrivals: _Arrivals) -> None:
    """The rate line, and the live picture (OUT with .png) of what the partial result holds so far."""
    from ..plots import live_view

    live = result.live()
    rate = (live["positions_done"] - done_before) / elapsed_s if elapsed_s > 0 else float("nan")
    line = (f"{live['positions_done']} of {total} positions: processed {rate:.1f} patterns/s, arriving "
            f"{arrivals.rate():.1f} patterns/s")
    log.info("%s", line)
    try:
        live_view(live, card, f"{Path(str(data)).name} (following): {line}", out.with_suffix(".png"))
    except OSError as exc:  # the picture is a convenience; the result goes on
        log.warning("could not draw %s: %s", out.with_suffix(".png"), exc.strerror or exc)


def _room_for(partial: Path, chunk: dict) -> None:
    """Stop cleanly, with the partial file intact and resumable, before a chunk that may not fit."""
    # twice what the chunk adds, plus one new storage chunk per vector field, plus 256 kB
    methods = [m for m in ("model", "baseline") if m in chunk]
    need = 2 * sum(int(np.asarray(v).nbytes) for m in methods for v in chunk[m].values())
    need += 2 * sum(int(np.asarray(v).nbytes) for v in chunk.get("maps", {}).values())
    need += sum(len(VECTOR_FIELDS[m]) for m in methods) * VECTOR_CHUNK * 4 + 262_144
    free = shutil.disk_usage(partial.parent).free
    if free < need:
        raise FourdError(f"cannot write {partial}: only {free / 1e6:.1f} MB free on {partial.parent}, the next chunk "
                         f"needs about {need / 1e6:.1f} MB; positions already written are kept: make room and rerun "
                         f"the same command to resume")
