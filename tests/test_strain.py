"""`fourdcrystal strain` and `fourdcrystal export`: vector files in, maps out; py4DSTEM files both ways."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fourdcrystal.cli import cli
from fourdcrystal.errors import FourdError
from fourdcrystal.io.vectors import VectorSet, read_vectors, write_py4dstem_braggvectors
from fourdcrystal.maps.strain import StrainConfig, run_strain, strain_maps

DATA = Path(__file__).parent / "data"
PY4DSTEM_VECTORS = DATA / "py4dstem_braggvectors.h5"
REPO = Path(__file__).resolve().parents[1]


def _py4dstem_python() -> str | None:
    """The py4DSTEM 0.14 environment compare_py4dstem.py uses, where this machine has one."""
    for cand in (os.environ.get("FOURDCRYSTAL_PY4DSTEM_PYTHON"), REPO / ".py4dstem-venv" / "bin" / "python"):
        if cand and Path(cand).exists():
            return str(cand)
    return None


def test_py4dstem_braggvectors_give_back_the_strain_it_was_made_with():
    """A BraggVectors file written by py4DSTEM (per-position origin, pixel units + Q pixel size, stray
    vectors) → strain and rotation against the truth the fixture was made with."""
    truth = json.loads((DATA / "py4dstem_braggvectors_truth.json").read_text())
    vs = read_vectors(PY4DSTEM_VECTORS)
    assert vs.scan_shape == (3, 4) and vs.units == "Å⁻¹"
    res = strain_maps(vs, StrainConfig(reference="0:1,0:1"))
    assert res["fit_ok"].all()
    strain = np.array(truth["strain"]).reshape(3, 4, 3)
    for k, name in enumerate(("exx", "eyy", "exy")):
        np.testing.assert_allclose(res[name], strain[..., k], atol=5e-5)
    np.testing.assert_allclose(res["theta_deg"], np.array(truth["rotation_deg"]).reshape(3, 4), atol=1e-3)
    # the reference lattice is the fixture's, up to the choice of basis (same cell area)
    assert abs(abs(np.linalg.det(res["reference_basis"])) - abs(np.linalg.det(truth["g_ref_invA"]))) < 1e-6


def _vector_set(scan=(3, 3), g=((0.3, 0.0), (0.0, 0.35)), strain_of=lambda p: (0.0, 0.0, 0.0), n_min=None):
    g = np.array(g).T
    hk = np.array([(h, k) for h in range(-3, 4) for k in range(-3, 4)])
    q0 = hk @ g.T
    qs, ints, counts = [], [], []
    for p in range(scan[0] * scan[1]):
        e = strain_of(p)
        f = np.array([[1 + e[0], e[2]], [e[2], 1 + e[1]]])
        q = q0 @ np.linalg.inv(f)
        if n_min is not None and p == 0:
            q = q[:n_min]
        qs.append(q)
        ints.append(np.exp(-np.linalg.norm(q, axis=1)))
        counts.append(len(q))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return VectorSet(scan, offsets, np.concatenate(qs), np.concatenate(ints), "Å⁻¹", 0.02, "memory", "model")


def test_a_position_with_too_few_vectors_is_reported_not_fatal():
    vs = _vector_set(strain_of=lambda p: (0.001 * p, 0.0, 0.0), n_min=2)
    res = strain_maps(vs)
    assert not res["fit_ok"][0, 0] and res["fit_ok"].sum() == 8 and res["failed"] == 1
    assert np.isnan(res["exx"][0, 0]) and res["n_indexed"][0, 0] == 0
    # relative to the element-wise median basis of the fitted positions p = 1..8: the mean of the
    # reciprocal lengths of p = 4 and 5, i.e. a real-space stretch of 1 / mean(1/1.004, 1/1.005)
    ref = 1.0 / np.mean([1 / 1.004, 1 / 1.005])
    np.testing.assert_allclose(res["exx"].ravel()[1:], (1 + np.arange(1, 9) * 0.001) / ref - 1, atol=1e-9)


def _strain_errors(vectors: VectorSet, weights) -> dict:
    """rms strain error (fraction, three components) of the positions after the exact reference (the truth is
    zero strain), per fit weighting."""
    err = {}
    for w in weights:
        m = strain_maps(vectors, StrainConfig(reference="0:1,0:1", weights=w))
        err[w] = float(np.sqrt(np.mean(np.stack([m[k][0, 1:] for k in ("exx", "eyy", "exy")]) ** 2)))
    return err


def test_squared_weights_let_faint_vectors_count_as_their_counts_say():
    """Model vectors carry V_g, and a disk's counts go as V_g²: under shot noise alone a vector's position scatters
    as 1/V_g, so the least-squares weights that follow its variance are V_g². Half the vectors faint (V_g 0.2,
    scatter 5×): the ``squared`` fit's strain error is below the intensity-weighted and the equal-weighted ones.
    Correlation peaks (baseline) keep equal weights under ``auto``."""
    rng = np.random.default_rng(0)
    vs = _vector_set(scan=(1, 81))
    faint = np.arange(len(vs.q)) % 2 == 0
    inten = np.where(faint, 0.2, 1.0)
    sigma = np.where(faint, 0.0025, 0.0005)[:, None]  # Å⁻¹
    q = vs.q + rng.normal(size=vs.q.shape) * sigma
    q[:vs.offsets[1]] = vs.q[:vs.offsets[1]]  # the reference position: exact
    noisy = VectorSet(vs.scan_shape, vs.offsets, q, inten, "Å⁻¹", 0.02, "memory", "model")
    err = _strain_errors(noisy, ("none", "intensity", "squared"))
    assert err["squared"] < 0.95 * err["intensity"] and err["intensity"] < 0.6 * err["none"], err
    from fourdcrystal.maps.strain import fit_weights

    assert fit_weights(StrainConfig(), VectorSet(**{**vars(noisy), "method": "baseline"})) == "none"


def test_quartic_weights_discount_faint_vectors_whose_errors_do_not_shrink_with_counts():
    """``auto`` weighs model vectors by V_g⁴: a faint disk's errors are not only its counts' (a neighbour's tail, a
    dynamical shift, pixel locking on few counts). Half the vectors faint (V_g 0.4), each displaced by 0.002 Å⁻¹
    in its own direction, strong ones (V_g 1) with a tenth of that as shot-noise scatter: a faint vector's error
    is ten times a strong one's where its counts say 2.5 times, and the V_g⁴ fit's strain error is below the V_g²
    fit's; ``auto`` is that fit."""
    rng = np.random.default_rng(1)
    vs = _vector_set(scan=(1, 41))
    faint = np.arange(len(vs.q)) % 2 == 0
    inten = np.where(faint, 0.4, 1.0)
    angle = rng.uniform(0, 2 * np.pi, len(vs.q))
    shift = 0.002 * np.stack([np.cos(angle), np.sin(angle)], axis=1) * faint[:, None]
    q = vs.q + shift + rng.normal(size=vs.q.shape) * 0.0002
    q[:vs.offsets[1]] = vs.q[:vs.offsets[1]]  # the reference position: exact
    biased = VectorSet(vs.scan_shape, vs.offsets, q, inten, "Å⁻¹", 0.02, "memory", "model")
    err = _strain_errors(biased, ("squared", "quartic", "auto"))
    assert err["quartic"] < 0.9 * err["squared"], err  # 0.70-0.81 over seeds 0-4
    # auto reweighs each reflection by its scatter over the scan after this fit, keeping each vector's V_g⁴
    # within its reflection: where the heights already tell the faint vectors apart it costs nothing
    assert err["auto"] < 1.05 * err["quartic"], err
    from fourdcrystal.maps.strain import fit_weights

    assert fit_weights(StrainConfig(), biased) == "quartic"  # the first fit's


