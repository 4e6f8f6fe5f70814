"""predict --follow: a file processed while a separate writer process appends its frames at a set rate gives the
vectors of the offline run on the finished file, exactly; a stalled acquisition stops with nothing lost."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from fourdcrystal.errors import FourdError
from fourdcrystal.prediction.stage import FollowSettings, PredictConfig, predict

WRITER = Path(__file__).with_name("live_writer.py")
CAL = {"k_pixel_invA": 0.03, "energy_eV": 200e3, "semiangle_mrad": 1.0}


@pytest.fixture(scope="module")
def scan_npy(tmp_path_factory) -> Path:
    """An 8×8 scan of 128² patterns: aperture disks on a lattice, intensities varying over the scan, counts."""
    from fourdcrystal.prediction.calibration import synthesised_probe

    h = 128
    disk = synthesised_probe((h, h), 0.03, 200e3, 1.0)
    a, b = np.array([0.31, 0.05]), np.array([-0.12, 0.36])
    base = np.zeros((h, h))
    for i in range(-6, 7):
        for j in range(-6, 7):
            shift = np.rint((i * a + j * b) / 0.03).astype(int)
            if np.all(np.abs(shift) < h // 2 - 4):
                base += np.roll(disk, shift, axis=(0, 1)) * (1.0 if i == j == 0 else 0.4 * np.exp(-np.hypot(*(i * a + j * b)) / 0.6))
    rng = np.random.default_rng(0)
    scale = 1 + 0.3 * np.sin(np.arange(64) / 5.0)
    data = rng.poisson(base[None] * 60 * scale[:, None, None]).astype(np.uint16).reshape(8, 8, h, h)
    path = tmp_path_factory.mktemp("follow") / "scan.npy"
    np.save(path, data)
    return path


def _writer(scan: Path, out: Path, rate: float, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WRITER), str(scan), str(out), str(rate), *extra])


def _vectors(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return {f"{m}/{k}": f[m][k][()] for m in ("model", "baseline") if m in f for k in f[m]
                if isinstance(f[m][k], h5py.Dataset)}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


CFG = PredictConfig(chunk_positions=16, baseline=True, method="both", tilt=False)


@pytest.mark.parametrize("suffix", [".mib", ".h5"])
def test_follow_gives_the_offline_vectors_while_the_writer_writes(scan_npy, tmp_path, suffix, caplog):
    """The writer appends 64 frames at 40 per second (a .mib frame by frame, or an HDF5 file in SWMR mode row by
    row); predict --follow starts before the file exists, prints the processing rate against the arrival rate,
    and its vectors equal those of an offline run on the finished file with the same first chunk for the
    preparation."""
    data = tmp_path / f"acquisition{suffix}"
    spec = str(data) + (":/frames" if suffix == ".h5" else "")
    writer = _writer(scan_npy, data, 40.0)
    try:
        with caplog.at_level(logging.INFO, logger="fourdcrystal"):
            res = predict("release", spec, tmp_path / "live.h5", CFG, CAL,
                          follow=FollowSettings(idle_s=20, refresh_s=0.2))
    finally:
        writer.wait(timeout=60)
    assert res["positions"] == 64 and res["processed_this_run"] == 64
    rates = [r.getMessage() for r in caplog.records if "arriving" in r.getMessage()]
    assert rates and "of 64 positions: processed" in rates[0]  # at least one live line while it was written
    assert Path(tmp_path / "live.png").exists()
    with h5py.File(tmp_path / "live.h5", "r") as f:
        assert f.attrs["complete"]
        assert '"prepare_positions": 16' in f.attrs["config"]
    offline = predict("release", spec, tmp_path / "offline.h5", replace(CFG, prepare_positions=16), CAL)
    assert offline["vectors"] == res["vectors"] and sum(res["vectors"].values()) > 0
    _same(_vectors(tmp_path / "live.h5"), _vectors(tmp_path / "offline.h5"))


def test_follow_stops_when_the_file_stops_growing_and_a_rerun_goes_on(scan_npy, tmp_path):
    """A writer that stalls after 40 of 64 frames: predict --follow ends after --idle seconds with one line naming
    the file, the frames there and the partial result that keeps the positions done; once the rest is written
    the same call finishes, with the offline vectors."""
    data = tmp_path / "stall.mib"
    _writer(scan_npy, data, 200.0, "--stop-after", "40").wait(timeout=60)
    with pytest.raises(FourdError, match=r"stall.mib: no new frames for 1 s at 40 of 64 positions; the 32 processed "
                                         r"are kept in .*stall-bragg.h5.partial: rerun"):
        predict("release", str(data), tmp_path / "stall-bragg.h5", CFG, CAL, follow=FollowSettings(idle_s=1.0))
    assert (tmp_path / "stall-bragg.h5.partial").exists() and not (tmp_path / "stall-bragg.h5").exists()
    _writer(scan_npy, data, 200.0, "--start-at", "40").wait(timeout=60)
    res = predict("release", str(data), tmp_path / "stall-bragg.h5", CFG, CAL, follow=FollowSettings(idle_s=5.0))
    assert res["processed_this_run"] == 32  # resumed after the two chunks already done
    predict("release", str(data), tmp_path / "offline.h5", replace(CFG, prepare_positions=16), CAL)
    _same(_vectors(tmp_path / "stall-bragg.h5"), _vectors(tmp_path / "offline.h5"))


def test_follow_refuses_what_it_cannot_follow(scan_npy, tmp_path):
    """A .mib without its .hdr and no --scan-shape (the scan's size is unknown while it grows), a format that is
    not .mib or HDF5, and a file that never appears: one line each, nothing written."""
    data = tmp_path / "nohdr.mib"
    _writer(scan_npy, data, 1000.0, "--stop-after", "8").wait(timeout=60)
    data.with_suffix(".hdr").unlink()
    with pytest.raises(FourdError, match=r"nohdr.mib: no .hdr beside it, so the scan's shape is unknown"):
        predict("release", str(data), tmp_path / "a.h5", CFG, CAL, follow=FollowSettings(idle_s=0.3))
    t0 = time.perf_counter()
    with pytest.raises(FourdError, match=r"scan.npy: `follow` reads Merlin .mib and HDF5 written in SWMR mode, not .npy"):
        predict("release", str(scan_npy), tmp_path / "b.h5", CFG, CAL, follow=FollowSettings(idle_s=120))
    assert time.perf_counter() - t0 < 60  # refused at once, not after waiting --idle seconds for the file to change
    with pytest.raises(FourdError, match=r"never.mib: not there \(or empty\) after 0.3 s of `follow`"):
        predict("release", str(tmp_path / "never.mib"), tmp_path / "c.h5", CFG, CAL, follow=FollowSettings(idle_s=0.3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nohdr.mib"]
