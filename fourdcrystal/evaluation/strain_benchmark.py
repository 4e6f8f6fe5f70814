"""`fourdcrystal strain-benchmark`: strain and rotation errors of every method against the applied truth.

A survey, not one crystal: strained series of several crystals, cubic and not, on two zone axes each
(:data:`CRYSTALS`), at several thicknesses and doses, simulated with real multislice
(:func:`fourdcrystal.simulation.series.simulate_series`). Each series is a small scan whose positions
are strained by up to ``strain_pct`` per component and rotated by up to ``rotation_deg``; position
(0, 0) is the unstrained reference. Two series per crystal and zone axis are made: ``tune`` (seed + 1),
on which each method's strain-fit settings (weights, indexing tolerance) are chosen by the lowest mean
strain error, and ``test`` (seed), on which they are scored. The methods:

* ``model`` and ``baseline``: ``fourdcrystal predict --baseline`` with the model card's (tuned) peak
  settings, as a user runs it, then :func:`fourdcrystal.maps.strain.strain_maps` on each method's vectors;
* ``py4DSTEM`` (where its environment is given): ``find_Bragg_disks`` with the settings tuned on the
  project's validation split (``benchmarks/compare_py4dstem.json``; its lengths in pixels scaled to
  the series' detector pixels), through the same strain fit.

Files: ``OUT/series/{tune,test}/CRYSTAL-UVW/series-tNNNNA-DOSE.h5`` (``/data`` rows × cols × H × W,
``/probe``, ``/truth/strain``, ``/truth/rotation_deg``; calibration attributes) and a ``truth.json`` per
series, written last (a series without it is simulated again); ``OUT/vectors/`` (predict's results,
reused for the same weights and peak settings); ``OUT/report.json`` and ``OUT/report.png``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_file, check_writable, output_lock
from ..config import (ENERGY_RANGE_EV, LATERAL_SIZE_RANGE_A, MAX_SEED, OUTPUT_PX_RANGE, SEMIANGLE_RANGE_MRAD,
                     THICKNESS_RANGE_A, Float, Int, checked)
from ..errors import FourdError
from ..progress import progress

log = logging.getLogger("fourdcrystal")
SCHEMA = "fourdcrystal.evaluation.strain_benchmark/1"
SPLITS = ("tune", "test")
SOURCE_TREE = Path(__file__).resolve().parents[2]  # the py4DSTEM worker and its tuned settings live beside the package
FIT_GRID = [{"weights": w, "tolerance": t, "correct": c} for w in ("squared", "intensity", "none", "quartic", "scan")
            for t in (0.1, 0.15, 0.25, 0.35) for c in ("none", "reference")]


@dataclass(frozen=True)
class BenchmarkCrystal:
    """A crystal of the benchmark: space group, conventional cell (Å, degrees), the asymmetric unit, zone axes."""

    name: str
    system: str
    spacegroup: str
    cell: tuple  # a, b, c (Å), alpha, beta, gamma (degrees)
    species: tuple
    coords: tuple  # fractional, one per species entry
    zone_axes: tuple  # [uvw] in the conventional cell

    def structure(self):
        from pymatgen.core import Lattice, Structure

        return Structure.from_spacegroup(self.spacegroup, Lattice.from_parameters(*self.cell), list(self.species),
                                         [list(c) for c in self.coords])


CRYSTALS = {c.name: c for c in (
    BenchmarkCrystal("Si", "cubic", "Fd-3m", (5.431, 5.431, 5.431, 90, 90, 90), ("Si",), ((0, 0, 0),),
                     ((1, 1, 0), (0, 0, 1))),
    BenchmarkCrystal("SrTiO3", "cubic", "Pm-3m", (3.905, 3.905, 3.905, 90, 90, 90), ("Sr", "Ti", "O"),
                     ((0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)), ((0, 0, 1), (1, 1, 0))),
    BenchmarkCrystal("GaN", "hexagonal", "P6_3mc", (3.189, 3.189, 5.185, 90, 90, 120), ("Ga", "N"),
                     ((1 / 3, 2 / 3, 0), (1 / 3, 2 / 3, 0.375)), ((0, 0, 1), (1, 0, 0))),
    BenchmarkCrystal("TiO2", "tetragonal", "P4_2/mnm", (4.594, 4.594, 2.959, 90, 90, 90), ("Ti", "O"),
                     ((0, 0, 0), (0.3053, 0.3053, 0)), ((0, 0, 1), (1, 1, 0))),
)}


@dataclass(frozen=True)
class StrainBenchmarkConfig:
    """What is simulated and how it is scored. Lengths Å, angles degrees / mrad, energies eV."""

    crystals: tuple = tuple(CRYSTALS)
    zone_axes_per_crystal: int = 2  # the first N of each crystal's zone_axes
    scan: tuple = (3, 3)  # rows, cols: positions per series (position (0, 0) is the reference)
    strain_pct: float = 1.0  # each strain component uniform in ± this, %
    rotation_deg: float = 2.0  # in-plane rotations uniform in ± this
    thicknesses_A: tuple = (100.0, 300.0, 600.0, 1000.0)
    energy_eV: float = 200e3
    semiangle_mrad: float = 2.0
    box_A: float = 60.0  # simulated cut box side, Å; the detector pixel is detector_bin / box_A Å⁻¹
    output_px: int = 256  # detector pixels a side
    detector_bin: int = 1  # simulated pixels summed into a detector pixel, a side (a larger box, the same detector)
    doses: tuple = ("clean", "1e5", "1e4", "1e3")  # clean and / or electrons per pattern (Poisson)
    seed: int = 0  # the test series; the tuning series use seed + 1
    threads: int = 1

    def check(self) -> "StrainBenchmarkConfig":
        unknown = [c for c in self.crystals if c not in CRYSTALS]
        if unknown or not self.crystals:
            raise FourdError(f"`crystals` {','.join(map(str, unknown)) or '(none)'}: expected some of "
                             f"{', '.join(CRYSTALS)}")
        if not 1 <= self.zone_axes_per_crystal <= 2:
            raise FourdError(f"`zone_axes_per_crystal` {self.zone_axes_per_crystal}: expected 1 or 2")
        if len(self.scan) != 2 or min(self.scan) < 1 or self.scan[0] * self.scan[1] < 2:
            raise FourdError(f"`scan` {self.scan}: expected ROWS COLS with at least 2 positions")
        if not (0 <= self.strain_pct <= 5 and 0 <= self.rotation_deg <= 10):
            raise FourdError("`strain_pct` must lie in 0-5 % and `rotation_deg` in 0-10°")
        if not self.thicknesses_A or min(self.thicknesses_A) <= 0:
            raise FourdError(f"`thicknesses_A` {self.thicknesses_A}: expected positive thicknesses in Å")
        if not (isinstance(self.detector_bin, int) and 1 <= self.detector_bin <= 8):
            raise FourdError(f"`detector_bin` {self.detector_bin!r}: expected an integer 1-8")
        # the stated ranges and validators of config.py, checked before any series folder exists
        checked("`energy_eV`", self.energy_eV, Float(*ENERGY_RANGE_EV), "eV")
        checked("`semiangle_mrad`", self.semiangle_mrad, Float(*SEMIANGLE_RANGE_MRAD, lo_open=True), "mrad")
        checked("`box_A`", self.box_A, Float(*LATERAL_SIZE_RANGE_A), "Å")
        for t in self.thicknesses_A:
            checked("`thicknesses_A`", t, Float(*THICKNESS_RANGE_A, lo_open=True), "Å")
        lo, hi = OUTPUT_PX_RANGE
        if not lo <= self.output_px * self.detector_bin <= hi:
            raise FourdError(f"`output_px` {self.output_px} (×{self.detector_bin} simulated per detector pixel): expected "
                             f"{lo}-{hi} simulated pixels a side")
        checked("`seed`", self.seed, Int(0, MAX_SEED - 1))  # the tuning series use seed + 1
        checked("`threads`", self.threads, Int(1, 1024))
        for d in self.doses:
            if d != "clean" and not (_is_number(d) and float(d) > 0):
                raise FourdError(f"`doses` {d!r}: expected clean or electrons per pattern (e.g. 1e5)")
        return self

    @property
    def k_pixel_invA(self) -> float:
        """The detector's pixel, Å⁻¹."""
        return self.detector_bin / self.box_A

    def series_names(self) -> list[tuple[str, tuple]]:
        return [(c, tuple(z)) for c in self.crystals for z in CRYSTALS[c].zone_axes[:self.zone_axes_per_crystal]]


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _series_folder(out: Path, split: str, crystal: str, uvw) -> Path:
    return out / "series" / split / f"{crystal}-{''.join(str(i) for i in uvw)}"


