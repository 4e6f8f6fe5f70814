"""`fourdcrystal simulate`: a specimen manifest in, a sharded dataset out; local or on dask.

The manifest's specimens are cut into shard tasks (``specimens_per_shard`` each, in manifest
order). A task's result depends only on the config, the seed and its specimens, never on
which worker ran it or when, so a killed run restarted with the same command skips the
finished shards (each written atomically) and ends with the same dataset. ``run.json`` holds
the plan while a run is in progress; ``index.json`` is written last.

Tasks run in this process, in ``workers`` local processes (one FFT thread each), or on a
dask.distributed cluster (``scheduler`` address; its workers must see the specimens and output
folders on a shared file system).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic
from ..config import choices
from ..errors import FourdError
from ..versions import software_versions
from . import shards
from ..memory import check_fits
from .cbed import Optics, check_semiangle, memory_bytes, probe_positions, simulate_specimen
from .optics import antialiased_gpts

log = logging.getLogger("fourdcrystal")

RUN = "run.json"
SINGLE_SPECIMEN = "specimen"  # single-structure mode keeps its one-row manifest inside the dataset
# Every simulate setting is part of a shard's task hash except these, which cannot change a shard's
# numbers: a setting added to the schema is hashed unless it is listed here (tests/test_simulate_cli.py
# checks both ways). fft_planning is hashed: shards planned differently differ in the last bits.
HASH_EXCLUDED = ("workers", "out")
# Settings added after datasets existed: hashed only away from the value that reproduces those datasets, so a
# dataset made before the setting existed keeps its task hashes (and resumes) where the setting is left alone.
HASH_OMITTED_AT = {"split_by": "crystal", "phonon_fraction": 1.0}


@dataclass(frozen=True)
class ShardTask:
    index: int
    specimen_ids: tuple[str, ...]
    task_hash: str

    @property
    def file(self) -> str:
        return shards.shard_name(self.index)


def optics_from_config(cfg: dict, energy_eV: float | None = None, semiangle_mrad: float | None = None) -> Optics:
    """The simulation optics; energy and semi-angle from the arguments when the config lists several."""
    energy = energy_eV if energy_eV is not None else choices(cfg["energy_eV"])[0]
    semiangle = semiangle_mrad if semiangle_mrad is not None else choices(cfg["semiangle_mrad"])[0]
    return Optics(energy_eV=float(energy), semiangle_mrad=float(semiangle), defocus_A=cfg["defocus_A"],
                  cs_A=cfg["cs_A"], output_px=cfg["output_px"], slice_thickness_A=cfg["slice_thickness_A"],
                  parametrization=cfg["parametrization"]).check()


def specimen_optics(cfg: dict, specimen_seed_: int) -> Optics:
    """The optics of one specimen: energy and semi-angle drawn from the config's lists.

    The draw has its own generator (from the specimen seed), so listing one value gives the
    same files as giving that number, and probe positions and phonons do not depend on it.
    """
    rng = np.random.default_rng([specimen_seed_, 0x0E7])
    energies, semiangles = choices(cfg["energy_eV"]), choices(cfg["semiangle_mrad"])
    energy = energies[int(rng.integers(len(energies)))] if len(energies) > 1 else energies[0]
    semiangle = semiangles[int(rng.integers(len(semiangles)))] if len(semiangles) > 1 else semiangles[0]
    return optics_from_config(cfg, energy, semiangle)


def specimen_phonons(cfg: dict, specimen_seed_: int) -> int:
    """Frozen-phonon configurations of one specimen: ``frozen_phonons`` for a seeded ``phonon_fraction``
    of the specimens, 0 (static lattice) for the rest. Its own generator, like the optics draw."""
    n, fraction = int(cfg["frozen_phonons"]), float(cfg.get("phonon_fraction", 1.0))
    if n == 0 or fraction >= 1.0:
        return n
    return n if np.random.default_rng([specimen_seed_, 0xF0F]).random() < fraction else 0


def widest_optics(cfg: dict) -> list[Optics]:
    """Every listed energy with the largest listed semi-angle: what must fit each box's band limit."""
    return [optics_from_config(cfg, energy, max(choices(cfg["semiangle_mrad"]))) for energy in choices(cfg["energy_eV"])]


