"""`fourdcrystal predict` on simulated 4D-STEM files: formats, calibration geometry, resume, dask, memory, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from fourdcrystal.errors import FourdError
from fourdcrystal.prediction.calibration import k_pixel_from_camera_length, resampling_matrix
from fourdcrystal.io.readers import open_4d
from fourdcrystal.io.vectors import read_vectors
from fourdcrystal.io.results import ResultFile
from fourdcrystal.prediction.stage import DataCalibration, PredictConfig, calibration_warnings, predict, quality_note
from fourdcrystal.simulation import shards

from .conftest import colorbar_label, image_data, run_cli
from .formats import write_mib
from .test_train import TINY, _error, _simulate


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("predict")
    dataset = _simulate(base, "ds", 4, 32)
    res = run_cli("-q", "train", str(dataset), "--out", str(base / "m"), "--epochs", "1", *TINY)
    assert res.exit_code == 0, res.output
    return base / "m" / "model.pt", dataset


@pytest.fixture(scope="module")
def scan(model, tmp_path_factory) -> dict:
    """A 2×3 scan of simulated CBED (one specimen: one pixel size) as counts, in five formats."""
    _, dataset = model
    tmp = tmp_path_factory.mktemp("scan")
    index = shards.read_index(dataset)
    with shards.Shard(dataset / index["shards"][0]["file"]) as sh:
        cbed, dk = sh.file["cbed"][()], sh.meta("k_sampling_invA")
        same = [i for i in range(len(cbed)) if np.allclose(dk[i], dk[0])]
    frames = np.stack([cbed[same[k % len(same)]] for k in range(6)])
    counts = np.rint(frames / frames.max() * 4000).astype(np.uint16).reshape(2, 3, 32, 32)
    k_pixel = float(dk[0][0])
    np.save(tmp / "scan.npy", counts)
    with h5py.File(tmp / "scan.h5", "w") as f:
        ds = f.create_dataset("exp/data", data=counts, chunks=(1, 1, 32, 32))
        ds.attrs["k_pixel_invA"] = k_pixel
    import emdfile  # py4DSTEM's own EMD 1.0 writer: an independent reference for the layout

    arr = emdfile.Array(data=counts, name="datacube", units="counts", dims=[None, None, None, None])
    meta = emdfile.Metadata(name="calibration")
    meta["Q_pixel_size"], meta["Q_pixel_units"] = k_pixel, "A^-1"
    arr.metadata = meta
    root = emdfile.Root(name="experiment")
    root.tree(arr)
    emdfile.save(str(tmp / "scan.emd"), root, mode="o")
    write_mib(tmp / "scan.mib", counts)
    from rsciio.hspy import file_writer  # a RosettaSciIO format with calibrated axes

    axes = [{"size": s, "name": n, "scale": sc, "offset": 0.0, "units": u, "navigate": nav}
            for s, n, sc, u, nav in ((2, "x", 1.0, "nm", True), (3, "y", 1.0, "nm", True),
                                     (32, "kx", k_pixel * 10, "1/nm", False), (32, "ky", k_pixel * 10, "1/nm", False))]
    meta_hs = {"General": {"title": "scan"}, "Signal": {"signal_type": "electron_diffraction"},
               "Acquisition_instrument": {"TEM": {"beam_energy": 200.0, "convergence_angle": 3.0}}}
    file_writer(str(tmp / "scan.hspy"), {"data": counts, "axes": axes, "metadata": meta_hs, "original_metadata": {},
                                         "tmp_parameters": {}, "attributes": {"_lazy": False},
                                         "package_info": {}, "learning_results": {}, "models": {}})
    return {"tmp": tmp, "counts": counts, "k_pixel": k_pixel}


def _vectors(path: Path, method: str = "model") -> dict:
    with h5py.File(path, "r") as f:
        g = f[method]
        return {k: g[k][()] for k in g if k != "bragg_vector_map"}


def test_every_format_gives_the_same_vectors(model, scan, drawn):
    weights, _ = model
    tmp, k = scan["tmp"], scan["k_pixel"]
    results = {}
    for name, extra in (("scan.npy", ["--k-pixel", str(k)]), ("scan.h5", []), ("scan.emd", []),
                        ("scan.mib", ["--k-pixel", str(k)]), ("scan.hspy", [])):
        with open_4d(tmp / name) as s:  # the same counts from every reader
            np.testing.assert_array_equal(s.read(0, 6).reshape(scan["counts"].shape), scan["counts"])
            assert extra or s.calibration["k_pixel_invA"] == pytest.approx(k, rel=1e-9)
        out = tmp / f"{name}.bragg.h5"
        res = run_cli("-q", "predict", str(weights), str(tmp / name), "--out", str(out), "--baseline",
                      "--energy", "200e3", "--semiangle", "3", "--chunk", "4", *extra)
        assert res.exit_code == 0, res.output
        results[name] = (_vectors(out), _vectors(out, "baseline"))
    ref_model, ref_base = results["scan.npy"]
    assert (np.diff(ref_base["offsets"]) >= 1).all()  # the baseline finds (at least) the zero beam everywhere
    for name, (vm, vb) in results.items():
        for ref, got in ((ref_model, vm), (ref_base, vb)):
            assert set(ref) == set(got)
            for key in ref:
                np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{name}: {key}")
    with h5py.File(tmp / "scan.npy.bragg.h5", "r") as f:
        assert f.attrs["complete"] and f["virtual_bf"].shape == (2, 3) and f["model/count"].shape == (2, 3)
        assert np.array_equal(np.diff(f["model/offsets"][()]), f["model/count"][()].ravel())
        assert f.attrs["model_weights_sha256"] == json.loads(weights.with_suffix(".json").read_text())["weights_sha256"]
    # the summary PNG beside the result draws this scan: its virtual bright field and peak-count maps
    fig = drawn["scan.npy.bragg.png"]
    with h5py.File(tmp / "scan.npy.bragg.h5", "r") as f:
        np.testing.assert_allclose(image_data(fig.axes[0]), f["virtual_bf"][()], rtol=1e-6)
        np.testing.assert_array_equal(image_data(fig.axes[2]), f["model/count"][()])
        np.testing.assert_array_equal(image_data(fig.axes[6]), f["baseline/count"][()])
    assert colorbar_label(fig.axes[0]) == "counts in the bright disk"
    assert fig.axes[1].get_xlabel() == "q_y (Å⁻¹)" and fig.axes[2].get_xlabel() == "scan y (position)"


def test_mib_reader_matches_rosettasciio(scan):
    from rsciio.quantumdetector import file_reader

    ref = file_reader(str(scan["tmp"] / "scan.mib"))[0]["data"]
    with open_4d(scan["tmp"] / "scan.mib") as s:
        assert s.shape == ref.shape == (2, 3, 32, 32)
        np.testing.assert_array_equal(s.read(0, 6), np.asarray(ref).reshape(6, 32, 32))


def _disk_scan(path: Path, card: dict, rows: int, cols: int, dk_in: float, centre, g_invA, radius_invA, px: int = 48,
               uneven: bool = False):
    """Aperture disks at q = 0 and at ``g_invA`` (Å⁻¹) on a detector of ``dk_in`` Å⁻¹ pixels centred at ``centre``;
    ``uneven``: each Bragg disk lit as the (100) disks of SrTiO3 [001] at 600 Å are (bright on the side of the zero
    beam, a dark band across the middle: the dynamical contrast of a thick crystal)."""
    ii, jj = np.mgrid[:px, :px]
    sub = (np.arange(4) + 0.5) / 4 - 0.5  # 4×4 sub-pixels for anti-aliased edges
    img = np.zeros((px, px))
    for g in [(0.0, 0.0), *g_invA]:
        for a in sub:
            for b in sub:
                qi = (ii + a - centre[0]) * dk_in - g[0]
                qj = (jj + b - centre[1]) * dk_in - g[1]
                inside = (qi**2 + qj**2 <= radius_invA**2) / 16
                if g == (0.0, 0.0):
                    img += inside
                else:
                    u = (qi * g[0] + qj * g[1]) / np.hypot(*g) / radius_invA  # -1 … 1 across the disk, along g
                    lit = np.clip(1 - 0.8 * np.exp(-(u - 0.1) ** 2 / 0.15) - 0.3 * u, 0.02, None) if uneven else 1.0
                    img += inside * 0.4 * lit
    img += 0.002  # a weak diffuse background, as every detector records: no row is empty (dead)
    data = np.broadcast_to(img.astype(np.float32) * 1000, (rows, cols, px, px))
    np.save(path, np.ascontiguousarray(data))
    return path


@pytest.mark.parametrize("fine", ["correlation", "model_grid"])
def test_model_peaks_are_placed_on_the_finer_detector_pixels(model, tmp_path, monkeypatch, fine):
    """On a detector finer than the model's grid the model's peaks land on the measured disks, found on the
    detector's own pixels, not where the network's (resampled, coarser) map put them; ``model_grid`` keeps those."""
    from fourdcrystal.detection.detect import DetectionSettings, ModelPeakSettings
    from fourdcrystal.model import inference

    weights, _ = model
    card = json.loads(weights.with_suffix(".json").read_text())
    dk_model = float(np.mean(card["input"]["k_sampling_invA"]))
    g = [(0.55, 0.20), (-0.25, 0.60), (-0.80, -0.30)]
    radius = 0.0030 / 0.02508
    dk_in = 0.6 * dk_model
    path = _disk_scan(tmp_path / "disks.npy", card, 1, 1, dk_in, (22.4, 25.7), g, radius)
    off = np.array([0.7, -0.6])  # model pixels: the network's maxima sit off the disks

    def fake(self, cbed, probe):  # V_g maxima at each disk's q, moved by ``off``
        h, w = cbed.shape[-2:]
        ii, jj = np.mgrid[:h, :w]
        vg = np.zeros((len(cbed), h, w), np.float32)
        for q in [(0.0, 0.0), *g]:
            c = np.array(q) / dk_model + (h // 2, w // 2) + off
            vg += np.exp(-((ii - c[0]) ** 2 + (jj - c[1]) ** 2) / 2.0).astype(np.float32)
        return vg, np.zeros_like(vg)

    monkeypatch.setattr(inference.Predictor, "__call__", fake)
    settings = DetectionSettings(model=ModelPeakSettings(min_relative=0.2, refine="vg", fine_detector_refine=fine))
    res = predict(weights, str(path), tmp_path / "r.h5", PredictConfig(settings=settings, tilt=False),
                  {"k_pixel_invA": dk_in, "energy_eV": 200e3, "semiangle_mrad": 3.0})
    v = read_vectors(res["out"], method="model")
    assert len(v.q) == 4
    for target in [(0.0, 0.0), *g]:
        d = np.linalg.norm(v.q - np.array(target), axis=1).min()
        if fine == "correlation":
            assert d < 0.2 * dk_in, (target, v.q)  # on the disk, to a fifth of a detector pixel
        else:
            assert d == pytest.approx(np.linalg.norm(off) * dk_model, rel=0.2)  # where the network put it


def test_edges_place_unevenly_lit_disks_by_their_rims(model, tmp_path, monkeypatch):
    """Disks lit unevenly inside: the correlation of the whole disk places them towards their bright side, ``edges``
    (the correlation of the edge maps) by their rims, nearer their centres, for the model's peaks and the baseline's
    disks alike (the card's kernel and sub-pixel mode)."""
    from fourdcrystal.detection.baseline import BaselineConfig
    from fourdcrystal.detection.detect import DetectionSettings, ModelPeakSettings
    from fourdcrystal.detection.peaks import PeakConfig
    from fourdcrystal.model import inference

    weights, _ = model
    card = json.loads(weights.with_suffix(".json").read_text())
    dk_model = float(np.mean(card["input"]["k_sampling_invA"]))
    g = [(0.55, 0.20), (-0.25, 0.60), (-0.80, -0.30)]
    radius = 0.0030 / 0.02508
    dk_in = radius / 4.8  # disks 4.8 px in radius, as on the strain surveys' detectors: their rims resolved
    path = _disk_scan(tmp_path / "disks.npy", card, 1, 1, dk_in, (48.4, 50.7), g, radius, px=100, uneven=True)

    def fake(self, cbed, probe):  # V_g maxima at each disk's q
        h, w = cbed.shape[-2:]
        ii, jj = np.mgrid[:h, :w]
        vg = np.zeros((len(cbed), h, w), np.float32)
        for q in [(0.0, 0.0), *g]:
            c = np.array(q) / dk_model + (h // 2, w // 2)
            vg += np.exp(-((ii - c[0]) ** 2 + (jj - c[1]) ** 2) / 2.0).astype(np.float32)
        return vg, np.zeros_like(vg)

    monkeypatch.setattr(inference.Predictor, "__call__", fake)
    miss = {}
    for fine in ("correlation", "edges"):
        settings = DetectionSettings(ModelPeakSettings(min_relative=0.2, refine="vg", fine_detector_refine=fine),
                                     BaselineConfig(kernel="sigmoid", peaks=PeakConfig(subpixel="parabolic")))
        res = predict(weights, str(path), tmp_path / f"{fine}.h5",
                      PredictConfig(settings=settings, baseline=True, tilt=False),
                      {"k_pixel_invA": dk_in, "energy_eV": 200e3, "semiangle_mrad": 3.0})
        for method in ("model", "baseline"):
            q = read_vectors(res["out"], method=method).q
            miss[fine, method] = np.array([np.linalg.norm(q - np.array(t), axis=1).min() for t in g]) / dk_in
    for method in ("model", "baseline"):
        assert (miss["correlation", method] > 0.2).all(), miss  # pulled by a fifth of a pixel or more
        assert (miss["edges", method] < 0.5 * miss["correlation", method]).all(), miss
    # counted electrons: below the card's low dose the gradient is mostly shot noise, and the correlation places
    # the disks; above it, the edges do (the same patterns, one row each)
    rng = np.random.default_rng(0)
    clean = np.load(path)[0, 0]
    counts = np.stack([rng.poisson(clean / clean.sum() * d) for d in (3e3, 1e6)]).astype(np.float32)[None]
    np.save(tmp_path / "counts.npy", counts)
    q = {}
    for fine in ("correlation", "edges"):
        settings = DetectionSettings(ModelPeakSettings(min_relative=0.2, refine="vg", fine_detector_refine=fine,
                                                       low_dose_e=3e4, low_dose_min_relative=0.2),
                                     BaselineConfig(kernel="sigmoid", peaks=PeakConfig(subpixel="parabolic")))
        res = predict(weights, str(tmp_path / "counts.npy"), tmp_path / f"counts-{fine}.h5",
                      PredictConfig(settings=settings, baseline=True, tilt=False),
                      {"k_pixel_invA": dk_in, "energy_eV": 200e3, "semiangle_mrad": 3.0})
        for method in ("model", "baseline"):
            v = read_vectors(res["out"], method=method)
            q[fine, method] = [v.position(p)[0] for p in range(2)]
    for method in ("model", "baseline"):
        np.testing.assert_array_equal(q["edges", method][0], q["correlation", method][0])  # 3·10³ e⁻
        assert q["edges", method][1].shape == q["correlation", method][1].shape
        assert np.abs(q["edges", method][1] - q["correlation", method][1]).max() > 0.2 * dk_in  # 10⁶ e⁻: moved


def test_calibration_puts_disks_at_their_q(model, tmp_path):
    """Disks drawn at known q (Å⁻¹) on a finer, off-centre detector come out at that q (baseline vectors)."""
    weights, _ = model
    card = json.loads(weights.with_suffix(".json").read_text())
    dk_model = float(np.mean(card["input"]["k_sampling_invA"]))
    g = [(0.55, 0.20), (-0.25, 0.60), (-0.80, -0.30)]
    radius = 0.0030 / 0.02508  # 3 mrad at 200 kV, Å⁻¹
    dk_in = 0.6 * dk_model
    path = _disk_scan(tmp_path / "disks.npy", card, 1, 2, dk_in, (22.4, 25.7), g, radius)
    res = predict(weights, str(path), tmp_path / "r.h5", PredictConfig(baseline=True),
                  {"k_pixel_invA": dk_in, "energy_eV": 200e3, "semiangle_mrad": 3.0})
    with h5py.File(res["out"], "r") as f:
        assert f.attrs["centre_px"] == pytest.approx([22.4, 25.7], abs=0.15)
        q = np.stack([f["baseline/qx_invA"][:f["baseline/offsets"][1]], f["baseline/qy_invA"][:f["baseline/offsets"][1]]], 1)
        # the baseline ran on the detector's own pixels, the model on its own grid
        assert list(f["baseline"].attrs["k_sampling_invA"]) == pytest.approx([dk_in, dk_in])
        assert list(f["model"].attrs["k_sampling_invA"]) == pytest.approx(list(f.attrs["model_k_sampling_invA"]))
        assert f["baseline/bragg_vector_map"].shape != f["model/bragg_vector_map"].shape
    for target in [(0.0, 0.0), *g]:
        d = np.linalg.norm(q - np.array(target), axis=1)
        assert d.min() < 0.2 * dk_in, (target, q)  # a fifth of a detector pixel, with the centre off by a fraction
    assert read_vectors(res["out"], method="baseline").bin_width == pytest.approx(dk_in)
    # a coarser detector: the baseline runs on the model's finer grid, beside the model
    coarse = _disk_scan(tmp_path / "coarse.npy", card, 1, 1, 1.5 * dk_model, (22.4, 25.7), g, radius)
    res = predict(weights, str(coarse), tmp_path / "c.h5", PredictConfig(baseline=True),
                  {"k_pixel_invA": 1.5 * dk_model, "energy_eV": 200e3, "semiangle_mrad": 3.0})
    with h5py.File(res["out"], "r") as f:
        assert list(f["baseline"].attrs["k_sampling_invA"]) == pytest.approx(list(f["model"].attrs["k_sampling_invA"]))
        assert f["baseline/bragg_vector_map"].shape == f["model/bragg_vector_map"].shape
    # data outside the model's training range are named (the card records 200 kV, 3 mrad)
    assert calibration_warnings(card, DataCalibration(dk_in, 200e3, 3.0)) == []
    warned = calibration_warnings(card, DataCalibration(3 * dk_model, 300e3, 3.0))
    assert len(warned) == 2 and "energy 300000 eV is outside" in warned[0] and "coarser" in warned[1]
    # camera length: θ = p / L, k = θ / λ with λ(200 kV) = 0.0250793 Å
    assert k_pixel_from_camera_length(100.0, 55.0, 200e3) == pytest.approx(55e-6 / 0.1 / 0.0250793, rel=1e-5)
    # resampling keeps the mean level (box filter rows sum to 1)
    m = resampling_matrix(16, 0.05, 40, 0.02, 20.0)
    assert m.sum(1)[4:12] == pytest.approx(1.0)


def test_resume_after_kill_redoes_nothing(model, scan, tmp_path, monkeypatch):
    weights, _ = model
    src = scan["tmp"] / "scan.npy"
    opts = {"k_pixel_invA": scan["k_pixel"], "energy_eV": 200e3, "semiangle_mrad": 3.0}
    cfg = PredictConfig(chunk_positions=2, baseline=True, save_maps=True)
    fresh = predict(weights, str(src), tmp_path / "fresh.h5", cfg, opts)
    calls = []
    real_append = ResultFile.append

    def dying_append(self, start, chunk):
        real_append(self, start, chunk)
        calls.append(start)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after two chunks were committed

    monkeypatch.setattr(ResultFile, "append", dying_append)
    with pytest.raises(KeyboardInterrupt):
        predict(weights, str(src), tmp_path / "r.h5", cfg, opts)
    assert not (tmp_path / "r.h5").exists() and (tmp_path / "r.h5.partial").exists()
    monkeypatch.setattr(ResultFile, "append", real_append)
    resumed = predict(weights, str(src), tmp_path / "r.h5", cfg, opts)
    assert resumed["processed_this_run"] == 2 and fresh["processed_this_run"] == 6
    for m in ("model", "baseline"):
        a, b = _vectors(tmp_path / "fresh.h5", m), _vectors(tmp_path / "r.h5", m)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{m}/{k}")
    with h5py.File(tmp_path / "fresh.h5") as fa, h5py.File(tmp_path / "r.h5") as fb:
        for k in ("virtual_bf", "mean_pattern", "model/bragg_vector_map"):
            np.testing.assert_array_equal(fa[k][()], fb[k][()], err_msg=k)
    # a different setting does not silently mix with an unfinished run
    monkeypatch.setattr(ResultFile, "append", dying_append)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        predict(weights, str(src), tmp_path / "s.h5", cfg, opts)
    res = run_cli("-q", "predict", str(weights), str(src), "--out", str(tmp_path / "s.h5"), "--k-pixel",
                  str(scan["k_pixel"]), "--energy", "200e3", "--semiangle", "3", "--chunk", "3")
    assert "unfinished run with other settings" in _error(res)
    # nor does changed data: one pixel of the input, after the kill
    calls.clear()
    changed = tmp_path / "changed.npy"
    changed.write_bytes(src.read_bytes())
    with pytest.raises(KeyboardInterrupt):
        predict(weights, str(changed), tmp_path / "c.h5", cfg, opts)
    arr = np.load(changed)
    arr[0, 0, 3, 3] += 1.0
    np.save(changed, arr)
    monkeypatch.setattr(ResultFile, "append", real_append)
    with pytest.raises(FourdError, match="unfinished run with other settings"):
        predict(weights, str(changed), tmp_path / "c.h5", cfg, opts)


def test_dask_scheduler_gives_the_same_vectors(model, scan, tmp_path):
    from dask.distributed import LocalCluster

    weights, _ = model
    src = scan["tmp"] / "scan.npy"
    opts = {"k_pixel_invA": scan["k_pixel"], "energy_eV": 200e3, "semiangle_mrad": 3.0}
    cfg = PredictConfig(chunk_positions=2)
    local = predict(weights, str(src), tmp_path / "local.h5", cfg, opts)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        remote = predict(weights, str(src), tmp_path / "dask.h5", cfg, opts, scheduler=cluster.scheduler_address)
    assert remote["positions"] == local["positions"] == 6
    a, b = _vectors(tmp_path / "local.h5"), _vectors(tmp_path / "dask.h5")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


_PEAK_RSS = """
import json, sys
from fourdcrystal.prediction.stage import PredictConfig, predict
weights, data, out, dk = sys.argv[1:5]
predict(weights, data, out, PredictConfig(chunk_positions=128, method="both"),
        {"k_pixel_invA": float(dk), "energy_eV": 200e3, "semiangle_mrad": 3.0})
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({k: int(status[k].split()[0]) * 1024 for k in ("VmHWM", "RssFile")}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc (Linux)")
def test_memory_stays_flat_with_scan_size(model, tmp_path):
    """Peak resident memory (RSS, as the operating system counts it: torch, HDF5 and numpy included) of a 128×128
    scan ≈ that of a 16×16 scan, the file 64 MB larger: chunks, not the file, are in memory."""
    weights, _ = model
    card = json.loads(weights.with_suffix(".json").read_text())
    dk = float(np.mean(card["input"]["k_sampling_invA"]))
    peak = {}
    for side in (16, 128):
        npy = _disk_scan(tmp_path / f"s{side}.npy", card, side, side, dk, (16.0, 16.0), [(0.5, 0.2)], 0.12, px=32)
        data = tmp_path / f"s{side}.h5"
        with h5py.File(data, "w") as f:
            f.create_dataset("data", data=np.load(npy), chunks=(1, 16, 32, 32))
        npy.unlink()
        res = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(weights), str(data), str(tmp_path / f"s{side}.out.h5"),
                              str(dk)], capture_output=True, text=True, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        peak[side] = json.loads(res.stdout.strip().splitlines()[-1])
    file_bytes = 128 * 128 * 32 * 32 * 4  # 67 MB of patterns in the big file
    assert peak[128]["VmHWM"] - peak[16]["VmHWM"] < 0.15 * file_bytes, peak


def test_predict_errors_are_one_line_and_write_nothing(model, scan, tmp_path):
    weights, _ = model
    src = scan["tmp"] / "scan.npy"
    np.save(tmp_path / "three.npy", np.zeros((4, 32, 32), np.float32))
    np.save(tmp_path / "probe.npy", np.zeros((16, 16), np.float32))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.pt").write_bytes(weights.read_bytes() + b"x")
    (bad / "model.json").write_text(weights.with_suffix(".json").read_text())
    cal = ["--k-pixel", str(scan["k_pixel"]), "--energy", "200e3", "--semiangle", "3"]
    cases = [
        ([str(weights), str(tmp_path / "three.npy"), *cal], "expected 4D data"),
        ([str(weights), str(tmp_path / "scan.tif"), *cal], "unknown 4D-STEM format"),
        ([str(weights), str(src)], "give --k-pixel"),
        ([str(weights), str(src), "--k-pixel", "0.05"], "--energy"),
        ([str(bad / "model.pt"), str(src), *cal], "does not match its card"),
        ([str(weights), str(src), *cal, "--probe", str(tmp_path / "probe.npy")], "the patterns are 32×32"),
        ([str(weights), str(src), *cal, "--vacuum", "0:5,0:1"], "outside the 2×3 scan"),
        ([str(weights), str(scan["tmp"] / "scan.mib"), *cal, "--scan-shape", "3x3"], "needs 9 frames"),
    ]
    for args, fragment in cases:
        out = tmp_path / "never.h5"
        line = _error(run_cli("-q", "predict", *args, "--out", str(out)))
        assert fragment in line, (fragment, line)
        assert not out.exists() and not Path(str(out) + ".partial").exists()


def test_exported_model_is_half_size_and_serves_as_the_shipped_one(model, scan, tmp_path, monkeypatch):
    """export_model: float16 weights (half the tensor bytes), same predictions to < 1 %; predict DATA (no MODEL) runs
    the shipped model."""
    import torch

    from fourdcrystal.model.inference import Predictor
    from fourdcrystal.model import card as card_mod

    weights, dataset = model
    shipped = tmp_path / "pkg" / "fcunet-release.pt"
    shipped.parent.mkdir()
    card = card_mod.export_model(weights, shipped, {"release": {"trained_on": "a test"}})
    assert card["weights_dtype"] == "float16" and card["release"]["trained_on"] == "a test"
    assert card["exported_from_sha256"] == shards.file_sha256(weights)
    # half the bytes of tensor data (the test's tiny model is small enough for the pickle's own
    # overhead to dominate the file sizes)
    state16, state32 = torch.load(shipped, weights_only=True), torch.load(weights, weights_only=True)
    assert all(v.dtype in (torch.float16, torch.int64) for v in state16.values())

    def nbytes(state):
        return sum(v.numel() * v.element_size() for v in state.values())

    assert nbytes(state16) < 0.55 * nbytes(state32)
    m32, c32 = card_mod.load_model(weights)
    m16, c16 = card_mod.load_model(shipped)
    assert next(m16.parameters()).dtype == torch.float32  # runs in float32
    index = shards.read_index(dataset)
    with shards.Shard(dataset / index["shards"][0]["file"]) as sh:
        x, p = sh.file["cbed"][:4], sh.file["probe"][:4]
    vg32, qz32 = Predictor(m32, c32, "cpu")(x, p)
    vg16, qz16 = Predictor(m16, c16, "cpu")(x, p)
    assert np.abs(vg16 - vg32).max() < 0.01 * np.abs(vg32).max()

    cal = ["--k-pixel", str(scan["k_pixel"]), "--energy", "200e3", "--semiangle", "3"]
    monkeypatch.setitem(card_mod.SHIPPED, "release", shipped)
    out = tmp_path / "shipped.h5"
    res = run_cli("-q", "predict", str(scan["tmp"] / "scan.npy"), *cal, "--out", str(out))
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        assert f.attrs["model"] == str(shipped) and f.attrs["model_weights_sha256"] == card["weights_sha256"]
    out2 = tmp_path / "named.h5"
    assert run_cli("-q", "predict", "release", str(scan["tmp"] / "scan.npy"), *cal, "--out", str(out2)).exit_code == 0
    for k, v in _vectors(out).items():
        np.testing.assert_array_equal(v, _vectors(out2)[k])
    monkeypatch.setitem(card_mod.SHIPPED, "other", shipped)  # any shipped model, by its name
    out3 = tmp_path / "named2.h5"
    assert run_cli("-q", "predict", "other", str(scan["tmp"] / "scan.npy"), *cal, "--out", str(out3)).exit_code == 0
    for k, v in _vectors(out).items():
        np.testing.assert_array_equal(v, _vectors(out3)[k])
    # the conventional order, DATA --model MODEL, runs the same model
    out4 = tmp_path / "named3.h5"
    assert run_cli("-q", "predict", str(scan["tmp"] / "scan.npy"), "--model", "other", *cal,
                   "--out", str(out4)).exit_code == 0
    for k, v in _vectors(out).items():
        np.testing.assert_array_equal(v, _vectors(out4)[k])
    line = _error(run_cli("-q", "predict", "other", str(scan["tmp"] / "scan.npy"), "--model", "other"))
    assert "expected DATA [--model MODEL]" in line and "and --model" in line
    monkeypatch.setitem(card_mod.SHIPPED, "release", tmp_path / "absent.pt")
    line = _error(run_cli("-q", "predict", str(scan["tmp"] / "scan.npy"), *cal, "--out", str(tmp_path / "x.h5")))
    assert "has no shipped model" in line and "absent.pt" in line
    monkeypatch.setitem(card_mod.SHIPPED, "other", tmp_path / "absent2.pt")
    line = _error(run_cli("-q", "predict", "other", str(scan["tmp"] / "scan.npy"), *cal, "--out",
                          str(tmp_path / "y.h5")))
    assert "has no shipped model other" in line and "absent2.pt" in line
    line = _error(run_cli("-q", "predict", "a", "b", "c"))
    assert "expected DATA [--model MODEL] (or MODEL DATA)" in line


def test_quality_note_reads_the_cards_own_evaluation():
    def card(model_f1, base_f1):
        row = {"model": {"clean": {"f1": model_f1}}, "baseline": {"clean": {"f1": base_f1}}}
        return {"name": "m", "release": {"test_evaluation": {"by_dose_thick": row, "thick_from_A": 300.0}}}

    note = quality_note(card(0.08, 0.29))
    assert "F1 is 0.08, below the classical baseline's 0.29" in note and "≥ 300 Å" in note
    assert quality_note(card(0.5, 0.29)) is None and quality_note({"name": "x"}) is None
    # q_z with no skill: its error at the matched peaks is that of predicting q_z = 0
    no_qz = card(0.5, 0.29)
    no_qz["release"]["test_evaluation"]["by_dose_thick"]["model"]["clean"].update(
        qz_mae_invA=0.0016, qz_mae_zero_invA=0.0017)
    note = quality_note(no_qz)
    assert "q_z error (0.0016 Å⁻¹) is not below that of predicting q_z = 0 (0.0017 Å⁻¹)" in note and "F1" not in note
    no_qz["release"]["test_evaluation"]["by_dose_thick"]["model"]["clean"]["qz_mae_invA"] = 0.0008
    assert quality_note(no_qz) is None


DATA = Path(__file__).with_name("data")


def _fpd_file(path: Path, counts: np.ndarray, k_pixel_invA: float | None) -> Path:
    """The fpd package's HDF5 layout for Merlin data: /fpd_expt/fpd_data/data (scan_y, scan_x, 1, ky, kx) big-endian
    uint16 with dim1…dim5 axis datasets, beside 4D metadata arrays (DAC, Threshold) and the sum images."""
    sy, sx, ky, kx = counts.shape
    with h5py.File(path, "w") as f:
        f.attrs["version_major"], f.attrs["version_minor"] = 0, 2
        g = f.create_group("fpd_expt")
        d = g.create_group("fpd_data")
        d.attrs["emd_group_type"] = 1
        d.create_dataset("data", data=counts[:, :, None].astype(">u2"), chunks=(1, 1, 1, ky, kx))
        step = k_pixel_invA * 10 if k_pixel_invA else 1.0
        for n, (name, size, units, scale) in enumerate((("scan_y", sy, "pixels", 1.0), ("scan_x", sx, "pixels", 1.0),
                                                        ("image", 1, "index", 1.0),
                                                        ("qy", ky, "1/nm" if k_pixel_invA else "pixels", step),
                                                        ("qx", kx, "1/nm" if k_pixel_invA else "pixels", step)), 1):
            dim = d.create_dataset(f"dim{n}", data=np.arange(size) * scale)
            dim.attrs["name"], dim.attrs["units"] = name, units
        for name, shape in (("DAC", (sy, sx, 1, 27)), ("Threshold", (sy, sx, 1, 8)), ("Exposure", (sy, sx, 1))):
            g.create_group(name).create_dataset("data", data=np.ones(shape))
        g.create_group("fpd_sum_im").create_dataset("data", data=counts.sum((2, 3)))
        g.create_group("fpd_sum_dif").create_dataset("data", data=counts.sum((0, 1)))
    return path


def test_files_written_by_py4dstem_and_fpd_give_the_npy_vectors(model, tmp_path):
    """A DataCube saved by py4DSTEM 0.14 itself (calibration bundle with Q/R pixel sizes, QR_flip, a rotation
    and a list-valued _target_paths) and an fpd-layout file (5D with a singleton, metadata arrays beside it)
    give exactly the vectors of the same counts as .npy with the calibration given by options."""
    from fourdcrystal.io.readers import open_4d

    weights, _ = model
    fixture = DATA / "py4dstem_datacube.h5"
    with open_4d(fixture) as s:
        assert s.shape == (2, 3, 32, 32) and s.format == "emd"
        assert s.calibration["k_pixel_invA"] == pytest.approx(0.08)
        assert s.calibration["r_pixel_size"] == pytest.approx(1.5) and s.calibration["r_pixel_units"] == "nm"
        assert s.calibration["qr_flip"] is False and s.calibration["qr_rotation_deg"] == pytest.approx(2.5)
        assert any("QR rotation 2.5" in n for n in s.notes)
        counts = s.read(0, 6).reshape(2, 3, 32, 32)
    np.save(tmp_path / "same.npy", counts)
    _fpd_file(tmp_path / "fpd.hdf5", counts, 0.08)
    _fpd_file(tmp_path / "fpd-pixels.h5", counts, None)
    with open_4d(tmp_path / "fpd.hdf5") as s:
        assert s.shape == (2, 3, 32, 32) and s.format == "fpd"
        assert s.calibration["k_pixel_invA"] == pytest.approx(0.08)
        np.testing.assert_array_equal(s.read(0, 6).reshape(counts.shape), counts)
    with open_4d(tmp_path / "fpd-pixels.h5") as s:
        assert "k_pixel_invA" not in s.calibration and any("pixels" in n for n in s.notes)
    results = {}
    for name, extra in (("same.npy", ["--k-pixel", "0.08"]), (str(fixture), []), ("fpd.hdf5", []),
                        ("fpd-pixels.h5", ["--k-pixel", "0.08"])):
        src = name if name.startswith("/") else str(tmp_path / name)
        out = tmp_path / f"{Path(name).name}.bragg.h5"
        res = run_cli("-q", "predict", str(weights), src, "--out", str(out), "--baseline", "--energy", "200e3",
                      "--semiangle", "3", *extra)
        assert res.exit_code == 0, res.output
        results[name] = (_vectors(out), _vectors(out, "baseline"))
    ref = results["same.npy"]
    assert (np.diff(ref[1]["offsets"]) >= 1).all()
    for name, got in results.items():
        for a, b in zip(ref, got):
            for key in a:
                np.testing.assert_array_equal(b[key], a[key], err_msg=f"{name}: {key}")
    # several real 4D-STEM arrays in one file: the error lists them with their shapes
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a/data"] = counts
        f["b/data"] = counts[:, :, None]
        f["meta/dac"] = np.ones((2, 3, 1, 27))
    err = _error(run_cli("predict", str(weights), str(tmp_path / "two.h5"), "--k-pixel", "0.08", "--energy",
                         "200e3", "--semiangle", "3"))
    assert "/a/data 2×3×32×32" in err and "/b/data 2×3×1×32×32" in err and "dac" not in err


@pytest.mark.parametrize("case", ["camera-length-0", "k-pixel-negative", "k-pixel-inf", "centre-outside", "nan-data",
                                  "zero-data", "min-relative-nan", "no-positions", "mask-shape", "cuda-absent"])
def test_bad_input_is_one_line_and_leaves_nothing(model, scan, tmp_path, case):
    import torch

    weights, _ = model
    src = scan["tmp"] / "scan.npy"
    opts = ["--k-pixel", str(scan["k_pixel"]), "--energy", "200e3", "--semiangle", "3"]
    counts = scan["counts"].astype(np.float32)
    extra, fragment = [], None
    if case == "camera-length-0":
        opts, extra, fragment = ["--energy", "200e3", "--semiangle", "3"], ["--camera-length", "0",
                                                                           "--detector-pixel", "55"], "--camera-length"
    elif case == "k-pixel-negative":
        opts[1], fragment = "-0.02", "--k-pixel"
    elif case == "k-pixel-inf":
        opts[1], fragment = "inf", "--k-pixel"
    elif case == "centre-outside":
        extra, fragment = ["--centre", "500,3"], "--centre"
    elif case in ("nan-data", "zero-data", "no-positions"):
        bad = counts.copy()
        if case == "nan-data":
            bad[1, 2, 5, 5] = np.nan
        elif case == "zero-data":
            bad[:] = 0
        else:
            bad = bad[:0]
        src = tmp_path / "bad.npy"
        np.save(src, bad)
        fragment = {"nan-data": "NaN", "zero-data": "all zero", "no-positions": "no positions"}[case]
    elif case == "min-relative-nan":
        extra, fragment = ["--min-relative", "nan"], "--min-relative"
    elif case == "mask-shape":
        np.save(tmp_path / "mask.npy", np.zeros((8, 8)))
        extra, fragment = ["--mask", str(tmp_path / "mask.npy")], "--mask"
    elif case == "cuda-absent":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        extra, fragment = ["--device", "cuda"], "--device cuda"
    out = tmp_path / "out" / "r.h5"
    before = set(tmp_path.rglob("*"))
    res = run_cli("predict", str(weights), str(src), "--out", str(out), *opts, *extra)
    assert fragment in _error(res), res.output
    assert set(tmp_path.rglob("*")) == before  # no result, no .partial, no folder


def test_a_second_run_on_the_same_output_is_refused(model, scan, tmp_path):
    """While one run holds OUT (its lock), another on the same OUT says which process holds it, exits 2 and
    touches nothing (not even with --overwrite); once the lock is free the run goes through and no lock is left."""
    import fcntl
    import os

    weights, _ = model
    out = tmp_path / "r.h5"
    opts = ["--k-pixel", str(scan["k_pixel"]), "--energy", "200e3", "--semiangle", "3"]
    partial = tmp_path / "r.h5.partial"
    partial.write_bytes(b"the first run's live partial file")
    lock = tmp_path / "r.h5.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a separate open file: conflicts like another process
        os.pwrite(fd, b"4242\n", 0)
        res = run_cli("predict", str(weights), str(scan["tmp"] / "scan.npy"), "--out", str(out), "--overwrite", *opts)
        assert "being written by process 4242" in _error(res)
        assert partial.read_bytes() == b"the first run's live partial file" and not out.exists()
    finally:
        os.close(fd)
    partial.unlink()
    res = run_cli("-q", "predict", str(weights), str(scan["tmp"] / "scan.npy"), "--out", str(out), *opts)
    assert res.exit_code == 0, res.output
    assert out.exists() and not lock.exists() and not partial.exists()


def test_max_peaks_caps_both_methods_and_says_so(model, scan, tmp_path):
    weights, _ = model
    src = scan["tmp"] / "scan.npy"
    out = tmp_path / "cap.h5"
    res = run_cli("-q", "predict", str(weights), str(src), "--out", str(out), "--k-pixel", str(scan["k_pixel"]),
                  "--energy", "200e3", "--semiangle", "3", "--baseline", "--max-peaks", "2")
    assert res.exit_code == 0, res.output
    with h5py.File(out) as f:
        for m in ("model", "baseline"):
            assert f[m]["count"][()].max() <= 2
    assert "reached the cap of 2 peaks" in res.output and "--max-peaks" in res.output
    assert "--max-peaks" in _error(run_cli("predict", str(weights), str(src), "--out", str(tmp_path / "z.h5"),
                                           "--k-pixel", "0.05", "--max-peaks", "0"))


def test_resume_fingerprint_covers_every_setting_but_the_listed_ones(tmp_path):
    """A PredictConfig field changes the resume fingerprint unless FINGERPRINT_EXCLUDED lists it (device: the
    numbers do not depend on it); a new field is covered without anyone remembering to add it."""
    import dataclasses

    from fourdcrystal.detection.detect import DetectionSettings
    from fourdcrystal.prediction.stage import FINGERPRINT_EXCLUDED, DataCalibration, PredictConfig, resume_fingerprint

    data = tmp_path / "scan.npy"
    np.save(data, np.ones((2, 2, 16, 16), np.float32))
    cal = DataCalibration(k_pixel_invA=0.02, energy_eV=200e3, semiangle_mrad=2.0)
    from types import SimpleNamespace

    prep = SimpleNamespace(centre_px=[8.0, 8.0], probe=np.ones((16, 16), np.float32), usable=np.ones((16, 16), bool),
                           grid_shape=[16, 16], dk_invA=(0.02, 0.02),
                           baseline_grid=SimpleNamespace(grid_shape=[16, 16], dk_invA=(0.02, 0.02)))
    base = PredictConfig()

    def fp(config):
        return resume_fingerprint(str(data), [2, 2, 16, 16], "abc", config, cal, prep)

    other = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v * 1.5 + 0.1, str: lambda v: v + "x",
             tuple: lambda v: (*v, "model")}
    fields = dataclasses.fields(PredictConfig)
    assert set(FINGERPRINT_EXCLUDED) <= {f.name for f in fields}
    for f in fields:
        value = getattr(base, f.name)
        if value is None:
            new = DetectionSettings() if f.name == "settings" else 0.123
        else:
            new = other[type(value)](value)
        changed = fp(dataclasses.replace(base, **{f.name: new})) != fp(base)
        assert changed == (f.name not in FINGERPRINT_EXCLUDED), f.name
    assert fp(base) == fp(PredictConfig())
    prep2 = SimpleNamespace(**{**vars(prep), "probe": prep.probe * 2})
    assert resume_fingerprint(str(data), [2, 2, 16, 16], "abc", base, cal, prep2) != fp(base)
    # the baseline on another grid than the model's (another pixel size) is another run
    prep3 = SimpleNamespace(**{**vars(prep), "baseline_grid": SimpleNamespace(grid_shape=[24, 24], dk_invA=(0.013, 0.013))})
    assert resume_fingerprint(str(data), [2, 2, 16, 16], "abc", base, cal, prep3) != fp(base)


@pytest.fixture(scope="module")
def tilted_scan(tmp_path_factory):
    """A 2×2 scan of multislice CBED of Si [001], 250 Å, 200 kV, 2 mrad, the beam tilted four ways (mrad):
    (tilts, the .npy file, its pixel size in Å⁻¹)."""
    from pymatgen.core import Lattice, Structure

    from fourdcrystal.simulation.cbed import Optics, simulate_specimen
    from fourdcrystal.specimens.specimen import build_specimen

    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    tilts = [(-3.0, 2.0), (2.0, 4.0), (0.0, 0.0), (4.0, -1.0)]
    frames = []
    for t in tilts:
        sp = build_specimen(si, (0, 0, 1), tilt_mrad=t, lateral_size_A=40, thickness_A=[250.0])
        res = simulate_specimen(sp, Optics(energy_eV=200e3, semiangle_mrad=2.0, output_px=128),
                                np.array([np.array(sp.plan.box_A) / 2]), planning="estimate")
        frames.append(res.cbed[0, 0])
    path = tmp_path_factory.mktemp("tilted") / "tilted.npy"
    np.save(path, np.stack(frames).reshape(2, 2, 128, 128).astype(np.float32))
    return tilts, path, float(res.k_sampling_invA[0])


def test_tilt_per_position_from_the_laue_circle(model, tilted_scan, tmp_path):
    """--tilt writes each method's crystal tilt and its standard error per position (scan × 2, mrad, with units and
    convention in the attributes); on multislice patterns of Si [001] tilted four ways the baseline's tilt points the
    specimen's way with its size within a factor 1.7, and the untilted one reads under 0.5 mrad; without the energy it is refused before any output; without --tilt
    there is none, and no q_z per vector unless asked for (a card without an evaluation shows no q_z skill)."""
    from fourdcrystal.detection.tilt import crystal_tilt_mrad

    weights, _ = model
    tilts, path, k_pixel = tilted_scan
    common = [str(weights), str(path), "--k-pixel", str(k_pixel), "--semiangle", "2", "--centre", "64,64",
              "--method", "both"]
    res = run_cli("predict", *common, "--out", str(tmp_path / "e.h5"), "--tilt")
    assert res.exit_code == 2 and "--tilt needs the beam energy" in res.output and not (tmp_path / "e.h5").exists()
    res = run_cli("-q", "predict", *common, "--energy", "200e3", "--out", str(tmp_path / "t.h5"), "--tilt")
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "t.h5") as f:
        for m in ("model", "baseline"):
            for name in ("tilt_mrad", "tilt_sigma_mrad"):
                d = f[m][name]
                assert d.shape == (2, 2, 2) and d.attrs["units"] == "mrad" and "zone axis" in d.attrs["convention"]
        fitted, sigma = f["baseline"]["tilt_mrad"][()].reshape(4, 2), f["baseline"]["tilt_sigma_mrad"][()].reshape(4, 2)
    for p, t in enumerate(tilts):
        truth = crystal_tilt_mrad(t, "beam")
        assert np.all(sigma[p] > 0)
        if not truth.any():
            assert np.linalg.norm(fitted[p]) < 0.5, fitted[p]
            continue
        assert fitted[p] @ truth / (np.linalg.norm(fitted[p]) * np.linalg.norm(truth)) > 0.95, (p, fitted[p], t)
        assert 1 / 1.7 < np.linalg.norm(fitted[p]) / np.linalg.norm(truth) < 1.7, (p, fitted[p], t)
    res = run_cli("-q", "predict", *common, "--energy", "200e3", "--out", str(tmp_path / "n.h5"))
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "n.h5") as f:
        assert "tilt_mrad" not in f["model"] and "tilt_mrad" not in f["baseline"] and "qz_invA" not in f["model"]
    res = run_cli("-q", "predict", *common, "--energy", "200e3", "--out", str(tmp_path / "q.h5"), "--qz")
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "q.h5") as f:
        assert f["model"]["qz_invA"].shape == f["model"]["qx_invA"].shape and "tilt_mrad" not in f["model"]


def test_model_tilt_from_its_qz_where_the_card_shows_it_better(model, tilted_scan, tmp_path, monkeypatch):
    """With the q_z source (what a card whose test evaluation shows the q_z tilt ahead gives), the model's tilt is
    minus the θ of q_z = θ·g over each position's vectors: a network (stood in for) whose q_z is exactly θ_beam·q
    gives back the crystal tilt −θ_beam at every position, with the given standard error; a q_z beyond the Laue
    fit's ±12 mrad search is a failed fit (NaN); the baseline keeps the Laue fit."""
    from fourdcrystal.model.inference import Predictor
    from fourdcrystal.prediction.stage import PredictConfig, predict
    from fourdcrystal.prediction.preparation import model_pixel_invA
    from fourdcrystal.model.card import read_card

    weights, _ = model
    _, path, k_pixel = tilted_scan
    dk = np.asarray(model_pixel_invA(read_card(weights), k_pixel))
    for beam_mrad, expect_ok in (((2.0, -3.0), True), ((20.0, 1.0), False)):
        def fake_qz(self, x, probe, beam=np.array(beam_mrad) * 1e-3):
            # V_g: the pattern itself relative to its zero beam (the disks); q_z: θ_beam·q
            h, w = x.shape[-2:]
            vg = x / x[:, h // 2, w // 2][:, None, None]
            ii, jj = np.mgrid[:h, :w]
            q = np.stack([(ii - h // 2) * dk[0], (jj - w // 2) * dk[1]], -1)
            return vg, np.broadcast_to((q @ beam).astype(np.float32), x.shape).copy()

        monkeypatch.setattr(Predictor, "__call__", fake_qz)
        out = tmp_path / f"q{beam_mrad[0]:g}.h5"
        predict(weights, str(path), out, PredictConfig(tilt=True, tilt_model="qz", tilt_qz_sigma_mrad=1.25,
                                                       method="both"),
                calibration={"k_pixel_invA": k_pixel, "energy_eV": 200e3, "semiangle_mrad": 2.0},
                centre_px=(64.0, 64.0))
        with h5py.File(out) as f:
            g = f["model"]
            assert "q_z" in g["tilt_mrad"].attrs["method"] and "Laue" in f["baseline"]["tilt_mrad"].attrs["method"]
            assert f.attrs["tilt_model"] == "qz"
            tilt, sigma, count = g["tilt_mrad"][()].reshape(4, 2), g["tilt_sigma_mrad"][()].reshape(4, 2), g["count"][()]
        assert count.min() >= 2
        if expect_ok:
            # q_z is read at each vector's pixel, the fit uses its sub-pixel q: within 0.5 mrad, not exact
            np.testing.assert_allclose(tilt, np.tile(-np.array(beam_mrad), (4, 1)), atol=0.5)
            np.testing.assert_allclose(sigma, 1.25)
        else:
            assert np.isnan(tilt).all() and np.isnan(sigma).all()


def test_combined_model_tilt_is_the_inverse_variance_mean_of_its_qz_tilt_and_its_laue_fit(model, tilted_scan,
                                                                                           tmp_path, monkeypatch):
    """``tilt_model="combined"``: at every position the model's tilt is the inverse-variance mean of its q_z tilt
    (standard error ``TiltSettings.qz_sigma_mrad``) and the Laue fit on its vectors (the fit's own standard
    error), as the two sources give them alone (where the Laue fit fails, q_z alone), and the file says so."""
    from fourdcrystal.detection.tilt import TiltSettings, combine_tilts
    from fourdcrystal.model.card import read_card
    from fourdcrystal.model.inference import Predictor
    from fourdcrystal.prediction.preparation import model_pixel_invA
    from fourdcrystal.prediction.stage import PredictConfig, predict

    weights, _ = model
    _, path, k_pixel = tilted_scan
    dk = np.asarray(model_pixel_invA(read_card(weights), k_pixel))

    def fake_qz(self, x, probe, beam=np.array([1.0, -2.0]) * 1e-3):
        h, w = x.shape[-2:]
        ii, jj = np.mgrid[:h, :w]
        q = np.stack([(ii - h // 2) * dk[0], (jj - w // 2) * dk[1]], -1)
        return x / x[:, h // 2, w // 2][:, None, None], np.broadcast_to((q @ beam).astype(np.float32), x.shape).copy()

    monkeypatch.setattr(Predictor, "__call__", fake_qz)
    got = {}
    for source in ("qz", "laue", "combined"):
        out = tmp_path / f"{source}.h5"
        predict(weights, str(path), out, PredictConfig(tilt=True, tilt_model=source, tilt_qz_sigma_mrad=0.7,
                                                       tilt_settings=TiltSettings(qz_sigma_mrad=1.5)),
                calibration={"k_pixel_invA": k_pixel, "energy_eV": 200e3, "semiangle_mrad": 2.0},
                centre_px=(64.0, 64.0))
        with h5py.File(out) as f:
            got[source] = (f["model"]["tilt_mrad"][()].reshape(-1, 2), f["model"]["tilt_sigma_mrad"][()].reshape(-1, 2))
            assert f.attrs["tilt_model"] == source
            if source == "combined":
                assert "inverse-variance mean" in f["model"]["tilt_mrad"].attrs["method"]
    (tq, sq), (tl, sl), (tc, sc) = got["qz"], got["laue"], got["combined"]
    assert np.isfinite(tq).all() and np.isfinite(tl).any() and np.isnan(tl).any()  # a failed Laue fit among them
    np.testing.assert_allclose(sq, 0.7)  # alone, q_z has the card's standard error; combined, the tuned one
    for p in range(len(tc)):
        t, sg = combine_tilts([tq[p], tl[p]], [np.full(2, 1.5), sl[p]])
        np.testing.assert_allclose(tc[p], t, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sc[p], sg, rtol=1e-5)
    both = np.isfinite(sl).all(1)
    assert (sc[both] < np.minimum(1.5, sl[both])).all()  # two estimates are surer than either
    np.testing.assert_allclose(tc[~both], tq[~both], rtol=1e-6)  # where the Laue fit failed: q_z alone


def test_learned_model_tilt_reads_the_disks_at_the_models_vectors(model, tilted_scan, tmp_path, monkeypatch):
    """``tilt_model="learned"``: the model's tilt at every position is the learned tilt read
    (tilt.learned_tilt with the shipped reader) of the detector's pattern at the model's vectors, the file says so
    and the baseline keeps the Laue fit; on the multislice Si [001] scan (beam tilted four ways; a network stood in
    for that returns the pattern itself, so its vectors are the disks) the tilted positions point the specimen's way
    and the untilted one reads under 0.7 mrad."""
    from fourdcrystal.detection.tilt import crystal_tilt_mrad
    from fourdcrystal.model.inference import Predictor
    from fourdcrystal.prediction.stage import PredictConfig, predict

    weights, _ = model
    tilts, path, k_pixel = tilted_scan

    def disks(self, x, probe):
        h, w = x.shape[-2:]
        return x / x[:, h // 2, w // 2][:, None, None], np.zeros_like(x)

    monkeypatch.setattr(Predictor, "__call__", disks)
    out = tmp_path / "learned.h5"
    res = predict(weights, str(path), out, PredictConfig(tilt=True, tilt_model="learned", method="both"),
                  calibration={"k_pixel_invA": k_pixel, "energy_eV": 200e3, "semiangle_mrad": 2.0},
                  centre_px=(64.0, 64.0))
    assert res["tilt"]["model"]["source"] == "learned tilt read"
    with h5py.File(out) as f:
        assert f.attrs["tilt_model"] == "learned"
        assert "learned tilt read" in f["model"]["tilt_mrad"].attrs["method"]
        assert "Laue" in f["baseline"]["tilt_mrad"].attrs["method"] and f["model"]["tilt_mrad"].attrs["units"] == "mrad"
        tilt, sigma = f["model"]["tilt_mrad"][()].reshape(4, 2), f["model"]["tilt_sigma_mrad"][()].reshape(4, 2)
    assert np.isfinite(tilt).all() and np.isfinite(sigma).all() and (sigma > 0).all()
    for p, t in enumerate(tilts):
        truth = crystal_tilt_mrad(t, "beam")
        if np.linalg.norm(truth) == 0:
            assert np.linalg.norm(tilt[p]) < 0.7, tilt[p]
        else:
            assert tilt[p] @ truth / (np.linalg.norm(tilt[p]) * np.linalg.norm(truth)) > 0.9, (tilt[p], truth)


def test_by_default_only_the_models_qz_tilt_where_its_card_shows_it_ahead(model, tilted_scan, tmp_path):
    """No --tilt: a card whose test tilt figures have the model's q_z ahead of the Laue fit gets the model's q_z tilt
    (the reason said and kept), the baseline none; a card that shows the Laue fit ahead gets no
    tilt at all; --no-tilt none."""
    import shutil

    weights, _ = model
    _, path, k_pixel = tilted_scan
    common = [str(path), "--k-pixel", str(k_pixel), "--semiangle", "2", "--energy", "200e3", "--centre", "64,64",
              "--method", "both"]
    for qz_rms, expect in ((1.6, ("model",)), (2.5, ())):
        folder = tmp_path / f"m{qz_rms:g}"
        folder.mkdir()
        shutil.copy(weights, folder / "model.pt")
        card = json.loads(weights.with_suffix(".json").read_text())
        card.setdefault("release", {})["test_evaluation"] = {"tilt": {"by_dose": {
            "model_qz": {"clean": {"rms_mrad": qz_rms}}, "model_vectors": {"clean": {"rms_mrad": 2.0}}}}}
        (folder / "model.json").write_text(json.dumps(card))
        out = tmp_path / f"auto{qz_rms:g}.h5"
        res = run_cli("predict", str(folder / "model.pt"), *common, "--out", str(out))
        assert res.exit_code == 0, res.output
        with h5py.File(out) as f:
            have = tuple(m for m in ("model", "baseline") if "tilt_mrad" in f[m])
            assert have == expect and list(f.attrs["tilt_methods"]) == list(expect)
            assert "q_z" in f.attrs["tilt_model_reason"] and "2.00 mrad" in f.attrs["tilt_model_reason"]
        assert ("tilt (model, q_z): fitted at" in res.output) == bool(expect)
    res = run_cli("-q", "predict", str(tmp_path / "m1.6" / "model.pt"), *common, "--out", str(tmp_path / "no.h5"),
                  "--no-tilt")
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "no.h5") as f:
        assert "tilt_mrad" not in f["model"] and "tilt_mrad" not in f["baseline"]


def test_baseline_settings_keep_their_lengths_in_inverse_angstrom():
    """Tuned on the model's grid, the baseline's spacing and smoothing (pixels) are scaled to the detector's pixels;
    its threshold and the model's settings stay as they are."""
    from types import SimpleNamespace

    from fourdcrystal.prediction.chunks import baseline_settings
    from fourdcrystal.detection.detect import DetectionSettings

    st = DetectionSettings()
    finer = baseline_settings(st, SimpleNamespace(baseline_grid=SimpleNamespace(px_scale=1.8)))
    assert finer.baseline.peaks.min_spacing_px == pytest.approx(1.8 * st.baseline.peaks.min_spacing_px)
    assert finer.baseline.sigma_px == pytest.approx(1.8 * st.baseline.sigma_px)
    assert finer.baseline.peaks.min_relative == st.baseline.peaks.min_relative
    assert finer.model == st.model
    assert baseline_settings(st, SimpleNamespace(baseline_grid=SimpleNamespace(px_scale=1.0))) is st


def test_method_auto_takes_the_method_the_card_shows_best_at_the_scans_counts(model, scan, tmp_path):
    """predict --method auto reads the scan's counts per pattern from its own patterns and takes the method with
    the higher F1 in the card's test evaluation at the nearest dose: the file records the choice and why, the
    chosen method's vectors are in it, and strain and export read those unless told otherwise."""
    import shutil

    weights, _ = model
    # the counts themselves: one count is one electron here
    counts = float(np.load(scan["tmp"] / "scan.npy").reshape(6, -1).sum(axis=1).astype(float).mean())
    cal = ["--k-pixel", str(scan["k_pixel"]), "--energy", "200e3", "--semiangle", "3"]

    def card_with(model_f1: float, base_f1: float) -> Path:
        folder = tmp_path / f"m{model_f1}"
        folder.mkdir()
        shutil.copy(weights, folder / "model.pt")
        card = json.loads(weights.with_suffix(".json").read_text())
        dose = f"{10 ** round(np.log10(counts)):.0e}"  # the card's row nearest the scan's counts
        card.setdefault("release", {})["test_evaluation"] = {"by_dose": {
            "model": {"clean": {"f1": 0.9}, dose: {"f1": model_f1}},
            "baseline": {"clean": {"f1": 0.5}, dose: {"f1": base_f1}}}}
        (folder / "model.json").write_text(json.dumps(card))
        return folder / "model.pt"

    for model_f1, base_f1, chosen in ((0.4, 0.7, "baseline"), (0.8, 0.6, "model")):
        out = tmp_path / f"{chosen}.h5"
        res = run_cli("-q", "predict", str(scan["tmp"] / "scan.npy"), "--model", str(card_with(model_f1, base_f1)),
                      *cal, "--out", str(out))
        assert res.exit_code == 0, res.output
        assert f"result: the {chosen} vectors (--method auto:" in res.output
        with h5py.File(out) as f:
            assert f.attrs["counts_per_pattern"] == pytest.approx(counts, rel=0.2)  # read from the patterns
            assert f.attrs["method"] == chosen and f.attrs["method_requested"] == "auto"
            assert f"{model_f1:.3f} for the model and {base_f1:.3f} for the baseline" in f.attrs["method_reason"]
            assert ("baseline" in f) == (chosen == "baseline")  # the baseline runs when it is the result
        assert read_vectors(out).method == chosen == read_vectors(out, "auto").method
        assert read_vectors(out, "model").method == "model"  # asked for by name, the other set is still there
        exported = tmp_path / f"{chosen}-py4dstem.h5"
        res = run_cli("-q", "export", str(out), "--out", str(exported))
        assert res.exit_code == 0 and f"{chosen} vectors" in res.output, res.output
    # --method model is obeyed whatever the card says, and --method both runs both with auto's choice
    out = tmp_path / "forced.h5"
    assert run_cli("-q", "predict", str(scan["tmp"] / "scan.npy"), "--model", str(card_with(0.41, 0.71)), *cal,
                   "--method", "model", "--out", str(out)).exit_code == 0
    with h5py.File(out) as f:
        assert f.attrs["method"] == "model" and "baseline" not in f
    out = tmp_path / "both.h5"
    assert run_cli("-q", "predict", str(scan["tmp"] / "scan.npy"), "--model", str(card_with(0.42, 0.72)), *cal,
                   "--method", "both", "--out", str(out)).exit_code == 0
    with h5py.File(out) as f:
        assert f.attrs["method"] == "baseline" and "baseline" in f and "model" in f


def test_summary_shows_the_zero_beam_the_positions_at_the_cap_and_the_warnings(model, scan, tmp_path, monkeypatch):
    """The summary PNG says whether to trust the result: the zero beam predict found is marked at q = 0 of the
    mean pattern with its detector pixel, the positions whose peaks reached the cap are marked on the count map,
    every colour bar has a label, and the warnings (here the cap) are written under the title with the model,
    the method chosen and the counts per pattern."""
    from fourdcrystal import plots

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig) or Path(path))
    weights, _ = model
    opts = {"k_pixel_invA": scan["k_pixel"], "energy_eV": 200e3, "semiangle_mrad": 3.0}
    # the test's one-epoch model finds next to nothing: the baseline's row shows the cap
    res = predict(weights, str(scan["tmp"] / "scan.npy"), tmp_path / "cap.h5",
                  PredictConfig(max_peaks=2, method="both"), opts)
    fig = drawn[-1]
    title = fig._suptitle.get_text()
    assert "the result is the" in title and "counts per pattern" in title and "(both;" in title
    assert "warning: baseline: 6 positions reached the cap of 2 peaks" in title
    axes = fig.axes[:8]  # two rows of four panels (model, baseline); the colour bars follow
    mean_panel, count_panel = axes[5], axes[6]
    zero = [ln for ln in mean_panel.get_lines() if ln.get_label().startswith("zero beam")]
    assert len(zero) == 1 and list(zero[0].get_xdata()) == [0.0] and list(zero[0].get_ydata()) == [0.0]
    i, j = res["centre_px"]
    assert f"detector ({i:.1f}, {j:.1f}) px" in zero[0].get_label()
    capped = [ln for ln in count_panel.get_lines() if ln.get_label() == "at the cap of 2 peaks"]
    assert len(capped) == 1 and len(capped[0].get_xdata()) == 6  # all 2×3 positions found more than 2
    colorbars = [a for a in fig.axes[8:] if a.get_ylabel()]
    assert {a.get_ylabel() for a in colorbars} >= {"counts in the bright disk", "mean pattern (counts, log)",
                                                   "Bragg peaks per position"}