def simulate_series_files(out: str | Path, config: StrainBenchmarkConfig) -> list[Path]:
    """Simulate every series that is not there yet; returns the series folders (both splits)."""
    from ..simulation.cbed import Optics
    from ..simulation.series import random_series, simulate_series
    from ..training.augment import shot_noise

    out = Path(out)
    folders = []
    todo = [(split, c, uvw) for split in SPLITS for c, uvw in config.series_names()]
    for split, crystal, uvw in progress(todo, desc="strain series", unit="series"):
        folder = _series_folder(out, split, crystal, uvw)
        folders.append(folder)
        if (folder / "truth.json").is_file():
            made = json.loads((folder / "truth.json").read_text())
            box, binned = made.get("box_A", 60.0), made.get("detector_bin", 1)  # older folders: the 60 Å default
            if (box, binned) != (config.box_A, config.detector_bin):
                raise FourdError(f"{folder} was simulated with a {box:g} Å box binned {binned}× "
                                 f"({binned / box:.5f} Å⁻¹ pixels), not `box_A` {config.box_A:g} `detector_bin` "
                                 f"{config.detector_bin}; use another OUT")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        seed = config.seed + (1 if split == "tune" else 0)
        rows, cols = config.scan
        strains, rots = random_series(rows * cols, config.strain_pct, config.rotation_deg, seed)
        series = simulate_series(CRYSTALS[crystal].structure(), uvw, strains, rots,
                                 Optics(config.energy_eV, config.semiangle_mrad,
                                        output_px=config.output_px * config.detector_bin),
                                 list(config.thicknesses_A), config.box_A, threads=config.threads,
                                 detector_bin=config.detector_bin)
        rng = np.random.default_rng(seed + 1000)
        files = []
        for ti, t in enumerate(series.thickness_A):
            for dose in config.doses:
                cbed = series.cbed[ti]
                if dose != "clean":
                    cbed = np.stack([shot_noise(c, float(dose), rng) for c in cbed])
                path = folder / f"series-t{int(round(t)):04d}A-{dose}.h5"
                write_series_file(path, cbed, series, strains, rots, config.scan, config.energy_eV,
                                  config.semiangle_mrad, {"structure": crystal, "zone_axis": list(uvw),
                                                          "thickness_A": float(t), "dose": dose,
                                                          "nominal_thickness_A": float(config.thicknesses_A[ti]),
                                                          "box_A": config.box_A,
                                                          "detector_bin": config.detector_bin})
                files.append(path.name)
        truth = {"crystal": crystal, "system": CRYSTALS[crystal].system, "zone_axis": list(uvw), "split": split,
                 "seed": seed, "scan_shape": [rows, cols], "strain": strains.tolist(), "rotation_deg": rots.tolist(),
                 "thickness_A": series.thickness_A.tolist(), "k_pixel_invA": series.k_pixel_invA,
                 "box_A": config.box_A, "detector_bin": config.detector_bin, "files": files}
        with atomic_file(folder / "truth.json") as tmp:
            tmp.write_text(json.dumps(truth, indent=1) + "\n")
    return folders