def test_scan_weights_learn_which_reflections_scatter_when_the_heights_cannot_tell():
    """``weights="scan"``: every vector the same height, but the outer reflections (|h| or |k| = 3, faint disks
    under shot noise) scatter ten times as far from position to position as the inner ones. Their scatter over
    the scan, measured after a first fit, weighs each reflection by 1 / its variance: the strain error falls
    well below the fits that weigh the vectors by their heights (all equal here, so ``quartic`` = ``none``)."""
    rng = np.random.default_rng(2)
    vs = _vector_set(scan=(1, 41))
    hk = np.array([(h, k) for h in range(-3, 4) for k in range(-3, 4)])
    outer = np.tile((np.abs(hk) == 3).any(axis=1), vs.positions)
    sigma = np.where(outer, 0.003, 0.0003)[:, None]  # Å⁻¹
    q = vs.q + rng.normal(size=vs.q.shape) * sigma
    q[:vs.offsets[1]] = vs.q[:vs.offsets[1]]  # the reference position: exact
    flat = VectorSet(vs.scan_shape, vs.offsets, q, np.full(len(q), 0.5), "Å⁻¹", 0.02, "memory", "model")
    err = _strain_errors(flat, ("none", "quartic", "scan"))
    assert err["quartic"] == pytest.approx(err["none"], rel=1e-6)
    assert err["scan"] < 0.5 * err["none"], err  # 0.30-0.42 over seeds 0-4


def test_scan_weights_need_no_more_than_the_first_fit_where_every_reflection_is_alike():
    """Where every reflection scatters alike, weighing by the scan changes the strain by no more than noise:
    the maps keep their shape and fit the same positions as the first fit."""
    rng = np.random.default_rng(3)
    vs = _vector_set(scan=(3, 5), strain_of=lambda p: (0.002 * (p % 3), -0.001 * (p % 2), 0.0))
    q = vs.q + rng.normal(size=vs.q.shape) * 0.0003
    noisy = VectorSet(vs.scan_shape, vs.offsets, q, vs.intensity, "Å⁻¹", 0.02, "memory", "model")
    a = strain_maps(noisy, StrainConfig(reference="median", weights="none"))
    b = strain_maps(noisy, StrainConfig(reference="median", weights="scan"))
    assert (a["fit_ok"] == b["fit_ok"]).all() and b["fit_ok"].all()
    np.testing.assert_allclose(b["exx"], a["exx"], atol=5e-4)


