"""Faults a user meets: a full disk (a small tmpfs in a private mount namespace), one-line usage errors,
duplicate config keys."""

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from fourdcrystal.errors import FourdError

from .conftest import run_cli

DATA = Path(__file__).parent / "data"


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"], capture_output=True)
    if res.returncode == 0:
        return True
    res = subprocess.run(["unshare", "-Urm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"],
                         capture_output=True)
    return res.returncode == 0


def _unshare_prefix() -> list[str]:
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return ["unshare", "-m", "--propagation", "private"] if res.returncode == 0 else ["unshare", "-Urm"]


PATCHED = ("import sys, fourdcrystal.prediction.stage as P\n"
           "if 'nocheck' in sys.argv[1]:\n"
           "    P.estimate_output_bytes = lambda *a, **k: 0\n"
           "    P._room_for = lambda *a, **k: None\n"
           "from fourdcrystal.cli import main\n"
           "sys.argv = ['fourdcrystal', *sys.argv[2:]]\n"
           "main()\n")


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no private mount namespace with tmpfs here (unshare)")
def test_full_disk_is_one_line_and_the_run_resumes(tmp_path):
    """predict into a 300 kB tmpfs: refused before any work (free-space check). With the checks disabled, the
    disk fills mid-write: one line, exit 2, no segfault, no lock left; with room again the same command
    completes, and its vectors equal those of a run on a roomy disk."""
    data = DATA / "py4dstem_datacube.h5"
    reference = tmp_path / "ref.h5"
    opts = ["--baseline", "--chunk", "1", "--energy", "200e3", "--semiangle", "3"]
    res = run_cli("-q", "predict", str(data), "--out", str(reference), *opts)
    assert res.exit_code == 0, res.output
    script = tmp_path / "patched.py"
    script.write_text(PATCHED)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    py = sys.executable
    args = f"predict {data} --out {mnt}/r.h5 {' '.join(opts)}"
    shell = f"""
set -u
mount -t tmpfs -o size=300k tmpfs {mnt}
{py} {script} check {args} > {tmp_path}/a.out 2>&1; echo $? > {tmp_path}/a.rc
ls -A {mnt} > {tmp_path}/a.ls
{py} {script} nocheck {args} > {tmp_path}/b.out 2>&1; echo $? > {tmp_path}/b.rc
ls -A {mnt} > {tmp_path}/b.ls
mount -o remount,size=50m {mnt}
{py} {script} check {args} > {tmp_path}/c.out 2>&1; echo $? > {tmp_path}/c.rc
cp {mnt}/r.h5 {tmp_path}/resumed.h5
"""
    res = subprocess.run([*_unshare_prefix(), "bash", "-c", shell], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr

    def lines(name):
        return [ln for ln in (tmp_path / f"{name}.out").read_text().splitlines()
                if ln.strip() and not ln.startswith("warning:")]

    assert (tmp_path / "a.rc").read_text().strip() == "2"
    assert len(lines("a")) == 1 and "not enough free space" in lines("a")[0], lines("a")
    assert (tmp_path / "a.ls").read_text().split() == []  # nothing written, no lock
    assert (tmp_path / "b.rc").read_text().strip() == "2"  # not 139: no segfault
    assert len(lines("b")) == 1 and "No space left on device (errno 28)" in lines("b")[0], lines("b")
    assert "r.h5.lock" not in (tmp_path / "b.ls").read_text().split()
    assert (tmp_path / "c.rc").read_text().strip() == "0", (tmp_path / "c.out").read_text()
    # the reference ran in this process, the resumed run in another: float32 network outputs may differ in
    # the last bits between processes (thread counts), nothing more
    with h5py.File(reference) as a, h5py.File(tmp_path / "resumed.h5") as b:
        for m in ("model", "baseline"):
            np.testing.assert_array_equal(a[m]["offsets"][()], b[m]["offsets"][()], err_msg=m)
            for k in ("qx_invA", "qy_invA", "intensity"):
                np.testing.assert_allclose(a[m][k][()], b[m][k][()], rtol=1e-5, atol=1e-6, err_msg=f"{m}/{k}")


@pytest.mark.parametrize("args,message", [
    (["predict"], "Missing argument"),
    (["strain", "x.h5", "--method", "foo"], "Invalid value for '--method'"),
    (["nope"], "No such command 'nope'"),
    (["train", "ds", "--epochs", "x"], "'x' is not a valid integer"),
    (["supercell", "--zone-axes", "2.5"], "'2.5' is not a valid integer"),
    (["simulate", "--zone-axis", "1", "1"], "--zone-axis"),
])
def test_usage_errors_are_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = subprocess.run([sys.executable, "-m", "fourdcrystal.cli", *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    err = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0] and "--help" in err[0], res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text,key", [
    ("simulate:\n  output_px: 64\n  seed: 1\n  output_px: 128\n", "'output_px' given twice (line 4)"),
    ("simulate:\n  output_px: 64\nsimulate:\n  seed: 2\n", "'simulate' given twice (line 3)"),
    ("train:\n  model:\n    width: 8\n    width: 16\n", "'width' given twice"),
])
def test_duplicate_config_keys_are_refused(tmp_path, text, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    section = "train" if text.startswith("train") else "simulate"
    res = run_cli(section, str(tmp_path / "x"), "--config", str(cfg))
    assert res.exit_code == 2 and key in res.output and res.output.count("\n") == 1, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_version_and_help_still_exit_zero():
    for args in (["--version"], ["--help"], ["strain", "--help"]):
        res = subprocess.run([sys.executable, "-m", "fourdcrystal.cli", *args], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0 and res.stdout, (args, res.stderr)


def _sweep_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fault_sweep", Path(__file__).resolve().parents[1] / "scripts"
                                                  / "fault_sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_sweep"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


SWEEP = _sweep_module()


def _in_process(args: list[str]) -> tuple[int, str]:
    import traceback

    from click.testing import CliRunner

    from fourdcrystal.cli import cli

    res = CliRunner().invoke(cli, args, catch_exceptions=True)
    out = res.output
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        out += "".join(traceback.format_exception(res.exception))
    return res.exit_code, out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("faults")
    SWEEP.build_workspace(ws, _in_process)
    return ws


def test_the_readme_counts_the_fault_table():
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"fault_sweep.py` runs (\d+) bad inputs", readme)
    assert stated and int(stated.group(1)) == len(SWEEP.cases())


@pytest.mark.slow
@pytest.mark.parametrize("case", SWEEP.cases(), ids=lambda c: c.name)
def test_fault_table(case, workspace):
    """scripts/fault_sweep.py's table: exit 2, one line `error: …` with the expected words, no traceback,
    no new or changed file in the workspace."""
    import os

    if "root-skip" in case.tags and os.geteuid() == 0:
        pytest.skip("running as root: permissions do not stop writes (read-only mounts: test_read_only_outputs)")
    if "needs-no-cuda" in case.tags:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    ok, message = SWEEP.check(case, workspace, _in_process)
    assert ok, message


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no private mount namespace here (unshare)")
def test_read_only_outputs(workspace, tmp_path):
    """Every stage pointed at a read-only mount: one line naming the folder and 'Read-only file system',
    exit 2, before any work."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ws = workspace
    np.save(ws / "ro-scan.npy", np.random.default_rng(0).poisson(5.0, (2, 2, 32, 32)).astype(np.float32))
    commands = [
        f"predict {ws}/model/model.pt {ws}/ro-scan.npy --k-pixel 0.05 --energy 200e3 --semiangle 3 --out {ro}/p.h5",
        f"train {ws}/ds --epochs 1 --width 4 --depth 2 --loader-workers 0 --out {ro}/m",
        f"evaluate {ws}/model/model.pt {ws}/ds --out {ro}/ev",
        f"simulate {ws}/spec --out {ro}/ds --output-px 32",
        f"select --max-crystals 2 --out {ro}/cat",
        f"supercell {ws}/cat --out {ro}/spec",
        f"inspect {ws}/ds --png {ro}/i.png",
    ]
    py = sys.executable
    lines = [f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} || exit 99"]
    for k, c in enumerate(commands):
        lines.append(f"{py} -m fourdcrystal.cli {c} > {tmp_path}/{k}.out 2>&1; echo $? > {tmp_path}/{k}.rc")
    res = subprocess.run([*_unshare_prefix(), "bash", "-c", "\n".join(lines)], capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr
    for k, c in enumerate(commands):
        out = [ln for ln in (tmp_path / f"{k}.out").read_text().splitlines()
               if ln.strip() and not ln.startswith("warning:")]
        assert (tmp_path / f"{k}.rc").read_text().strip() == "2", (c, out)
        assert len(out) == 1 and out[0].startswith("error: ") and "Read-only file system" in out[0], (c, out)
    assert list(ro.iterdir()) == []


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no private mount namespace with tmpfs here (unshare)")
def test_full_disk_simulate_and_train(workspace, tmp_path):
    """simulate and train into a 120 kB tmpfs: one line each naming the file and 'No space left on device',
    exit 2 (simulate segfaulted inside HDF5, train gave torch's OSError traceback); with room again the same
    simulate command resumes and finishes."""
    ws, mnt, py = workspace, tmp_path / "mnt", sys.executable
    mnt.mkdir()
    sim = f"{py} -m fourdcrystal.cli simulate {ws}/spec --out {mnt}/ds --output-px 64 --specimens-per-shard 1"
    train = (f"{py} -m fourdcrystal.cli train {ws}/ds --epochs 1 --width 4 --depth 2 --loader-workers 0 "
             f"--out {mnt}/m")
    shell = f"""
mount -t tmpfs -o size=120k tmpfs {mnt} || exit 99
{sim} > {tmp_path}/s.out 2>&1; echo $? > {tmp_path}/s.rc
{train} > {tmp_path}/t.out 2>&1; echo $? > {tmp_path}/t.rc
mount -o remount,size=50m {mnt}
{sim} > {tmp_path}/s2.out 2>&1; echo $? > {tmp_path}/s2.rc
"""
    res = subprocess.run([*_unshare_prefix(), "bash", "-c", shell], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    for name, what in (("s", "shard"), ("t", "checkpoint.pt")):
        out = [ln for ln in (tmp_path / f"{name}.out").read_text().splitlines()
               if ln.strip() and not ln.startswith("warning:")]
        assert (tmp_path / f"{name}.rc").read_text().strip() == "2", out
        assert len(out) == 1 and "No space left on device" in out[0] and what in out[0], out
    assert (tmp_path / "s2.rc").read_text().strip() == "0", (tmp_path / "s2.out").read_text()


def test_every_stage_refuses_an_output_another_run_holds(workspace, tmp_path):
    """While this process holds an output's lock (as a running stage does), the same stage on the same output
    is refused in one line naming this process, and leaves nothing."""
    import os

    from fourdcrystal.atomic import output_lock

    ws = workspace
    np.save(ws / "lock-scan.npy", np.random.default_rng(0).poisson(5.0, (2, 2, 32, 32)).astype(np.float32))
    runs = [
        (tmp_path / "cat", ["select", "--max-crystals", "2", "--out", str(tmp_path / "cat")]),
        (tmp_path / "spec", ["supercell", str(ws / "cat"), "--out", str(tmp_path / "spec")]),
        (tmp_path / "ds", ["simulate", str(ws / "spec"), "--out", str(tmp_path / "ds"), "--output-px", "32"]),
        (tmp_path / "m", ["train", str(ws / "ds"), "--epochs", "1", "--out", str(tmp_path / "m")]),
        (tmp_path / "ev", ["evaluate", str(ws / "model" / "model.pt"), str(ws / "ds"), "--out", str(tmp_path / "ev")]),
        (tmp_path / "p.h5", ["predict", str(ws / "model" / "model.pt"), str(ws / "lock-scan.npy"), "--k-pixel", "0.05",
                             "--energy", "200e3", "--semiangle", "3", "--out", str(tmp_path / "p.h5")]),
    ]
    for out, args in runs:
        with output_lock(out):
            res = subprocess.run([sys.executable, "-m", "fourdcrystal.cli", *args], capture_output=True, text=True,
                                 timeout=300)
        err = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip() and not ln.startswith("warning:")]
        assert res.returncode == 2 and len(err) == 1, (args[0], res.stdout, res.stderr)
        assert f"being written by process {os.getpid()}" in err[0], (args[0], err)
        assert not out.exists(), args[0]
    assert list(tmp_path.iterdir()) == []


def test_a_lock_is_held_even_where_the_output_folder_does_not_exist_yet(workspace, tmp_path):
    """Two runs onto a/b/m whose folder a/b does not exist yet: the first makes the folder and takes the lock,
    so the second is refused in one line instead of writing model.pt beside it."""
    import os

    from fourdcrystal.atomic import output_lock

    out = tmp_path / "a" / "b" / "m"
    with output_lock(out):
        assert out.parent.is_dir()
        res = subprocess.run([sys.executable, "-m", "fourdcrystal.cli", "train", str(workspace / "ds"), "--epochs",
                              "1", "--out", str(out)], capture_output=True, text=True, timeout=300)
    err = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert res.returncode == 2 and len(err) == 1, (res.stdout, res.stderr)
    assert f"being written by process {os.getpid()}" in err[0]
    assert not out.exists()


def test_an_unexpected_exception_is_one_line_naming_the_stage_with_its_traceback_saved(tmp_path, monkeypatch):
    """A defect (not bad input) ends in one line, exit 1 (bad input is 2), with the traceback in a file it names."""
    import re

    from .conftest import run_cli

    def broken(*a, **k):
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr("fourdcrystal.maps.strain.run_strain", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    res = run_cli("strain", str(tmp_path / "v.h5"))
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    m = re.fullmatch(r"error: internal error in strain: ValueError: boom \(traceback saved to (.+)\)", lines[0])
    assert m, lines[0]
    saved = m.group(1)
    assert saved.startswith(str(tmp_path)) and "raise ValueError" in open(saved).read()


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no private mount namespace with tmpfs here (unshare)")
def test_export_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """export into an 8 kB tmpfs: one line naming the output and 'No space left on device', exit 2, nothing
    left behind (HDF5 written straight to the full disk crashed the process, exit 139); with room, it works."""
    from .test_strain import _predict_like_file, _vector_set

    src = _predict_like_file(tmp_path / "scan-bragg.h5", _vector_set(scan=(10, 10)))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cmd = f"{sys.executable} -m fourdcrystal.cli export {src} --out {mnt}/e.h5"
    shell = f"""
mount -t tmpfs -o size=8k tmpfs {mnt} || exit 99
{cmd} > {tmp_path}/a.out 2>&1; echo $? > {tmp_path}/a.rc
ls -A {mnt} > {tmp_path}/a.ls
mount -o remount,size=5m {mnt}
{cmd} > {tmp_path}/b.out 2>&1; echo $? > {tmp_path}/b.rc
cp {mnt}/e.h5 {tmp_path}/e.h5
"""
    res = subprocess.run([*_unshare_prefix(), "bash", "-c", shell], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = (tmp_path / "a.out").read_text().strip().splitlines()
    assert (tmp_path / "a.rc").read_text().strip() == "2", out
    assert len(out) == 1 and out[0].startswith("error: cannot write") and "No space left on device" in out[0], out
    assert (tmp_path / "a.ls").read_text().split() == []
    assert (tmp_path / "b.rc").read_text().strip() == "0", (tmp_path / "b.out").read_text()
    from fourdcrystal.io.vectors import read_vectors

    np.testing.assert_allclose(read_vectors(tmp_path / "e.h5").q, read_vectors(src).q, atol=1e-9)


@pytest.mark.parametrize("args, message", [
    (["--device", "gpu"], "bad value for --device (device): 'gpu'; expected auto, cpu, cuda or cuda:N"),
    (["--device", "cuda:7"], "--device cuda:7: this machine has"),
    (["--seed", str(2**70)], "bad value for --seed (seed): 1180591620717411303424; expected an integer >= 0 and <= "
                             "4294967295"),
    (["--doses", "clean,1e300"], "'1e300' is not a dose; expected electrons per pattern in (0, 1e+12]"),
])
def test_devices_seeds_and_doses_out_of_range_are_one_line_before_any_work(workspace, tmp_path, args, message):
    """Values torch or numpy would die on later (a device that is not there, a seed over 2³²−1, a dose the
    Poisson sampler cannot take) are refused up front: one line, exit 2, no output folder."""
    import torch

    if args[:2] == ["--device", "cuda:7"] and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    from .conftest import run_cli

    out = tmp_path / "ev"
    res = run_cli("evaluate", str(workspace / "model" / "model.pt"), str(workspace / "ds"), "--out", str(out), *args)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and message in lines[0], res.stderr
    assert not out.exists()


def test_runs_that_would_not_fit_in_memory_are_refused_before_any_work(workspace, tmp_path, monkeypatch):
    """simulate, predict, train and evaluate estimate their big arrays first: with 16 MiB available, a 512 px
    simulation, a 4096-position chunk and batches of 64 patterns are refused in one line naming what to lower,
    and nothing is written."""
    monkeypatch.setattr("fourdcrystal.memory.available_bytes", lambda: 16 << 20)
    ws = workspace
    cases = [
        (["simulate", str(ws / "spec"), "--output-px", "512", "--out", str(tmp_path / "ds")], "--output-px"),
        (["predict", str(ws / "model" / "model.pt"), str(ws / "ok.npy"), "--k-pixel", "0.05", "--energy", "200e3",
          "--semiangle", "3", "--chunk", "4096", "--out", str(tmp_path / "p.h5")], "--chunk"),
        (["train", str(ws / "ds"), "--batch-size", "64", "--out", str(tmp_path / "m")], "--batch-size"),
        (["evaluate", str(ws / "model" / "model.pt"), str(ws / "ds"), "--batch-size", "64", "--out",
          str(tmp_path / "ev")], "--batch-size"),
    ]
    for args, hint in cases:
        code, out = _in_process(args)
        lines = [ln for ln in out.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and "would need" in lines[0] and "16 MiB" not in lines[0], out
        assert "GiB available" in lines[0] and hint in lines[0], out
        assert not any(tmp_path.iterdir()), sorted(tmp_path.iterdir())
    # the same runs fit where the memory is there: the estimate is not a blanket refusal
    monkeypatch.setattr("fourdcrystal.memory.available_bytes", lambda: 1 << 40)
    code, out = _in_process(cases[1][0])
    assert code == 0, out


def test_the_release_training_fits_the_machine_it_was_trained_on():
    """The estimates refuse what would not fit, not what does: the shipped model's training (batch 8, 256²
    patterns, width 16, two loader workers) and its evaluation fit in the 24 GB it was trained with, and a
    training step's estimate grows with the batch and the crop as the network's activations do."""
    from fourdcrystal.evaluation.evaluate import EvalConfig
    from fourdcrystal.evaluation.evaluate import check_memory as eval_memory
    from fourdcrystal.memory import network_bytes
    from fourdcrystal.training.loop import check_memory as train_memory

    cfg = {"batch_size": 8, "crop_px": None, "loader_workers": 2}
    import fourdcrystal.memory as mem

    orig = mem.available_bytes
    try:
        mem.available_bytes = lambda: 24 * 10**9
        train_memory(cfg, 16, (256, 256))
        eval_memory(EvalConfig(), 16, (256, 256))
        mem.available_bytes = lambda: int(1.25 * network_bytes(8, 256 * 256, 16, training=True))  # the step alone
        with pytest.raises(FourdError, match="would need"):
            train_memory(cfg, 16, (256, 256))
        train_memory(cfg | {"crop_px": 128}, 16, (256, 256))  # crops of a quarter the pixels fit
    finally:
        mem.available_bytes = orig


def test_memory_estimate_of_a_simulation_follows_its_arrays():
    """The estimate counts one repeat unit's slices (potential + transmission, 12 bytes a grid point), not the
    whole slab, for a periodic crystal; the slab for one without a period."""
    from fourdcrystal.simulation.cbed import memory_bytes
    from fourdcrystal.simulation.optics import antialiased_gpts

    g = antialiased_gpts(256) ** 2
    periodic = memory_bytes(256, 5.43, [1000.0], 0.5, positions=1)
    slab = memory_bytes(256, None, [1000.0], 0.5, positions=1)
    assert slab - periodic == pytest.approx(1.25 * (2000 - 11) * g * 12, rel=1e-9)
    assert memory_bytes(256, None, [1000.0], 0.25, positions=1) > 1.9 * slab - 1.25 * 4 * g * 8 * 2