def write_series_file(path: Path, cbed: np.ndarray, series, strains: np.ndarray, rotations_deg: np.ndarray,
                      scan: tuple, energy_eV: float, semiangle_mrad: float, attrs: dict) -> None:
    """One thickness and dose of a strain series as a file ``predict`` reads (atomically): ``/data`` (rows, cols, H, W)
    float32 with its calibration, ``/probe``, the truth in ``/truth`` (strain (rows, cols, 3) fractions, rotation_deg,
    tilt_mrad (rows, cols, 2) and orientation_matrix (rows, cols, 3, 3): crystal Cartesian → detector frame) and
    ``attrs`` (structure, zone axis, thickness, dose ...) on the file."""
    import h5py

    rows, cols = scan
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset("data", data=cbed.reshape(rows, cols, *cbed.shape[1:]).astype(np.float32))
        ds.attrs.update({"k_pixel_invA": series.k_pixel_invA, "energy_eV": energy_eV, "semiangle_mrad": semiangle_mrad})
        f.create_dataset("probe", data=series.probe)
        g = f.create_group("truth")
        g.create_dataset("strain", data=np.asarray(strains).reshape(rows, cols, 3))
        g.create_dataset("rotation_deg", data=np.asarray(rotations_deg).reshape(rows, cols))
        if getattr(series, "orientation", None) is not None:  # the crystal tilt and the 3D orientation, exact
            g.create_dataset("tilt_mrad", data=np.asarray(series.tilt_mrad).reshape(rows, cols, 2))
            g.create_dataset("orientation_matrix", data=np.asarray(series.orientation).reshape(rows, cols, 3, 3))
        f.attrs.update({**attrs, "conventions": "atoms r -> (I + eps) R(theta) r relative to position (0, 0); eps "
                                                "along detector axes 0 (x) and 1 (y), fractions"})