def split_crystals(rows, cfg: dict) -> dict[str, str]:
    """crystal id → split, by crystal or (``split_by: prototype``) by prototype: every crystal of a
    prototype in the split its prototype drew."""
    if cfg.get("split_by", "crystal") == "crystal":
        return assign_splits([r.crystal_id for r in rows], cfg["val_fraction"], cfg["test_fraction"], cfg["seed"])
    group = {r.crystal_id: r.prototype for r in rows}
    by_group = assign_splits(list(group.values()), cfg["val_fraction"], cfg["test_fraction"], cfg["seed"])
    return {cid: by_group[g] for cid, g in group.items()}


def assign_splits(crystal_ids: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """train/val/test by crystal (no crystal in two splits), a seeded shuffle of the sorted ids.

    With three or more crystals, val and test get at least one crystal each when their fraction
    is positive.
    """
    ids = sorted(set(crystal_ids))
    n = len(ids)
    perm = [ids[i] for i in np.random.default_rng([seed, 0x5EED]).permutation(n)]

    def count(f: float) -> int:
        if f <= 0 or n == 0:
            return 0
        return max(1 if n >= 3 else 0, int(round(f * n)))

    n_test, n_val = count(test_fraction), count(val_fraction)
    while n_test + n_val > max(0, n - 1):  # keep at least one training crystal
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    out = {}
    for i, cid in enumerate(perm):
        out[cid] = "test" if i < n_test else ("val" if i < n_test + n_val else "train")
    return out


def plan_tasks(specimens, cfg: dict) -> list[ShardTask]:
    rows = specimens.rows[: cfg["limit"]] if cfg.get("limit") else specimens.rows
    per = cfg["specimens_per_shard"]
    physics = {k: v for k, v in cfg.items() if k not in HASH_EXCLUDED and
               not (k in HASH_OMITTED_AT and v == HASH_OMITTED_AT[k])}
    manifest_hash = specimens.header.get("catalogue_sha256", "")
    tasks = []
    for i in range(0, len(rows), per):
        ids = tuple(r.specimen_id for r in rows[i:i + per])
        # the rows themselves (geometry, tilt, strain, seed): a changed specimen table is new work
        table = [r.to_csv_row() for r in rows[i:i + per]]
        blob = json.dumps({"physics": physics, "ids": ids, "source": manifest_hash, "rows": table}, sort_keys=True)
        tasks.append(ShardTask(i // per, ids, hashlib.sha256(blob.encode()).hexdigest()[:16]))
    return tasks


def specimen_seed(seed: int, specimen_id: str, row_seed: int) -> int:
    return int(np.random.default_rng([seed, row_seed, zlib.crc32(specimen_id.encode())]).integers(0, 2**31 - 1))


def run_shard(specimens_dir: str, out_dir: str, task: ShardTask, cfg: dict, splits: dict[str, str],
              threads: int = 1, wisdom=None) -> dict:
    """Simulate one shard task and write it atomically. Returns {file, samples, seconds}."""
    from ..specimens.supercell import load_specimen, read_specimens
    from .engine import use_wisdom

    if _kill_hook() == (task.index, "worker"):
        import multiprocessing

        if multiprocessing.parent_process() is not None:  # in a worker, never in the main process
            os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.perf_counter()
    use_wisdom(wisdom)
    specimens = read_specimens(specimens_dir)
    output_px = cfg["output_px"]
    from .truth import specimen_reflections

    images: dict[str, list] = {k: [] for k in shards.IMAGES}
    meta: dict[str, list] = {k: [] for k in shards.META}
    truth: list = []
    for sid in task.specimen_ids:
        row = specimens.row(sid)
        sp = load_specimen(specimens, sid)
        s_seed = specimen_seed(cfg["seed"], sid, row.seed)
        optics = specimen_optics(cfg, s_seed)
        rng = np.random.default_rng(s_seed)
        positions = probe_positions(sp, cfg["positions_per_specimen"], cfg["probe_position"], rng)
        n_phonons = specimen_phonons(cfg, s_seed)
        res = simulate_specimen(sp, optics, positions, n_phonons, cfg["phonon_sigma_A"],
                                seed=s_seed, threads=threads, planning=cfg["fft_planning"])
        for ti, t in enumerate(res.thickness_A):
            for pi, pos in enumerate(res.positions_A):
                images["cbed"].append(res.cbed[ti, pi])
                images["probe"].append(res.probe[pi])
                images["vg"].append(res.vg[ti])
                images["qz"].append(res.qz[ti])
                truth.append(specimen_reflections(sp, res.cbed[ti, pi], optics.energy_eV, optics.semiangle_mrad,
                                                  float(t), res.k_sampling_invA))
                values = {
                    "sample_id": f"{sid}__t{ti}__p{pi}", "specimen_id": sid, "crystal_id": row.crystal_id,
                    "formula": row.formula, "prototype": row.prototype, "split": splits[row.crystal_id],
                    "zone_axis": row.zone_axis, "inplane_rotation_deg": sp.plan.phi_deg, "tilt_mrad": row.tilt_mrad,
                    "tilt_mode": row.tilt_mode, "strain": row.applied_strain, "thickness_A": float(t),
                    "thickness_nominal_A": sorted(row.thicknesses_A)[ti], "energy_eV": optics.energy_eV,
                    "semiangle_mrad": optics.semiangle_mrad, "defocus_A": optics.defocus_A, "cs_A": optics.cs_A,
                    "probe_position_A": pos, "k_sampling_invA": res.k_sampling_invA,
                    "slice_thickness_A": res.slice_thickness_A, "frozen_phonons": n_phonons,
                    "seed": s_seed,
                }
                for k, v in values.items():
                    meta[k].append(v)
    arrays = {k: np.stack(v) for k, v in images.items()}
    for name, arr in arrays.items():  # a shard of NaN would train and score as if it were data
        if not np.isfinite(arr).all():
            raise FourdError(f"specimen {task.specimen_ids[0]} (shard {task.file}): the simulated {name} holds "
                             f"non-finite values; check the optics (cs_A {cfg['cs_A']:g} Å, defocus_A "
                             f"{cfg['defocus_A']:g} Å) and the specimen; nothing was written for this shard")
    versions = software_versions(("fourdcrystal", "abtem"))
    attrs = {"k_sampling_invA": np.median(np.asarray(meta["k_sampling_invA"]), axis=0), "output_px": output_px,
             "task": task.task_hash, "fourdcrystal_version": versions["fourdcrystal"],
             "abtem_version": versions["abtem"]}
    shards.write_shard(Path(out_dir) / task.file, arrays, meta, attrs, truth)
    return {"file": task.file, "samples": len(arrays["cbed"]), "seconds": time.perf_counter() - t0,
            "splits": sorted(set(meta["split"]))}


def _init_worker(parent_pid: int | None = None) -> None:
    # one FFT thread per process: processes, not threads, use the cores
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    die_with_parent(parent_pid)


def die_with_parent(parent_pid: int | None) -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    A worker outliving a killed ``simulate`` would go on writing shards nobody asked for. Where
    prctl is unavailable (not Linux) a daemon thread checks every second that the parent lives.
    """
    import signal
    import threading

    if parent_pid is None:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _prepare_output(out: Path, tasks: list[ShardTask], header: dict, overwrite: bool) -> list[ShardTask]:
    """Create or resume the output folder; return the tasks still to run."""
    run_file = out / RUN
    plan = {"tasks": [[t.file, t.task_hash] for t in tasks]}
    if out.exists() and any(p.name != SINGLE_SPECIMEN for p in out.iterdir()):
        if not run_file.exists() and not overwrite:
            raise FourdError(f"output folder {out} exists and is not a fourdcrystal dataset; choose another `out` "
                             f"or set `overwrite`")
        previous = json.loads(run_file.read_text()) if run_file.exists() else {}
        if previous.get("plan") != plan:
            if not overwrite:
                raise FourdError(f"output folder {out} holds a dataset made with another config or manifest; "
                                 f"set `overwrite` to replace it, or choose another `out`")
            for p in out.glob("shard-*.h5"):
                p.unlink()
            for name in (shards.INDEX, RUN):
                if (out / name).exists():
                    (out / name).unlink()
        elif overwrite:
            for p in out.glob("shard-*.h5"):
                p.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError("permission denied")
    except OSError as exc:
        raise FourdError(f"cannot write output folder {out}: {getattr(exc, 'strerror', None) or exc}") from None
    for tmp in out.glob(".shard-*.tmp"):  # left by a killed run
        tmp.unlink()
    write_text_atomic(run_file, json.dumps({**header, "plan": plan}, indent=1, sort_keys=True, default=str) + "\n")
    return [t for t in tasks if shards.shard_task(out / t.file) != t.task_hash]


# tests only, never set in use: a kill at a known point of the run, not a race against the clock.
# "N": SIGKILL the run's process group once N shards are done; "N:parent": the main process alone (its workers
# must die with it); "N:worker": the worker given the shard task of index N kills itself as it starts it.
KILL_AFTER_SHARDS_ENV = "FOURDCRYSTAL_TEST_KILL_AFTER_SHARDS"


def _kill_hook() -> tuple[int, str]:
    n, _, who = os.environ.get(KILL_AFTER_SHARDS_ENV, "0").partition(":")
    return int(n or 0), who or "group"


def simulate_dataset(specimens_dir: str | Path, cfg: dict, workers: int = 1, scheduler: str | None = None,
                     overwrite: bool = False, progress_bar: bool = True) -> dict:
    """Run every shard task of a specimens folder into ``cfg['out']``; return the index."""
    from ..progress import bar as make_bar
    from ..specimens.supercell import read_specimens

    specimens = read_specimens(specimens_dir)
    widest = widest_optics(cfg)  # built (and checked) once, before anything runs
    need, biggest = 0.0, None
    for r in specimens.rows[: cfg["limit"]] if cfg.get("limit") else specimens.rows:
        for optics in widest:
            check_semiangle(optics, r.plan.box_A)
        tilted = r.tilt_mode == "atoms" and tuple(r.tilt_mrad) != (0.0, 0.0)  # no period along z (z_period_A)
        phonons = cfg["frozen_phonons"] if cfg["phonon_fraction"] > 0 else 0
        b = memory_bytes(cfg["output_px"], None if tilted else r.plan.period_z_A, r.thicknesses_A,
                         cfg["slice_thickness_A"], cfg["positions_per_specimen"], phonons)
        if b > need:
            need, biggest = b, r.specimen_id
    if biggest is not None:
        check_fits(need * (workers if scheduler is None else 1),
                   f"simulate: specimen {biggest}" + (f" in each of {workers} workers" if workers > 1 and scheduler
                                                      is None else ""),
                   "lower `output_px`, raise `slice_thickness_A`, or use fewer `positions_per_specimen` or `workers`")
    out = Path(cfg["out"])
    tasks = plan_tasks(specimens, cfg)
    used_rows = [specimens.row(s) for t in tasks for s in t.specimen_ids]
    splits = split_crystals(used_rows, cfg)
    header = {"schema": shards.INDEX_SCHEMA, "config": cfg, "seed": cfg["seed"], "software": software_versions(),
              "specimens": str(specimens_dir), "specimens_sha256": _folder_hash(Path(specimens_dir))}
    todo = _prepare_output(out, tasks, header, overwrite)
    wisdom = _wisdom(out, (cfg["positions_per_specimen"], antialiased_gpts(cfg["output_px"]),
                           antialiased_gpts(cfg["output_px"])), cfg["fft_planning"])
    done = len(tasks) - len(todo)
    if done:
        log.info("resuming: %d of %d shards already complete in %s", done, len(tasks), out)
    def patterns(task: ShardTask) -> int:  # thicknesses x probe positions per specimen
        return sum(len(specimens.row(s).thicknesses_A) for s in task.specimen_ids) * cfg["positions_per_specimen"]

    total = sum(patterns(t) for t in tasks)
    bar = make_bar(total, "simulate", unit="pattern", disable=not progress_bar,
                   initial=total - sum(patterns(t) for t in todo))
    t0 = time.perf_counter()
    made = 0
    args = (str(specimens_dir), str(out))
    kill_after, kill_who = _kill_hook()
    try:
        for n, result in enumerate(_execute(todo, args, cfg, splits, workers, scheduler, wisdom), 1):
            made += result["samples"]
            bar.update(result["samples"])
            bar.set_postfix_str(f"{made / (time.perf_counter() - t0):.2f} patterns/s")
            if n == kill_after and kill_who == "group":
                os.killpg(os.getpgrp(), signal.SIGKILL)  # this process and its workers, the others mid-shard
            elif n == kill_after and kill_who == "parent":
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    index = _write_index(out, tasks, header, splits, used_rows)
    index["run"] = {"patterns": made, "seconds": seconds}
    return index


def _execute(todo, args, cfg, splits, workers: int, scheduler: str | None, wisdom=None):
    if not todo:
        return
    if scheduler:
        try:
            from distributed import Client, as_completed
        except ImportError:  # pragma: no cover
            raise FourdError("`scheduler` needs dask.distributed (pip install distributed)") from None
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise FourdError(f"cannot reach dask scheduler {scheduler}: {exc}") from None
        try:
            futures = [client.submit(run_shard, *args, t, cfg, splits, 1, wisdom, key=f"fourdcrystal-{t.task_hash}-{t.index}",
                                     pure=False) for t in todo]
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            client.close()
    elif workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed as cf_completed

        from concurrent.futures.process import BrokenProcessPool

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                 initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(run_shard, *args, t, cfg, splits, 1, wisdom) for t in todo]
            try:
                for fut in cf_completed(futures):
                    yield fut.result()
            except BrokenProcessPool:
                for f in futures:
                    f.cancel()
                raise FourdError("a worker process died (killed, or out of memory); finished shards are kept: "
                                 "rerun the same command to resume") from None
            except BaseException:  # a task's error ends the run: the queued tasks are not started
                for f in futures:
                    f.cancel()
                raise
    else:
        for t in todo:
            yield run_shard(*args, t, cfg, splits, 1, wisdom)


WISDOM = "fftw-wisdom.json"


def _cache_dir() -> Path:
    return Path(os.environ.get("FOURDCRYSTAL_CACHE", Path.home() / ".cache" / "fourdcrystal"))


def _read_wisdom(path: Path):
    try:
        data = json.loads(path.read_text())
        return tuple(data[k].encode("ascii") for k in ("double", "single", "longdouble"))
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def _write_wisdom(path: Path, wisdom) -> None:
    keys = ("double", "single", "longdouble")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({k: w.decode("ascii") for k, w in zip(keys, wisdom)}) + "\n")
    except OSError as exc:  # a read-only home is no reason to stop
        log.debug("could not write FFTW wisdom to %s: %s", path, exc)


def _wisdom(out: Path, shape: tuple[int, int, int], planning: str):
    """FFT plans for this run: the dataset's own (resume), else this machine's cache, else new.

    Every worker imports the same wisdom, so a shard's numbers do not depend on who computed it.
    """
    from .engine import fftw_wisdom

    if planning == "estimate":
        return None
    own = out / WISDOM
    prior = _read_wisdom(own) or _read_wisdom(_cache_dir() / WISDOM)
    wisdom = fftw_wisdom([shape], planning, prior)
    if wisdom is None:  # pragma: no cover - no pyfftw
        return None
    if not own.exists():
        _write_wisdom(own, wisdom)
    _write_wisdom(_cache_dir() / WISDOM, wisdom)
    return wisdom


def _folder_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("specimens.csv", "crystals.json"):
        p = folder / name
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()


def _write_index(out: Path, tasks: list[ShardTask], header: dict, splits: dict[str, str], rows) -> dict:
    entries = []
    counts: dict[str, int] = {"train": 0, "val": 0, "test": 0}
    for t in tasks:
        with shards.Shard(out / t.file) as sh:
            n = len(sh)
            for s in sh.meta("split"):
                counts[str(s)] += 1
        entries.append({"file": t.file, "samples": n, "task": t.task_hash, "specimens": len(t.specimen_ids)})
    index = {**header, "shards": entries, "samples": sum(e["samples"] for e in entries), "split_counts": counts,
             "crystal_split": dict(sorted(splits.items())),
             "conventions": "images (n, H, W), axis 1 = k_x, axis 2 = k_y, q = 0 at (H//2, W//2); cbed and probe "
                            "scaled so the vacuum probe has max 1; vg in V·Å (4D-MAKE definition), qz in Å⁻¹"}
    write_text_atomic(out / shards.INDEX, json.dumps(index, indent=1, sort_keys=True, default=str) + "\n")
    return index


def add_truth(dataset: str | Path, specimens_dir: str | Path | None = None, overwrite: bool = False,
              progress_bar: bool = True) -> dict:
    """Add the physical truth to every shard of a dataset simulated before shards held it; no pattern is simulated.

    The specimens folder is the one the dataset was simulated from (recorded in ``index.json``, or
    ``specimens_dir``; its hash must match). Each specimen is rebuilt from its manifest row and its
    reflections computed; strengths are measured on the stored clean patterns. Each shard is rewritten
    atomically, so a killed run loses nothing and a rerun skips the shards already done (``overwrite``
    recomputes them). Returns {shards, done, skipped, samples, seconds}.
    """
    from ..progress import bar as make_bar
    from ..specimens.supercell import load_specimen, read_specimens
    from .truth import specimen_reflections

    folder = Path(dataset)
    index = shards.read_index(folder)
    if specimens_dir is None:
        recorded = Path(str(index.get("specimens", "")))
        specimens_dir = next((p for p in (folder / SINGLE_SPECIMEN, recorded) if (p / "specimens.csv").exists()),
                             recorded)
    specimens_dir = Path(specimens_dir)
    if not (specimens_dir / "specimens.csv").exists():
        raise FourdError(f"{specimens_dir}: no specimens.csv; give the specimens folder {folder} was simulated from "
                         f"(`specimens`)")
    if index.get("specimens_sha256") and _folder_hash(specimens_dir) != index["specimens_sha256"]:
        raise FourdError(f"{specimens_dir} is not the specimens folder {folder} was simulated from (its hash differs "
                         f"from index.json's specimens_sha256)")
    specimens = read_specimens(specimens_dir)
    todo = []
    for entry in index["shards"]:
        with shards.Shard(folder / entry["file"]) as sh:
            if overwrite or not sh.has_truth:
                todo.append(entry)
    t0 = time.perf_counter()
    made = 0
    bar = make_bar(sum(e["samples"] for e in todo), "truth", unit="pattern", disable=not progress_bar)
    try:
        for entry in todo:
            path = folder / entry["file"]
            built: dict = {}
            truth = []
            with shards.Shard(path) as sh:
                ids, thick = sh.meta("specimen_id"), sh.meta("thickness_A")
                energy, alpha, dk = sh.meta("energy_eV"), sh.meta("semiangle_mrad"), sh.meta("k_sampling_invA")
                for i in range(len(sh)):
                    sid = str(ids[i])
                    if sid not in built:  # samples of a specimen sit together: keep one at a time
                        built = {sid: load_specimen(specimens, sid)}
                    cbed = sh.file["cbed"][i]
                    truth.append(specimen_reflections(built[sid], cbed, float(energy[i]), float(alpha[i]),
                                                      float(thick[i]), tuple(float(x) for x in dk[i])))
                    bar.update(1)
                    made += 1
            shards.add_truth(path, truth)
    finally:
        bar.close()
    return {"shards": len(index["shards"]), "done": len(todo), "skipped": len(index["shards"]) - len(todo),
            "samples": made, "seconds": time.perf_counter() - t0}