def _displaced_family_set(seed: int = 0):
    """Vectors whose disks sit off their lattice points by a fixed amount per reflection (in lattice coordinates,
    as dynamical scattering moves a disk's centre), with a different subset of reflections found at each
    position (all of them at the reference): ((3, 3) VectorSet, (9, 3) applied strains)."""
    rng = np.random.default_rng(seed)
    g = np.array([[0.3, 0.0], [0.0, 0.35]]).T
    hk = np.array([(h, k) for h in range(-3, 4) for k in range(-3, 4)])
    # a radial push that differs per family (|h| + |k|), up to 4 % of a lattice spacing; none on the zero beam
    family = np.abs(hk).sum(axis=1)
    delta = hk * (0.04 * np.sin(1.7 * family))[:, None] / np.maximum(np.abs(hk).max(axis=1), 1)[:, None]
    strains = np.array([(0, 0, 0)] + [tuple(rng.uniform(-0.01, 0.01, 3)) for _ in range(8)])
    qs, ints, counts = [], [], []
    for p, e in enumerate(strains):
        f = np.array([[1 + e[0], e[2]], [e[2], 1 + e[1]]])
        q = (hk + delta) @ (np.linalg.inv(f).T @ g).T
        keep = np.ones(len(hk), bool) if p == 0 else (rng.random(len(hk)) < 0.6) | (family == 0)
        qs.append(q[keep])
        ints.append(np.ones(keep.sum()))
        counts.append(keep.sum())
    offsets = np.concatenate([[0], np.cumsum(counts)])
    vs = VectorSet((3, 3), offsets, np.concatenate(qs), np.concatenate(ints), "Å⁻¹", 0.02, "memory", "baseline")
    return vs, strains


def test_reference_offsets_take_off_what_each_reflection_is_displaced_by():
    """Disk centres displaced per reflection family and a found set that changes from position to position:
    the plain fit reads the change of set as strain (errors of ~10⁻³); with the displacements measured at the
    reference and taken off, the fit gives back the applied strain."""
    vs, strains = _displaced_family_set()
    err = {}
    for correct in ("none", "reference"):
        m = strain_maps(vs, StrainConfig(reference="0:1,0:1", weights="none", correct=correct))
        assert m["fit_ok"].all()
        got = np.stack([m[k].ravel() for k in ("exx", "eyy", "exy")], axis=1)
        err[correct] = float(np.abs(got - strains).max())
        assert (m["corrected_reflections"] is None) == (correct == "none")
    assert err["none"] > 1e-3 and err["reference"] < 1e-9, err
    assert StrainConfig().correct == "reference"


def test_reflection_offsets_keep_reflections_seen_at_enough_reference_positions():
    from fourdcrystal import lattice

    b = np.diag([0.2, 0.25])
    hk = np.array([(0, 0), (1, 0), (0, 1), (1, 1), (-1, 0), (0, -1)])
    q_all = hk @ b.T + np.array([0.0, 0.003]) * (hk[:, :1] != 0)  # reflections with h ≠ 0 pushed along q_y
    # three fitted reference positions, and one that could not be fitted (it does not count)
    fits = [(q, lattice.fit_lattice(q, b)) for q in (q_all, q_all[:4], q_all[:4])] + [(q_all, None)]
    offs = lattice.reflection_offsets(fits)
    assert set(offs) == {(0, 0), (1, 0), (0, 1), (1, 1)}  # (-1, 0), (0, -1): at 1 of 3 fitted positions
    assert np.all(offs[(0, 0)] == 0)
    assert set(lattice.reflection_offsets(fits, min_fraction=0.3)) == set(map(tuple, hk.tolist()))


def _predict_like_file(path: Path, vs: VectorSet) -> Path:
    """A file in predict's layout (what fourdcrystal predict writes), from a VectorSet."""
    with h5py.File(path, "w") as f:
        f.attrs.update({"schema": "fourdcrystal.predictions/1", "complete": True, "scan_shape": list(vs.scan_shape),
                        "model_k_sampling_invA": [0.02, 0.02], "pattern_shape": [128, 128],
                        "centre_px": [64.0, 63.5],
                        "calibration": json.dumps({"k_pixel_invA": 0.015}), "file_calibration": "{}"})
        g = f.create_group("model")
        g["offsets"] = vs.offsets
        g["qx_invA"] = vs.q[:, 0].astype(np.float32)
        g["qy_invA"] = vs.q[:, 1].astype(np.float32)
        g["intensity"] = vs.intensity.astype(np.float32)
        g["count"] = np.diff(vs.offsets).reshape(vs.scan_shape)
    return path