@dataclass
class SeriesVectors:
    """One file's vectors per method (VectorSet) and its truth."""

    file: Path
    crystal: str
    uvw: tuple
    thickness_A: float
    dose: str
    strain: np.ndarray
    rotation_deg: np.ndarray
    methods: dict = field(default_factory=dict)


def file_truth(path: Path) -> SeriesVectors:
    """A strain series file's applied truth (crystal, zone axis, thickness Å, dose, strains, rotations °), no vectors yet."""
    import h5py

    with h5py.File(path, "r") as f:
        return SeriesVectors(path, str(f.attrs["structure"]), tuple(int(i) for i in f.attrs["zone_axis"]),
                        float(f.attrs["nominal_thickness_A"]), str(f.attrs["dose"]), f["truth/strain"][()],
                        f["truth/rotation_deg"][()])


def predict_vectors(model: str | None, files: list[Path], work: Path) -> list[SeriesVectors]:
    """predict --baseline on every file (results kept in ``work`` and reused), read back per method."""
    from ..io.vectors import read_vectors
    from ..prediction.stage import PredictConfig, predict

    out = []
    for path in progress(files, desc="predict", unit="file"):
        v = file_truth(path)
        res = work / f"{path.parent.parent.name}-{path.parent.name}-{path.stem}-bragg.h5"
        if not res.is_file():
            predict(model, str(path), res, PredictConfig(baseline=True, tilt=False))
        for m in ("model", "baseline"):
            v.methods[m] = read_vectors(res, m)
        out.append(v)
    return out


