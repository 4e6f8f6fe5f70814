"""`fourdcrystal simulate` / `inspect` end to end: shards, index, splits, resume, workers, dask, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from fourdcrystal.simulation import shards
from fourdcrystal.simulation.runner import SINGLE_SPECIMEN
from fourdcrystal.specimens.supercell import read_specimens

from .conftest import ROOT, colorbar_label, image_data, run_cli

SIM = ["--output-px", "32", "--specimens-per-shard", "1", "--slice-thickness", "2", "--semiangle", "3"]


@pytest.fixture(scope="module")
def specimens(tmp_path_factory):
    base = tmp_path_factory.mktemp("sim")
    assert run_cli("-q", "select", "--max-crystals", "4", "--out", str(base / "cat")).exit_code == 0
    res = run_cli("-q", "supercell", str(base / "cat"), "--out", str(base / "spec"), "--zone-axes", "1",
                  "--thickness", "20,40", "--lateral-size", "12", "--max-index", "1")
    assert res.exit_code == 0, res.output
    return base / "spec"


@pytest.fixture(scope="module")
def dataset(specimens):
    out = specimens.parent / "ds"
    res = run_cli("-q", "simulate", str(specimens), "--out", str(out), *SIM)
    assert res.exit_code == 0, res.output
    return out


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    index = shards.read_index(folder)
    out: dict[str, list] = {}
    for e in index["shards"]:
        with h5py.File(folder / e["file"], "r") as f:
            for k in shards.IMAGES:
                out.setdefault(k, []).append(f[k][...])
            out.setdefault("sample_id", []).append(f["meta/sample_id"].asstr()[...])
    return {k: np.concatenate(v) for k, v in out.items()}


def _assert_same(a_dir: Path, b_dir: Path) -> None:
    """Bit-identical images and the same sample order."""
    a, b = _arrays(a_dir), _arrays(b_dir)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_shards_and_index(dataset, specimens):
    index = json.loads((dataset / "index.json").read_text())
    assert index["schema"] == "fourdcrystal.dataset/1" and index["seed"] == 0
    assert index["config"]["energy_eV"] == 200e3 and index["software"]["abtem"]
    assert len(index["shards"]) == 4 and index["samples"] == 8  # 4 specimens x 2 thicknesses
    seen: dict[str, set] = {}
    spec = read_specimens(specimens)
    for e in index["shards"]:
        with h5py.File(dataset / e["file"], "r") as f:
            assert f.attrs["schema"] == "fourdcrystal.shard/1"
            assert f.attrs["abtem_version"] and f.attrs["fourdcrystal_version"]
            n = e["samples"]
            for k in shards.IMAGES:
                d = f[k]
                assert d.shape == (n, 32, 32) and d.dtype == np.float32 and d.chunks == (1, 32, 32)
                assert d.compression == "gzip"
            for name in shards.META:
                assert len(f["meta"][name]) == n
            k = f["meta/k_sampling_invA"][...]
            np.testing.assert_allclose(f.attrs["k_sampling_invA"], np.median(k, axis=0))
            for sid, kk in zip(f["meta/specimen_id"].asstr()[...], k):  # pixel size = 1 / box side
                np.testing.assert_allclose(1.0 / kk, spec.row(sid).plan.box_A, rtol=1e-6)
            assert np.allclose(f["probe"][...].max(axis=(1, 2)), 1.0)
            assert sorted(f["meta/thickness_nominal_A"][...].tolist()) == [20.0, 40.0] * (n // 2)
            assert np.allclose(f["meta/thickness_A"][...], f["meta/thickness_nominal_A"][...], atol=1.5)
            for cid, split in zip(f["meta/crystal_id"].asstr()[...], f["meta/split"].asstr()[...]):
                seen.setdefault(cid, set()).add(split)
                assert index["crystal_split"][cid] == split
    assert all(len(s) == 1 for s in seen.values())  # no crystal in two splits
    assert set(index["crystal_split"].values()) == {"train", "val", "test"}  # 4 crystals: 2 / 1 / 1
    assert not (dataset / "run.json").read_text() == ""


def test_same_seed_same_data_with_workers(dataset, specimens, tmp_path):
    res = run_cli("-q", "simulate", str(specimens), "--out", str(tmp_path / "w2"), *SIM, "--workers", "2")
    assert res.exit_code == 0, res.output
    _assert_same(dataset, tmp_path / "w2")


def test_killed_run_resumes_to_same_dataset(dataset, specimens, tmp_path):
    """SIGKILL to the runner and its two workers once the first shard is in (a hook, not a race: the kill lands
    mid-run every time, with the other worker's shards unfinished); the same command then resumes to the
    dataset of an uninterrupted run."""
    from fourdcrystal.simulation.runner import KILL_AFTER_SHARDS_ENV

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fourdcrystal.cli", "-q", "simulate", str(specimens), "--out", str(out), *SIM,
           "--workers", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env={**os.environ, KILL_AFTER_SHARDS_ENV: "1"}, timeout=600)
    assert proc.returncode == -signal.SIGKILL
    done = sorted(p.name for p in out.glob("shard-*.h5"))
    assert 1 <= len(done) < 4 and not (out / "index.json").exists(), done  # killed mid-run
    (out / ".shard-000003.h5.junk.tmp").write_bytes(b"half a file")  # what a kill mid-write leaves
    res = run_cli("simulate", str(specimens), "--out", str(out), *SIM)
    assert res.exit_code == 0, res.output
    assert not list(out.glob(".shard-*.tmp"))
    _assert_same(dataset, out)


def test_killed_worker_one_line_then_resume(dataset, specimens, tmp_path):
    """A worker SIGKILLed as it starts the second shard task (a hook, not a race): simulate ends with one
    error line and no index; the same command then resumes to the dataset of an uninterrupted run."""
    from fourdcrystal.simulation.runner import KILL_AFTER_SHARDS_ENV

    out = tmp_path / "worker"
    cmd = [sys.executable, "-m", "fourdcrystal.cli", "-q", "simulate", str(specimens), "--out", str(out), *SIM,
           "--workers", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, KILL_AFTER_SHARDS_ENV: "1:worker"})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: a worker process died"), \
        proc.stderr
    assert not (out / "index.json").exists() and not (out / shards.shard_name(1)).exists()
    res = run_cli("-q", "simulate", str(specimens), "--out", str(out), *SIM)
    assert res.exit_code == 0, res.output
    _assert_same(dataset, out)


def _group_workers(pgid: int) -> list[int]:
    """Living (not zombie) multiprocessing workers in process group ``pgid``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z" and "spawn_main" in cmd:
            out.append(int(d.name))
    return out


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the workers in /proc (Linux)")
def test_killed_parent_takes_its_workers_along(specimens, tmp_path):
    """SIGKILL of the main simulate process alone (not its group), by a hook once its first shard is in, while
    its other worker is mid-shard: the workers die with it (PR_SET_PDEATHSIG) and write nothing more; the same
    command then resumes."""
    from fourdcrystal.simulation.runner import KILL_AFTER_SHARDS_ENV

    out = tmp_path / "orphans"
    args = ["--output-px", "96", "--specimens-per-shard", "1", "--slice-thickness", "2", "--semiangle", "3"]
    cmd = [sys.executable, "-m", "fourdcrystal.cli", "-q", "simulate", str(specimens), "--out", str(out), *args,
           "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, KILL_AFTER_SHARDS_ENV: "1:parent"})
    assert proc.wait(timeout=600) == -signal.SIGKILL  # the parent, killed by the hook
    deadline = time.time() + 15
    while time.time() < deadline and _group_workers(proc.pid):
        time.sleep(0.1)
    assert not _group_workers(proc.pid), "workers outlived their parent"
    files = sorted(p.name for p in out.iterdir())
    assert not (out / "index.json").exists() and len(list(out.glob("shard-*.h5"))) < 4, files
    time.sleep(2.0)
    assert sorted(p.name for p in out.iterdir()) == files  # nobody writes any more
    res = run_cli("-q", "simulate", str(specimens), "--out", str(out), *args)
    assert res.exit_code == 0, res.output


def test_dask_cluster_gives_same_dataset(dataset, specimens, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        res = run_cli("-q", "simulate", str(specimens), "--out", str(tmp_path / "dask"), *SIM,
                      "--scheduler", cluster.scheduler_address)
    assert res.exit_code == 0, res.output
    _assert_same(dataset, tmp_path / "dask")


def _assert_montage_draws_the_samples(fig, folder: Path, rows: int) -> None:
    """A sample montage: one row per sample, its cbed / probe / vg drawn from the shard on log scales (clipped
    at the floor), q_z where V_g is strong, each panel with its colour bar and axes in Å⁻¹."""
    samples = {}
    for e in shards.read_index(folder)["shards"]:
        with shards.Shard(folder / e["file"]) as sh:
            for i in range(e["samples"]):
                samples[str(sh.meta("sample_id")[i])] = (sh.images(i), np.asarray(sh.meta("k_sampling_invA")[i]))
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 4 * rows
    for r in range(rows):
        row = panels[4 * r: 4 * r + 4]
        images, dk = samples[row[0].get_title(loc="left").split("\n")[0].split(":")[0]]
        for ax, name in zip(row, ("cbed", "probe", "vg")):
            shown, truth = image_data(ax), np.asarray(images[name], float)
            np.testing.assert_allclose(shown, np.maximum(truth, shown.min()), rtol=1e-6)
        qz = image_data(row[3])
        strong = images["vg"] >= 0.02 * images["vg"].max()
        np.testing.assert_allclose(qz[strong], images["qz"][strong], rtol=1e-6)
        assert np.isnan(qz[~strong]).all()
        assert [colorbar_label(ax) for ax in row] == ["intensity (probe max = 1)", "intensity", "V_g (V·Å)",
                                                      "q_z (Å⁻¹)"]
        h, w = images["cbed"].shape
        left, right, _, _ = row[0].images[0].get_extent()
        assert right - left == pytest.approx(w * dk.reshape(-1)[-1])
        assert all(ax.get_xlabel() == "q_y (Å⁻¹)" and ax.get_ylabel() == "q_x (Å⁻¹)" for ax in row)


def test_inspect(dataset, drawn):
    res = run_cli("inspect", str(dataset), "--samples", "2")
    assert res.exit_code == 0, res.output
    assert "8 samples in 4 shards" in res.output and "train" in res.output and "20" in res.output
    _assert_montage_draws_the_samples(drawn["inspect.png"], dataset, rows=2)


SI_CIF = """data_Si
_symmetry_space_group_name_H-M 'F d -3 m'
_cell_length_a 5.431
_cell_length_b 5.431
_cell_length_c 5.431
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_Int_Tables_number 227
loop_
_symmetry_equiv_pos_as_xyz
x,y,z
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Si1 Si 0 0 0
"""


def test_single_structure_mode(tmp_path, drawn):
    cif = tmp_path / "Si.cif"
    cif.write_text(SI_CIF.replace("x,y,z", "x,y,z\n" + "\n".join([
        "x,y+1/2,z+1/2", "x+1/2,y,z+1/2", "x+1/2,y+1/2,z", "x+1/4,y+1/4,z+1/4", "x+1/4,y+3/4,z+3/4",
        "x+3/4,y+1/4,z+3/4", "x+3/4,y+3/4,z+1/4"])))
    out = tmp_path / "si110"
    res = run_cli("-q", "simulate", "--structure", str(cif), "--zone-axis", "1", "1", "0", "--thickness", "20,40",
                  "--energy", "200e3", "--semiangle", "2", "--output-px", "32", "--lateral-size", "12",
                  "--out", str(out))
    assert res.exit_code == 0, res.output
    index = shards.read_index(out)
    assert index["samples"] == 2
    _assert_montage_draws_the_samples(drawn["patterns.png"], out, rows=2)  # every pattern of the crystal
    with h5py.File(out / index["shards"][0]["file"], "r") as f:
        assert f["meta/formula"].asstr()[0] == "Si"
        assert f["meta/zone_axis"][0].tolist() == [1, 1, 0]
        assert f["meta/strain"][0].tolist() == [0.0, 0.0, 0.0]
    strained = tmp_path / "si110-strained"
    res = run_cli("-q", "simulate", "--structure", str(cif), "--zone-axis", "1", "1", "0", "--thickness", "20",
                  "--energy", "200e3", "--semiangle", "2", "--output-px", "32", "--lateral-size", "12",
                  "--strain", "1", "-0.5", "0", "--out", str(strained))
    assert res.exit_code == 0, res.output
    index = shards.read_index(strained)
    with h5py.File(strained / index["shards"][0]["file"], "r") as f:
        np.testing.assert_allclose(f["meta/strain"][0], [0.01, -0.005, 0.0])
        plain_k = 1.0 / np.array(read_specimens(out / SINGLE_SPECIMEN).rows[0].plan.box_A)
        # a periodic cell stretched by 1 + ε: its pattern pixel (1 / box) shrinks by as much
        np.testing.assert_allclose(f["meta/k_sampling_invA"][0], plain_k / [1.01, 0.995], rtol=1e-9)


def _error(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def _wavelength_A(energy_eV: float) -> float:
    """Relativistic electron wavelength from CODATA constants (independent of the package)."""
    h, m, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    return h / np.sqrt(2 * m * e * energy_eV * (1 + e * energy_eV / (2 * m * c**2))) * 1e10


def test_energy_and_semiangle_lists_draw_one_per_specimen(specimens, tmp_path):
    """Lists in the config: each specimen gets one energy and one semi-angle, its probe disk shows them."""
    out = tmp_path / "mixed"
    args = ["--output-px", "32", "--specimens-per-shard", "2", "--energy", "200e3,300e3", "--semiangle", "8,16"]
    res = run_cli("-q", "simulate", str(specimens), "--out", str(out), *args)
    assert res.exit_code == 0, res.output
    index = shards.read_index(out)
    assert index["config"]["energy_eV"] == [200e3, 300e3] and index["config"]["semiangle_mrad"] == [8.0, 16.0]
    by_specimen: dict[str, set] = {}
    combos = set()
    for e in index["shards"]:
        with h5py.File(out / e["file"], "r") as f:
            energy, semi = f["meta/energy_eV"][...], f["meta/semiangle_mrad"][...]
            dk = f["meta/k_sampling_invA"][...]
            for i, sid in enumerate(f["meta/specimen_id"].asstr()[...]):
                by_specimen.setdefault(sid, set()).add((energy[i], semi[i]))
                combos.add((energy[i], semi[i]))
                probe = f["probe"][i]
                radius_px = np.sqrt((probe > 0.5 * probe.max()).sum() / np.pi)
                expected = semi[i] * 1e-3 / _wavelength_A(energy[i]) / dk[i].mean()
                assert abs(radius_px - expected) < 0.6, (energy[i], semi[i], radius_px, expected)
    assert all(len(v) == 1 for v in by_specimen.values())  # the thickness series shares its optics
    assert {c[0] for c in combos} <= {200e3, 300e3} and {c[1] for c in combos} <= {8.0, 16.0}
    assert len(combos) >= 2
    # same lists, same seed: the same files (the draw is seeded per specimen)
    again = tmp_path / "again"
    assert run_cli("-q", "simulate", str(specimens), "--out", str(again), *args).exit_code == 0
    _assert_same(out, again)
    summary = run_cli("inspect", str(out))
    assert "200/300 kV, 8/16 mrad" in summary.output, summary.output
    # a listed semi-angle too large for one of the listed energies is refused before anything runs
    msg = _error(run_cli("simulate", str(specimens), "--out", str(tmp_path / "big"), "--output-px", "32",
                         "--energy", "100e3,300e3", "--semiangle", "8,28"))
    assert "28 mrad is too large" in msg and not (tmp_path / "big").exists()


def test_bad_input_one_line_nothing_written(specimens, tmp_path):
    out = tmp_path / "bad"
    msg = _error(run_cli("simulate", str(specimens), "--out", str(out), *SIM, "--energy", "-5"))
    assert "--energy (energy_eV): '-5'; expected a number >= 10000.0" in msg
    msg = _error(run_cli("simulate", str(specimens), "--out", str(out), *SIM, "--semiangle", "60"))
    assert "largest allowed is" in msg and "mrad" in msg
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("manifest.json", "crystals.json"):
        (empty / name).write_text((specimens / name).read_text())
    (empty / "specimens.csv").write_text((specimens / "specimens.csv").read_text().splitlines()[0] + "\n")
    assert "lists no specimens" in _error(run_cli("simulate", str(empty), "--out", str(out), *SIM))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "cannot write output folder" in _error(run_cli("simulate", str(specimens), "--out",
                                                          str(blocker / "ds"), *SIM))
    assert not out.exists()


def test_existing_dataset_with_other_config_is_kept(dataset, specimens):
    before = _arrays(dataset)
    msg = _error(run_cli("simulate", str(specimens), "--out", str(dataset), *SIM, "--energy", "300e3"))
    assert "another config" in msg
    after = _arrays(dataset)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_task_hash_covers_every_setting_but_the_excluded_ones(specimens):
    """A resumed run must not keep shards made with other settings: changing any simulate setting changes every
    task hash, except the listed ones (worker count, output folder), which change none."""
    from fourdcrystal.config import SIMULATE_SCHEMA, load_config
    from fourdcrystal.simulation.runner import HASH_EXCLUDED, plan_tasks
    from fourdcrystal.specimens.supercell import read_specimens

    spec = read_specimens(specimens)
    base = load_config("simulate")
    hashes = [t.task_hash for t in plan_tasks(spec, base)]
    changed = {"energy_eV": 300e3, "semiangle_mrad": 3.0, "defocus_A": 10.0, "cs_A": 1e6, "output_px": 64,
               "slice_thickness_A": 1.5, "parametrization": "kirkland", "probe_position": "random",
               "positions_per_specimen": 2, "frozen_phonons": 2, "phonon_sigma_A": 0.1, "specimens_per_shard": 3,
               "val_fraction": 0.2, "test_fraction": 0.2, "limit": 2, "fft_planning": "measure", "seed": 5,
               "workers": 3, "out": "elsewhere", "split_by": "prototype", "phonon_fraction": 0.5}
    assert set(changed) == set(SIMULATE_SCHEMA), "a new simulate setting: add it here, hashed or excluded"
    for key, value in changed.items():
        other = [t.task_hash for t in plan_tasks(spec, {**base, key: value})]
        if key in HASH_EXCLUDED:
            assert other == hashes, key
        else:
            assert other[0] != hashes[0], key


def test_phonon_fraction_draws_which_specimens_get_frozen_phonons():
    """phonon_fraction: a seeded draw per specimen, independent of everything else; 1 (the default) is all."""
    from fourdcrystal.simulation.runner import specimen_phonons

    seeds = range(2000)
    cfg = {"frozen_phonons": 4, "phonon_fraction": 0.25}
    drawn = [specimen_phonons(cfg, s) for s in seeds]
    assert set(drawn) == {0, 4} and 0.2 < drawn.count(4) / len(drawn) < 0.3
    assert drawn == [specimen_phonons(cfg, s) for s in seeds]
    assert {specimen_phonons({"frozen_phonons": 4, "phonon_fraction": 1.0}, s) for s in seeds} == {4}
    assert {specimen_phonons({"frozen_phonons": 0, "phonon_fraction": 0.5}, s) for s in seeds} == {0}


def test_split_by_prototype_keeps_each_prototype_in_one_split(specimens):
    """split_by: prototype puts every crystal of a prototype in the split its prototype drew (unseen test
    prototypes); split_by: crystal, the default, is hashed as datasets made before the setting existed were."""
    from fourdcrystal.config import load_config
    from fourdcrystal.simulation.runner import plan_tasks, split_crystals
    from fourdcrystal.specimens.supercell import SpecimenRow, read_specimens

    spec = read_specimens(specimens)
    rows = list(spec.rows)
    # a second crystal of the first row's prototype
    twin = SpecimenRow(**{**rows[0].__dict__, "specimen_id": rows[0].specimen_id + "-twin",
                          "crystal_id": rows[0].crystal_id + "-twin"})
    cfg = {**load_config("simulate"), "val_fraction": 0.3, "test_fraction": 0.3, "split_by": "prototype"}
    splits = split_crystals(rows + [twin], cfg)
    assert splits[twin.crystal_id] == splits[rows[0].crystal_id]
    by_proto: dict = {}
    for r in rows + [twin]:
        by_proto.setdefault(r.prototype, set()).add(splits[r.crystal_id])
    assert all(len(s) == 1 for s in by_proto.values())
    base = load_config("simulate")
    legacy = {k: v for k, v in base.items() if k != "split_by"}  # a config from before the setting
    assert [t.task_hash for t in plan_tasks(spec, base)] == [t.task_hash for t in plan_tasks(spec, legacy)]


def test_non_finite_patterns_are_refused_not_written(specimens, tmp_path, monkeypatch):
    """A simulation that yields NaN (here a probe wave made NaN: optics inside their stated ranges can still
    overflow) stops with one line naming the optics, and writes no shard and no index (a NaN shard would
    train and score as if it were data). Runs in this process (one worker), so the patch reaches it."""
    from fourdcrystal.simulation import engine

    real = engine.probe_waves
    monkeypatch.setattr(engine, "probe_waves", lambda *a, **k: real(*a, **k) * np.nan)
    out = tmp_path / "nan"
    res = run_cli("simulate", str(specimens), "--out", str(out), "--output-px", "32", "--specimens-per-shard", "2",
                  "--cs", "1e7")
    line = _error(res)
    assert "non-finite" in line and "cs_A 1e+07" in line
    assert not list(out.glob("shard-*.h5")) and not (out / "index.json").exists()