def test_strain_cli_writes_maps_and_png(tmp_path):
    vs = _vector_set(scan=(4, 5), strain_of=lambda p: (0.002 * (p % 5), -0.001 * (p // 5), 0.0005))
    src = _predict_like_file(tmp_path / "scan-bragg.h5", vs)
    out = tmp_path / "maps.h5"
    r = CliRunner().invoke(cli, ["strain", str(src), "--out", str(out), "--reference", "0:1,0:1"])
    assert r.exit_code == 0, r.output
    assert "reference lattice" in r.output and out.exists() and out.with_suffix(".png").exists()
    with h5py.File(out) as f:
        assert f.attrs["schema"] == "fourdcrystal.maps.strain/1"
        exx = f["exx"][()]
        assert f["exx"].attrs["units"] == "fraction" and f["theta_deg"].attrs["units"] == "degree"
        assert f["fit_ok"][()].all()
    # float32 vectors in the file: strain to ~1e-6
    np.testing.assert_allclose(exx[0], [(1 + 0.002 * c) / 1.0 - 1 for c in range(5)], atol=5e-6)
    from PIL import Image

    assert Image.open(out.with_suffix(".png")).size[0] > 800


def test_strain_carries_the_tilt_into_its_file_and_figure(tmp_path, monkeypatch):
    """A predict result with --tilt: strain writes the tilt maps (mrad, with the convention) beside the strain, and
    its figure draws θx, θy and the standard error with colour bars in mrad, failed fits grey (NaN)."""
    from fourdcrystal import plots

    vs = _vector_set(scan=(3, 4))
    src = _predict_like_file(tmp_path / "scan-bragg.h5", vs)
    tilt = np.stack(np.meshgrid(np.arange(3.0), np.arange(4.0) - 2, indexing="ij"), -1)  # θx by row, θy by column
    tilt[1, 1] = np.nan
    with h5py.File(src, "a") as f:
        f["model"]["tilt_mrad"] = tilt.astype(np.float32)
        f["model"]["tilt_sigma_mrad"] = np.full((3, 4, 2), 0.5, np.float32)
    drawn, save = {}, plots.save_figure

    def keep(fig, path):
        for ax in fig.axes:
            if ax.images:
                drawn[ax.get_title()] = (np.asarray(ax.images[0].get_array().filled(np.nan)),
                                         ax.images[0].colorbar.ax.get_ylabel() if ax.images[0].colorbar else None)
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    out = tmp_path / "maps.h5"
    r = CliRunner().invoke(cli, ["strain", str(src), "--out", str(out), "--reference", "0:1,0:1"])
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        np.testing.assert_allclose(f["tilt_mrad"][()], tilt)
        assert f["tilt_mrad"].attrs["units"] == "mrad" and "zone axis" in f["tilt_mrad"].attrs["convention"]
    img, bar = drawn["crystal tilt θx (mrad)"]
    np.testing.assert_allclose(img, tilt[..., 0])
    assert bar == "crystal tilt θx (mrad)" and np.isnan(img[1, 1])
    np.testing.assert_allclose(drawn["crystal tilt θy (mrad)"][0], tilt[..., 1])
    np.testing.assert_allclose(drawn["tilt standard error |σ| (mrad)"][0], np.hypot(0.5, 0.5))


@pytest.mark.parametrize("args,message", [
    (["--reference", "0:9,0:1"], "region outside the 3×3 scan"),
    (["--reference", "left"], "expected median, crystal or a scan region"),
    (["--g1", "0.3,0", "--g2", "0.6,0.001"], "collinear"),
    (["--g1", "0.3,0"], "give both --g1 and --g2"),
    (["--method", "baseline"], "no 'baseline' vectors"),
    (["--tolerance", "0.9"], "--tolerance"),
    (["--min-vectors", "2"], "--min-vectors"),
    (["--out", "maps.txt"], "expected an .h5 file name"),
])
def test_strain_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    _predict_like_file(tmp_path / "v.h5", _vector_set())
    before = set(os.listdir(tmp_path))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = CliRunner().invoke(cli, ["strain", "v.h5", *args])
    finally:
        os.chdir(cwd)
    assert r.exit_code == 2, r.output
    assert r.output.count("\n") == 1 and r.output.startswith("error: ") and message in r.output, r.output
    assert set(os.listdir(tmp_path)) == before


def test_strain_refuses_files_that_are_not_vectors(tmp_path):
    npy = tmp_path / "a.h5"
    with h5py.File(npy, "w") as f:
        f["data"] = np.zeros((2, 2, 16, 16))
    text = tmp_path / "b.h5"
    text.write_text("not hdf5")
    for path, message in ((npy, "no Bragg vectors"), (text, "not an HDF5 file"), (tmp_path / "c.h5", "not found")):
        r = CliRunner().invoke(cli, ["strain", str(path), "--out", str(tmp_path / "m.h5")])
        assert r.exit_code == 2 and r.output.count("\n") == 1 and message in r.output, r.output
    assert not (tmp_path / "m.h5").exists()


def test_export_matches_the_layout_py4dstem_writes(tmp_path):
    """Our BraggVectors file has every group, attribute and dataset type of the one py4DSTEM wrote."""
    vs = read_vectors(PY4DSTEM_VECTORS)
    out = write_py4dstem_braggvectors(tmp_path / "ours.h5", vs, (96, 96), 0.02, (48.0, 47.0))

    def layout(path):
        items = {}
        with h5py.File(path) as f:
            def visit(name, obj):
                attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in obj.attrs.items()
                         if k not in ("UUID", "authoring_program")}
                kind = type(obj).__name__ + (f":{obj.dtype.kind}{obj.shape}" if isinstance(obj, h5py.Dataset) else "")
                items[name] = (kind, json.dumps(attrs, default=str, sort_keys=True))
            f.visititems(visit)
            items["/"] = ("root", json.dumps({k: str(v) for k, v in f.attrs.items()
                                              if k not in ("UUID", "authoring_program")}, sort_keys=True))
        return items

    theirs, ours = layout(PY4DSTEM_VECTORS), layout(out)
    assert set(theirs) <= set(ours)
    for k in theirs:  # the origin too: scan-shaped arrays (typed "array"), as py4DSTEM's origin steps leave it
        assert theirs[k] == ours[k], k
    with h5py.File(out) as f:
        cal = f["braggvectors_root/metadatabundle/calibration"]
        np.testing.assert_array_equal(cal["qx0"][()], np.full(vs.scan_shape, 48.0))
        np.testing.assert_array_equal(cal["qy0"][()], np.full(vs.scan_shape, 47.0))
    back = read_vectors(out)
    np.testing.assert_allclose(back.q, vs.q, atol=1e-12)
    np.testing.assert_array_equal(back.offsets, vs.offsets)


@pytest.mark.skipif(_py4dstem_python() is None, reason="no py4DSTEM environment (.py4dstem-venv)")
def test_export_loads_in_py4dstem(tmp_path):
    """predict result → fourdcrystal export → py4DSTEM.read in py4DSTEM's own environment: the calibrated
    vectors py4DSTEM returns are ours in Å⁻¹, and the tilt predict fitted is in the vectors' metadata
    (``bv.metadata["fourdcrystal"]``, mrad), read back by fourdcrystal too."""
    vs = _vector_set(scan=(2, 3), strain_of=lambda p: (0.001 * p, 0.0, 0.0))
    src = _predict_like_file(tmp_path / "v.h5", vs)
    tilt = np.arange(12.0).reshape(2, 3, 2) - 5
    tilt[1, 2] = np.nan
    with h5py.File(src, "a") as f:
        f["model"]["tilt_mrad"] = tilt.astype(np.float32)
        f["model"]["tilt_sigma_mrad"] = np.full((2, 3, 2), 0.9, np.float32)
    out = tmp_path / "bv.h5"
    r = CliRunner().invoke(cli, ["export", str(src), "--out", str(out)])
    assert r.exit_code == 0, r.output
    code = (
        "import sys, json, numpy as np, py4DSTEM\n"
        "bv = py4DSTEM.read(sys.argv[1])\n"
        "bv.setcal()\n"
        "qx0, qy0 = bv.calibration.get_origin()\n"
        "out = {'class': type(bv).__name__, 'shape': [int(v) for v in bv.shape], 'calstate': bv.calstate,\n"
        "       'origin': [np.asarray(qx0).tolist(), np.asarray(qy0).tolist()],\n"
        "       'cal': [[bv.cal[i, j].qx.tolist(), bv.cal[i, j].qy.tolist()] for i in range(2) for j in range(3)]}\n"
        "md = bv.metadata['fourdcrystal']\n"
        "out['tilt'] = [np.asarray(md['tilt_x_mrad']).tolist(), np.asarray(md['tilt_y_mrad']).tolist()]\n"
        "out['sigma'] = np.asarray(md['tilt_sigma_x_mrad']).tolist()\n"
        "out['convention'] = str(md['tilt_convention'])\n"
        "print(json.dumps(out).replace('NaN', 'null'))\n")
    res = subprocess.run([_py4dstem_python(), "-c", code, str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["class"] == "BraggVectors" and got["shape"] == [2, 3]
    assert got["calstate"]["center"] and got["calstate"]["pixel"]
    # an origin per scan position, as py4DSTEM's own origin steps leave it: its strain steps need no fit_origin
    assert np.shape(got["origin"][0]) == (2, 3) and np.shape(got["origin"][1]) == (2, 3)
    for p in range(6):
        a, b = int(vs.offsets[p]), int(vs.offsets[p + 1])
        np.testing.assert_allclose(got["cal"][p][0], vs.q[a:b, 0], atol=1e-6)
        np.testing.assert_allclose(got["cal"][p][1], vs.q[a:b, 1], atol=1e-6)
    for k in range(2):
        np.testing.assert_allclose(np.array(got["tilt"][k], float), tilt[..., k])
    np.testing.assert_allclose(np.array(got["sigma"], float), 0.9)
    assert "zone axis" in got["convention"]
    back = read_vectors(out)
    np.testing.assert_allclose(back.tilt_mrad, tilt)
    np.testing.assert_allclose(back.tilt_sigma_mrad, 0.9)


def test_the_same_vectors_give_the_same_maps_from_the_predict_result_and_from_its_export(tmp_path):
    """strain on a predict result and on its py4DSTEM export: the export says which method made the vectors and
    on which grid (EMD metadata), so the fit (weights, start basis, offsets) and the maps are the same."""
    rng = np.random.default_rng(1)
    vs = _vector_set(scan=(3, 4), strain_of=lambda p: (0.002 * (p % 4), -0.001 * (p // 4), 0.0005))
    noisy = VectorSet(vs.scan_shape, vs.offsets, vs.q + rng.normal(scale=0.001, size=vs.q.shape),
                      rng.uniform(0.1, 1.0, len(vs.q)), "Å⁻¹", 0.02, "memory", "model")
    src = _predict_like_file(tmp_path / "scan-bragg.h5", noisy)
    r = CliRunner().invoke(cli, ["export", str(src), "--out", str(tmp_path / "exported.h5")])
    assert r.exit_code == 0, r.output
    ours, theirs = read_vectors(src), read_vectors(tmp_path / "exported.h5")
    assert theirs.method == "model" and theirs.bin_width == ours.bin_width
    a, b = strain_maps(ours), strain_maps(theirs)
    for name in ("exx", "eyy", "exy", "theta_deg"):
        np.testing.assert_allclose(b[name], a[name], atol=1e-9, err_msg=name)
    r = CliRunner().invoke(cli, ["export", str(tmp_path / "exported.h5"), "--out", str(tmp_path / "again.h5")])
    assert r.exit_code == 2 and "already a py4DSTEM file" in r.output


def _rings_and_one_crystal(scan=(2, 3), crystal_positions=(0,), grains=10, seed=0) -> VectorSet:
    """Per position either one lattice (g1 0.3, g2 0.35 Å⁻¹) or ``grains`` randomly rotated copies of it (a
    polycrystal: its vectors lie on rings)."""
    rng = np.random.default_rng(seed)
    g = np.array([[0.3, 0.0], [0.0, 0.35]]).T
    hk = np.array([(h, k) for h in range(-4, 5) for k in range(-4, 5)])
    qs = []
    for p in range(scan[0] * scan[1]):
        rots = [0.0] if p in crystal_positions else rng.uniform(0, 2 * np.pi, grains)
        q = np.concatenate([hk @ (np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ g).T for t in rots])
        qs.append(q[np.linalg.norm(q, axis=1) < 1.3])
    offsets = np.concatenate([[0], np.cumsum([len(q) for q in qs])])
    q = np.concatenate(qs)
    return VectorSet(scan, offsets, q, np.exp(-np.linalg.norm(q, axis=1)), "Å⁻¹", 0.02, "memory", "baseline")


def test_positions_whose_vectors_are_not_one_lattice_are_nan_counted_and_warned(tmp_path):
    """Rings from ten grains at five of six positions: those are NaN and counted as not one lattice (under 0.3 of the
    vectors' weight indexed), the single crystal keeps its fit, and the command warns that most positions failed."""
    vs = _rings_and_one_crystal()
    m = strain_maps(vs, StrainConfig(reference="0:1,0:1"))
    assert m["fit_ok"].ravel().tolist() == [True] + [False] * 5 and m["not_one_lattice"] == 5
    assert m["indexed_fraction"].ravel()[0] == pytest.approx(1.0)
    assert np.all(m["indexed_fraction"].ravel()[1:] < 0.3) and np.isnan(m["exx"].ravel()[1:]).all()
    # with the check off the rings are "fitted" to some strain: what the check prevents
    loose = strain_maps(vs, StrainConfig(reference="0:1,0:1", min_indexed_fraction=0.0))
    assert loose["fit_ok"].sum() > 1
    src = _predict_like_file(tmp_path / "rings-bragg.h5", VectorSet(**{**vars(vs), "method": "model"}))
    r = CliRunner().invoke(cli, ["strain", str(src), "--reference", "0:1,0:1", "--out", str(tmp_path / "s.h5")])
    assert r.exit_code == 0, r.output
    assert "5 of 6 positions not fitted" in r.output and "at 5 of them under 0.3 of the vectors' weight" in r.output
    assert "warning: most positions could not be fitted: their vectors do not form one lattice" in r.output
    with h5py.File(tmp_path / "s.h5") as f:
        assert f.attrs["not_one_lattice_positions"] == 5 and f["indexed_fraction"].shape == (2, 3)


def test_a_reference_whose_stray_peaks_hide_its_lattice_is_indexed_with_the_whole_scans_basis():
    """The reference position (one of nine) holds its lattice faintly under twelve bright stray peaks: the basis
    from its own Bragg vector map is not the crystal's, and none of its vectors would index. The whole scan's map
    shows the crystal; its basis indexes the reference, every position is fitted, and the strains are exact."""
    strain_of = lambda p: (0.002 * (p % 3), -0.001 * (p // 3), 0.0)  # noqa: E731
    vs = _vector_set(scan=(3, 3), strain_of=strain_of)
    rng = np.random.default_rng(0)
    qs = [vs.q[vs.offsets[p]:vs.offsets[p + 1]] for p in range(9)]
    ws = [np.full(len(q), 0.5) for q in qs]
    qs[0] = np.concatenate([qs[0], rng.uniform(-1.0, 1.0, (12, 2))])
    ws[0] = np.concatenate([np.full(len(ws[0]), 0.01), np.full(12, 1.0)])
    offsets = np.concatenate([[0], np.cumsum([len(q) for q in qs])])
    stray = VectorSet((3, 3), offsets, np.concatenate(qs), np.concatenate(ws), "Å⁻¹", 0.02, "memory", "baseline")
    m = strain_maps(stray, StrainConfig(reference="0:1,0:1", weights="none"))
    assert m["fit_ok"].all()
    np.testing.assert_allclose(sorted(np.abs(m["start_basis"]).max(axis=0)), [0.3, 0.35], atol=0.002)
    np.testing.assert_allclose(m["exx"].ravel(), [strain_of(p)[0] for p in range(9)], atol=1e-9)
    np.testing.assert_allclose(m["eyy"].ravel(), [strain_of(p)[1] for p in range(9)], atol=1e-9)


def test_a_position_the_first_fit_rejects_stays_rejected_when_the_scan_reweighs():
    """One position of six holds its lattice under a three-fold weight of stray vectors far out (|q| 1.4-2 Å⁻¹,
    beyond every reflection the scan measures): under 0.3 of its weight is on one lattice, so the first fit rejects
    it. Reweighed by the scan, the stray vectors would weigh nothing (no trusted reflection near them) and a fit
    from scratch would pass; the position stays rejected, as with fixed weights."""
    vs = _rings_and_one_crystal(crystal_positions=tuple(range(6)))
    rng = np.random.default_rng(0)
    qs = [vs.q[vs.offsets[p]:vs.offsets[p + 1]] for p in range(6)]
    ws = [vs.intensity[vs.offsets[p]:vs.offsets[p + 1]] for p in range(6)]
    n = 3 * len(qs[5])
    angle, radius = rng.uniform(0, 2 * np.pi, n), rng.uniform(1.4, 2.0, n)
    qs[5] = np.concatenate([qs[5], np.c_[radius * np.cos(angle), radius * np.sin(angle)]])
    ws[5] = np.concatenate([ws[5], np.full(n, ws[5].mean())])
    offsets = np.concatenate([[0], np.cumsum([len(q) for q in qs])])
    stray = VectorSet((2, 3), offsets, np.concatenate(qs), np.concatenate(ws), "Å⁻¹", 0.02, "memory", "baseline")
    for weights in ("none", "scan"):
        m = strain_maps(stray, StrainConfig(reference="0:1,0:1", weights=weights))
        assert m["fit_ok"].ravel().tolist() == [True] * 5 + [False], weights
        assert m["not_one_lattice"] == 1 and m["indexed_fraction"].ravel()[5] == pytest.approx(0.25), weights


def test_export_bad_input(tmp_path):
    r = CliRunner().invoke(cli, ["export", str(PY4DSTEM_VECTORS), "--out", str(tmp_path / "x.h5")])
    assert r.exit_code == 2 and "already a py4DSTEM file" in r.output and r.output.count("\n") == 1
    assert not (tmp_path / "x.h5").exists()


def test_run_strain_refuses_to_overwrite_its_input(tmp_path):
    src = _predict_like_file(tmp_path / "v.h5", _vector_set())
    with pytest.raises(FourdError, match="is the input file"):
        run_strain(src, src, overwrite=True)


@pytest.mark.slow
def test_simulate_predict_strain_as_a_user_runs_it(tmp_path):
    """scripts/strain_series.py (real multislice of strained, rotated Si [110]) → predict with the shipped
    model → strain: the maps follow the applied strain and rotation. The README's table has the full
    series (scripts/strain_benchmark.py); here 2×3 positions at 15 nm, noise-free."""
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "strain_series.py"), "--out", str(tmp_path),
                          "--scan", "2", "3", "--output-px", "128", "--box", "34", "--thickness", "150",
                          "--doses", "clean", "--strain-pct", "1", "--rotation-deg", "2"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    data = tmp_path / "series-t0150A-clean.h5"
    r = CliRunner().invoke(cli, ["-q", "predict", str(data), "--out", str(tmp_path / "v.h5")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["strain", str(tmp_path / "v.h5"), "--reference", "0:1,0:1",
                                 "--out", str(tmp_path / "maps.h5")])
    assert r.exit_code == 0, r.output
    with h5py.File(data) as t, h5py.File(tmp_path / "maps.h5") as m:
        assert m["fit_ok"][()].all()
        err = np.stack([m[k][()] for k in ("exx", "eyy", "exy")], axis=-1) - t["truth/strain"][()]
        theta_err = m["theta_deg"][()] - t["truth/rotation_deg"][()]
        applied = np.abs(t["truth/strain"][()]).max()
    assert applied > 0.005  # the series does strain the crystal
    assert np.sqrt(np.mean(err**2)) < 0.003, err  # 0.3 %; measured 0.07 %
    assert np.sqrt(np.mean(theta_err**2)) < 0.1, theta_err  # measured 0.02°


def test_reference_crystal_gives_absolute_strain(tmp_path):
    """Vectors on the Si [110] lattice from a hand calculation ((2-20) along q_x at 2√2/a, (002) along
    q_y at 2/a, a = 5.431 Å), strained by known tensors and rotated by 25°: --reference crystal with the
    Si CIF gives the absolute strain (no unstrained position in the scan)."""
    from pymatgen.core import Lattice, Structure

    cif = tmp_path / "Si.cif"
    Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]]).to(filename=str(cif))
    a = 5.431
    c, s = np.cos(np.radians(25.0)), np.sin(np.radians(25.0))
    rot = np.array([[c, -s], [s, c]])
    g = rot @ np.array([[2 * np.sqrt(2) / a, 0.0], [0.0, 2 / a]]).T  # columns g(2-20), g(002), rotated
    g = g @ np.array([[0.5, 0.0], [0.5, 1.0]])  # (1-11) = ½(2-20) + ½(002) ... as a basis with (002)
    strains = [(0.01, -0.004, 0.002), (-0.006, 0.003, 0.0), (0.0, 0.008, -0.003), (0.004, 0.004, 0.004)]
    vs = _vector_set(scan=(2, 2), g=g.T, strain_of=lambda p: strains[p])
    src = _predict_like_file(tmp_path / "v.h5", vs)
    out = tmp_path / "abs.h5"
    r = CliRunner().invoke(cli, ["strain", str(src), "--reference", "crystal", "--structure", str(cif),
                                 "--zone-axis", "1", "1", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "the crystal's" in r.output
    with h5py.File(out) as f:
        got = np.stack([f[k][()] for k in ("exx", "eyy", "exy")], axis=-1).reshape(4, 3)
        theta = f["theta_deg"][()].ravel()
    np.testing.assert_allclose(got, strains, atol=2e-6)  # float32 vectors in the file
    # the rotation is relative to the crystal aligned on the scan's median lattice: the same at every position
    assert np.ptp(theta) < 1e-3
    r = CliRunner().invoke(cli, ["strain", str(src), "--reference", "crystal", "--out", str(tmp_path / "x.h5")])
    assert r.exit_code == 2 and "--structure" in r.output and r.output.count("\n") == 1
    r = CliRunner().invoke(cli, ["strain", str(src), "--reference", "crystal", "--structure", str(cif),
                                 "--zone-axis", "1", "1", "1", "--out", str(tmp_path / "x.h5")])
    assert r.exit_code == 2 and "differs from the measured one" in r.output, r.output
    assert not (tmp_path / "x.h5").exists()


def test_zolz_basis_of_si_110_by_hand():
    from pymatgen.core import Lattice, Structure

    from fourdcrystal.lattice import zolz_basis

    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    beam = np.array([1.0, 1.0, 0.0]) @ si.lattice.matrix
    basis = zolz_basis(si.get_primitive_structure().lattice.matrix, beam)
    # {111} reflections of the F lattice perpendicular to [110]: (1-11) and (1-1-1), √3/a, 70.53° apart
    np.testing.assert_allclose(np.linalg.norm(basis, axis=0), [np.sqrt(3) / 5.431] * 2, rtol=1e-9)
    cos = basis[:, 0] @ basis[:, 1] / np.prod(np.linalg.norm(basis, axis=0))
    assert abs(abs(cos) - 1 / 3) < 1e-9


def test_maps_are_drawn_in_nm_where_the_scan_step_is_known(tmp_path, monkeypatch):
    """The scan step comes from --scan-step (nm) or the data file's real-space calibration (an EMD's
    R_pixel_size, kept by predict); the maps' axes are then in nm, pixel centres at 0, step, 2·step, …; without
    one they stay in scan positions. The result file records the step and where it came from."""
    from fourdcrystal import plots

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig) or Path(path))
    vs = _vector_set(scan=(3, 4), strain_of=lambda p: (0.001 * p, 0.0, 0.0))
    src = _predict_like_file(tmp_path / "v.h5", vs)
    with h5py.File(src, "a") as f:
        f.attrs["file_calibration"] = json.dumps({"r_pixel_size": 25.0, "r_pixel_units": "Å"})
    cases = [([], 2.5, "the data file (25 Å)"), (["--scan-step", "4"], 4.0, "--scan-step")]
    for k, (extra, step, source) in enumerate(cases):
        out = tmp_path / f"m{k}.h5"
        r = CliRunner().invoke(cli, ["strain", str(src), "--out", str(out), *extra])
        assert r.exit_code == 0, r.output
        assert f"scan step: {step:g} nm ({source})" in r.output
        with h5py.File(out) as f:  # the file names the setting, the command line printed its option
            assert f.attrs["scan_step_nm"] == step
            assert f.attrs["scan_step_source"] == source.replace("--scan-step", "`scan_step_nm`")
        ax = drawn[-1].axes[0]
        assert ax.get_xlabel() == "scan y (nm)" and ax.get_ylabel() == "scan x (nm)"
        np.testing.assert_allclose(ax.get_images()[0].get_extent(), [-0.5 * step, 3.5 * step, 2.5 * step,
                                                                      -0.5 * step])
    with h5py.File(src, "a") as f:
        f.attrs["file_calibration"] = json.dumps({"r_pixel_size": 1.0, "r_pixel_units": "pixels"})
    r = CliRunner().invoke(cli, ["strain", str(src), "--out", str(tmp_path / "m2.h5")])
    assert r.exit_code == 0 and "scan step: unknown, maps in scan positions" in r.output, r.output
    assert drawn[-1].axes[0].get_xlabel() == "scan y (position)"


PY4DSTEM_STRAIN = """
import json, sys
import matplotlib
matplotlib.use("Agg")
import py4DSTEM
from py4DSTEM.process.strain import StrainMap
bv = py4DSTEM.read(sys.argv[1])
bv.setcal()  # the export's calibration: per-position origin and pixel size, no measure_origin/fit_origin
sm = StrainMap(braggvectors=bv)
sm.choose_basis_vectors(maxNumPeaks=60, minRelativeIntensity=0.001)  # py4DSTEM's own guess of g1, g2
sm.fit_basis_vectors(max_peak_spacing=5.0)
sm.get_strain()  # relative to the median lattice of the scan
print(json.dumps({k: sm.data[i].tolist() for i, k in enumerate(("exx", "eyy", "exy", "theta"))}))
"""


@pytest.mark.skipif(_py4dstem_python() is None, reason="no py4DSTEM environment (bash scripts/py4dstem_venv.sh)")
def test_py4dstem_strain_on_the_export_agrees_with_ours(tmp_path):
    """The round trip a microscopist takes: fourdcrystal export → py4DSTEM.read → StrainMap (basis guessed by
    py4DSTEM, its own fit, median reference), with nothing but the export's calibration. Strained, rotated and
    noisy vectors: py4DSTEM's ε_xx, ε_yy, ε_xy agree with `fourdcrystal strain` (median reference) within 0.05 %,
    and its θ is ours in radians with the opposite sign (py4DSTEM's convention)."""
    rng = np.random.default_rng(0)
    vs = _vector_set(scan=(3, 4), strain_of=lambda p: (0.004 * (p % 4) - 0.006, 0.003 - 0.003 * (p // 4),
                                                        0.002 * ((p % 3) - 1)))
    angle = np.radians(np.linspace(-1.0, 1.0, vs.positions))[np.repeat(np.arange(vs.positions), np.diff(vs.offsets))]
    c, s = np.cos(angle), np.sin(angle)
    q = np.stack([c * vs.q[:, 0] - s * vs.q[:, 1], s * vs.q[:, 0] + c * vs.q[:, 1]], axis=1)
    q += rng.normal(0, 0.0003, q.shape)  # Å⁻¹: 0.02 detector pixels at the export's 0.015 Å⁻¹
    src = _predict_like_file(tmp_path / "scan-bragg.h5", VectorSet(vs.scan_shape, vs.offsets, q, vs.intensity, "Å⁻¹",
                                                                   0.02, "memory", "model"))
    out = tmp_path / "braggvectors.h5"
    assert CliRunner().invoke(cli, ["export", str(src), "--out", str(out)]).exit_code == 0
    # the first fit's weights alone: the scan's reweighing (auto) is ours, not py4DSTEM's; this checks the export
    ours = strain_maps(read_vectors(src), StrainConfig(reference="median", weights="quartic"))
    res = subprocess.run([_py4dstem_python(), "-c", PY4DSTEM_STRAIN, str(out)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    theirs = json.loads(res.stdout.strip().splitlines()[-1])
    for k in ("exx", "eyy", "exy"):
        assert 100 * np.abs(np.array(theirs[k]) - ours[k]).max() < 0.05, k
    np.testing.assert_allclose(np.array(theirs["theta"]), -np.radians(ours["theta_deg"]), atol=2e-4)