def py4dstem_vectors(python: Path, files: list[Path], vectors: list[SeriesVectors], settings: dict, work: Path) -> None:
    """py4DSTEM's find_Bragg_disks on every file (one worker run per series folder, kept in ``work`` and reused),
    added as ``py4DSTEM``."""
    import subprocess

    import h5py

    from ..io.vectors import VectorSet

    worker = SOURCE_TREE / "scripts" / "py4dstem_worker.py"
    if not worker.is_file():
        raise FourdError(f"the py4DSTEM worker {worker} is missing (it ships with the source tree, not the wheel)")
    by_folder: dict[Path, list[int]] = {}
    for i, f in enumerate(files):
        by_folder.setdefault(f.parent, []).append(i)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    for folder, idx in progress(list(by_folder.items()), desc="py4DSTEM", unit="series"):
        tag = f"{folder.parent.name}-{folder.name}-{digest}"
        done = work / f"{tag}-py4dstem.npz"
        shapes = []
        for i in idx:
            with h5py.File(files[i], "r") as f:
                shapes.append(f["data"].shape)
                dk = float(f["data"].attrs["k_pixel_invA"])
        if not done.is_file():  # the patterns are read only when py4DSTEM has to run on them
            pats, probes = [], []
            for i in idx:
                with h5py.File(files[i], "r") as f:
                    d = f["data"][()]
                    pats.append(d.reshape(-1, *d.shape[2:]))
                    probes.append(np.broadcast_to(f["probe"][()], pats[-1].shape))
            np.savez(work / f"{tag}.npz", patterns=np.concatenate(pats).astype(np.float32),
                     probes=np.concatenate(probes).astype(np.float32))
            (work / f"{tag}.json").write_text(json.dumps([settings]))
            with atomic_file(done) as tmp:
                subprocess.run([str(python), str(worker), str(work / f"{tag}.npz"), str(work / f"{tag}.json"),
                                str(tmp.with_suffix(".npz"))], check=True)
                tmp.with_suffix(".npz").replace(tmp)
            (work / f"{tag}.npz").unlink()
        res = np.load(done)
        off, pos, inten = res["s0_offsets"], res["s0_pos"], res["s0_intensity"]
        start = 0
        for i, (rows, cols, h, w) in zip(idx, shapes):
            o = off[start:start + rows * cols + 1]
            q = (pos[o[0]:o[-1]] - np.array([h // 2, w // 2])) * dk
            vectors[i].methods["py4DSTEM"] = VectorSet((rows, cols), (o - o[0]).astype(np.int64), q,
                                                        inten[o[0]:o[-1]], "Å⁻¹", dk, str(files[i]), "py4DSTEM")
            start += rows * cols


def score_fit(v: SeriesVectors, method: str, fit: dict) -> dict:
    """One strain fit of one method's vectors against the truth (a fit that fails everywhere: None)."""
    from ..maps.strain import StrainConfig, strain_maps

    try:
        m = strain_maps(v.methods[method], StrainConfig(reference="0:1,0:1", **fit))
    except FourdError:
        m = None
    row = {"crystal": v.crystal, "zone_axis": list(v.uvw), "thickness_A": v.thickness_A, "dose": v.dose,
           "method": method, "fit": fit, "positions": int(v.rotation_deg.size) - 1}
    if m is None:
        return row | {"strain_rms_error_pct": None, "rotation_rms_error_deg": None, "fitted": 0,
                      "position_errors_pct": [None] * row["positions"]}
    ok = m["fit_ok"].copy()
    ok[0, 0] = False  # the reference is zero by construction
    err = np.stack([m[k] - v.strain[..., i] for i, k in enumerate(("exx", "eyy", "exy"))], axis=-1)
    # each strained position's rms over the three components (None where not fitted): methods are compared on
    # the positions every one of them fitted as well as each on its own
    per_position = 100 * np.sqrt(np.mean(err ** 2, axis=-1))
    return row | {"strain_rms_error_pct": float(100 * np.sqrt(np.mean(err[ok] ** 2))) if ok.any() else None,
                  "rotation_rms_error_deg": float(np.sqrt(np.mean((m["theta_deg"] - v.rotation_deg)[ok] ** 2)))
                  if ok.any() else None, "fitted": int(ok.sum()),
                  "position_errors_pct": [float(e) if o else None for e, o in zip(per_position.ravel()[1:],
                                                                                  ok.ravel()[1:])]}


FAILED_PCT = 1.0  # a position not fitted counts as this strain error when fit settings are chosen


def mean_strain_error(rows: list[dict]) -> float:
    """The mean of :func:`score_fit` rows' rms strain errors (%), a row with a position not fitted counted as
    :data:`FAILED_PCT`: what fit settings are chosen by (inf for no rows)."""
    errs = []
    for r in rows:
        e = r["strain_rms_error_pct"]
        errs.append(FAILED_PCT if e is None or r["fitted"] < r["positions"] else e)
    return float(np.mean(errs)) if errs else math.inf


def choose_and_score(vectors: dict, methods: list[str]) -> tuple[dict, list[dict]]:
    """Each method's strain fit chosen on ``vectors["tune"]`` (the lowest mean error over :data:`FIT_GRID`) and
    scored on ``vectors["test"]``: (the choice per method, the test rows of :func:`score_fit`)."""
    chosen, rows = {}, []
    for m in methods:
        tune_rows = {json.dumps(fit): [score_fit(v, m, fit) for v in vectors["tune"]] for fit in FIT_GRID}
        best = min(tune_rows, key=lambda k: mean_strain_error(tune_rows[k]))
        chosen[m] = {"fit": json.loads(best), "tune_mean_strain_rms_error_pct": mean_strain_error(tune_rows[best])}
        rows += [score_fit(v, m, chosen[m]["fit"]) for v in vectors["test"]]
    return chosen, rows


def vectors_folder(out: str | Path, weights_sha256: str, peak_settings: dict | None) -> Path:
    """The folder of a benchmark's predict results for one model's weights and peak settings, OUT/vectors/KEY: they
    are reused only for the same of both (tune rewrites a card's settings), so a benchmark run again with another
    card keeps the earlier results beside its own; a report names its own by its ``model_weights_sha256`` and
    ``peak_settings``."""
    key = hashlib.sha256(json.dumps([weights_sha256, peak_settings], sort_keys=True).encode())
    return Path(out) / "vectors" / key.hexdigest()[:12]


def run_benchmark(out: str | Path, model: str | None = None, config: StrainBenchmarkConfig = StrainBenchmarkConfig(),
                  py4dstem_python: str | Path | None = None, py4dstem_settings: dict | None = None) -> dict:
    """Simulate what is missing, predict, choose each method's fit settings on the tuning series and score the test
    series. Writes OUT/report.json (and report.png); returns the report."""
    from ..atomic import check_name_length
    from ..model.card import read_card, resolve_weights

    config = config.check()
    out = Path(out)
    check_name_length(out, "OUT")
    card = read_card(resolve_weights(model))  # a model that cannot be read is refused before hours of simulation
    check_writable(out, "strain benchmark folder")
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out / "report.json"):
        folders = simulate_series_files(out, config)
        work = vectors_folder(out, card["weights_sha256"], card.get("peaks"))
        work.mkdir(parents=True, exist_ok=True)
        files = {s: [f / n for f in folders if f.parent.name == s for n in json.loads((f / "truth.json").read_text())
                     ["files"]] for s in SPLITS}
        vectors = {s: predict_vectors(model, files[s], work) for s in SPLITS}
        methods = ["model", "baseline"]
        if py4dstem_python is not None:
            if py4dstem_settings is None:
                raise FourdError("py4DSTEM needs its tuned settings (benchmarks/compare_py4dstem.json)")
            for s in SPLITS:
                py4dstem_vectors(Path(py4dstem_python), files[s], vectors[s], py4dstem_settings, work)
            methods.append("py4DSTEM")
        chosen, rows = choose_and_score(vectors, methods)
        report = {"schema": SCHEMA, "config": asdict(config), "model": model or "release",
                  "model_weights_sha256": card["weights_sha256"], "peak_settings": card.get("peaks"), "methods": methods,
                  "chosen_on_tune_series": chosen, "py4dstem_settings": py4dstem_settings,
                  "summary": summarise(rows, methods), "rows": rows}
        with atomic_file(out / "report.json") as tmp:
            tmp.write_text(json.dumps(report, indent=1) + "\n")
        from ..plots import strain_benchmark_png

        strain_benchmark_png(report, out / "report.png")
    return report


def summarise(rows: list[dict], methods: list[str]) -> dict:
    """rms strain error (%) and rotation error (°) per dose and thickness, over every crystal, zone axis and
    strained position (each file's rms squared, averaged, rooted), and per crystal system; failed fits counted."""
    out: dict = {}
    for key in ("thickness_A", "system"):
        table: dict = {}
        for r in rows:
            g = str(r["thickness_A"] if key == "thickness_A" else CRYSTALS[r["crystal"]].system)
            table.setdefault(r["dose"], {}).setdefault(g, {}).setdefault(r["method"], []).append(r)
        out[f"by_dose_and_{key}"] = {d: {g: {m: _pool(rs) for m, rs in by_m.items()} for g, by_m in by_g.items()}
                                     for d, by_g in table.items()}
    out["common_by_dose_and_thickness_A"] = _common(rows, methods)
    return out


def _common(rows: list[dict], methods: list[str]) -> dict:
    """rms strain error (%) per dose and thickness over the strained positions that every method fitted: where one
    method fails a series (py4DSTEM on a thick one), the others are not judged on positions it skipped."""
    series: dict = {}
    for r in rows:
        if "position_errors_pct" not in r:  # a report written before the positions were kept
            return {}
        key = (r["dose"], str(r["thickness_A"]), r["crystal"], tuple(r["zone_axis"]))
        series.setdefault(key, {})[r["method"]] = r["position_errors_pct"]
    table: dict = {}
    for (dose, t, *_), by_m in series.items():
        if set(by_m) != set(methods):
            continue
        shared = [i for i in range(len(by_m[methods[0]])) if all(by_m[m][i] is not None for m in methods)]
        cell = table.setdefault(dose, {}).setdefault(t, {m: [] for m in methods} | {"positions": 0})
        cell["positions"] += len(by_m[methods[0]])
        for m in methods:
            cell[m] += [by_m[m][i] for i in shared]
    return {d: {t: {m: {"strain_rms_error_pct": float(np.sqrt(np.mean(np.square(c[m])))) if c[m] else None,
                        "fitted": len(c[m]), "positions": c["positions"]} for m in methods}
                for t, c in by_t.items()} for d, by_t in table.items()}


def _pool(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["strain_rms_error_pct"] is not None]
    fitted = sum(r["fitted"] for r in rows)
    w = np.array([r["fitted"] for r in ok], float)
    s = np.array([r["strain_rms_error_pct"] for r in ok])
    t = np.array([r["rotation_rms_error_deg"] for r in ok])
    return {"strain_rms_error_pct": float(np.sqrt(np.sum(w * s ** 2) / w.sum())) if w.sum() else None,
            "rotation_rms_error_deg": float(np.sqrt(np.sum(w * t ** 2) / w.sum())) if w.sum() else None,
            "fitted": int(fitted), "positions": int(sum(r["positions"] for r in rows))}


def format_table(report: dict) -> str:
    """The summary by dose and thickness as text (what the CLI prints): rms strain error (%), rotation error (°),
    positions fitted, per method."""
    methods = report["methods"]
    head = " | ".join(f"{m:>24s}" for m in methods)
    lines = [f"{'dose':>6s} {'thickness':>9s} | {head}",
             f"{'e-':>6s} {'Å':>9s} | " + " | ".join(f"{'strain %':>9s} {'rot °':>6s} {'fitted':>7s}" for _ in methods)]
    table = report["summary"]["by_dose_and_thickness_A"]

    def num(v, fmt):
        return "–" if v is None else format(v, fmt)

    for d in sorted(table, key=lambda d: (d != "clean", -float(d) if d != "clean" else 0.0)):
        for t in sorted(table[d], key=float):
            cells = []
            for m in methods:
                r = table[d][t].get(m, {})
                cells.append(f"{num(r.get('strain_rms_error_pct'), '.3f'):>9s} "
                             f"{num(r.get('rotation_rms_error_deg'), '.3f'):>6s} "
                             f"{str(r.get('fitted', 0)) + '/' + str(r.get('positions', 0)):>7s}")
            lines.append(f"{d:>6s} {float(t):9.0f} | " + " | ".join(cells))
    return "\n".join(lines)


def file_dose_e(path: Path) -> float:
    """Electrons per pattern of a series file (inf: noise-free)."""
    import h5py

    with h5py.File(path, "r") as f:
        dose = str(f.attrs["dose"])
    return math.inf if dose == "clean" else float(dose)


def tuned_py4dstem_settings(source: str | Path | None, model: str | None, k_pixel_invA: float) -> dict:
    """py4DSTEM's settings from a ``scripts/compare_py4dstem.py`` result (``source``; None: the source tree's
    ``benchmarks/compare_py4dstem.json``), tuned on ``model``'s validation split at its card's pixel size, scaled
    to a series detector of ``k_pixel_invA`` pixels (:func:`py4dstem_settings_for`)."""
    from ..model.card import card_path, resolve_weights

    src = Path(source) if source else SOURCE_TREE / "benchmarks" / "compare_py4dstem.json"
    if not src.is_file():
        raise FourdError(f"`py4dstem_settings` {src}: no such file (a scripts/compare_py4dstem.py result)")
    card = json.loads(card_path(resolve_weights(model)).read_text())
    dk_tuned = float(np.mean(card["input"]["k_sampling_invA"]))
    return py4dstem_settings_for(json.loads(src.read_text())["py4dstem_settings"], dk_tuned / k_pixel_invA)


def tuning_files(out: str | Path) -> list[Path]:
    """The files of a benchmark folder's tuning series (``fourdcrystal strain-benchmark OUT`` made them)."""
    truths = sorted((Path(out) / "series" / "tune").glob("*/truth.json"))
    if not truths:
        raise FourdError(f"`strain_benchmark` {out}: no tuning series there (fourdcrystal strain-benchmark {out} "
                         f"makes them)")
    return [t.parent / name for t in truths for name in json.loads(t.read_text())["files"]]


def threshold_strain_errors(model: str | Path, files: list[Path], settings, thresholds, fit: dict) -> dict:
    """Mean strain rms error (%; a position not fitted counts as 1 %) of the model's vectors over ``files`` at each
    of its ``thresholds``: ``tune``'s strain objective.

    predict runs once, at the lowest threshold (one threshold for every pattern); a higher one only removes the
    weaker maxima, so each is the vectors filtered by intensity (the predicted V_g at the maximum) relative to the
    settings' reference, the zero beam's V_g (the map's unit) or the strongest maximum of the position.
    """
    import tempfile

    from ..io.vectors import VectorSet, read_vectors
    from ..prediction.stage import PredictConfig, predict

    thresholds = sorted(set(float(t) for t in thresholds))
    m = replace(settings.model, min_relative=thresholds[0], low_dose_e=0.0, low_dose_min_relative=None)
    vecs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, path in enumerate(progress(files, desc="tune: strain series", unit="file")):
            v = file_truth(path)
            res = Path(tmp) / f"{k}.h5"
            predict(model, str(path), res, PredictConfig(settings=replace(settings, model=m), tilt=False))
            v.methods["all"] = read_vectors(res, "model")
            vecs.append(v)
    errors = {}
    for t in thresholds:
        rows = []
        for v in vecs:
            a = v.methods["all"]
            keep, offsets = [], [0]
            for p in range(a.positions):
                _, inten = a.position(p)
                ref = 1.0 if m.threshold_of == "zero_beam" else (inten.max() if inten.size else 1.0)
                keep.append(inten >= t * ref)
                offsets.append(offsets[-1] + int(keep[-1].sum()))
            keep = np.concatenate(keep) if keep else np.zeros(0, bool)
            v.methods["model"] = VectorSet(a.scan_shape, np.array(offsets), a.q[keep], a.intensity[keep], a.units,
                                           a.bin_width, a.source, "model")
            rows.append(score_fit(v, "model", fit))
        errors[t] = mean_strain_error(rows)
    return errors


def py4dstem_settings_for(settings: dict, px_scale: float) -> dict:
    """py4DSTEM's settings tuned on the project's validation split (its pixels) with their lengths in pixels
    scaled by ``px_scale`` (tuned pixel size / this detector's), so they keep their values in Å⁻¹."""
    s = dict(settings)
    for k in ("minPeakSpacing", "sigma_cc"):  # kernel radii are in disk radii already
        if k in s and s[k]:
            s[k] = float(s[k]) * px_scale
    return s
