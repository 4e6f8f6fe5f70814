"""`fourdcrystal strain-benchmark`: strained multislice series of several crystals, scored against the applied truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fourdcrystal.evaluation import strain_benchmark as sb
from fourdcrystal.io.vectors import VectorSet
from fourdcrystal.lattice import zolz_basis

from .conftest import run_cli
from .test_strain import _py4dstem_python
from .test_train import _error

TINY = ["--crystals", "GaN", "--zone-axes", "1", "--scan", "1", "3", "--thicknesses", "100", "--doses", "clean",
        "--px", "128", "--box", "40"]


def _exact_vectors(crystal: str, uvw, strains, rots_deg, lie: float = 0.0) -> VectorSet:
    """The ZOLZ reflections of each position from the crystal's own lattice, deformed as the series deforms its
    atoms (r → (I + ε) R(θ) r, so g → (I + ε)⁻ᵀ R(θ) g); ``lie`` adds that much ε_xx to every strained position."""
    s = sb.CRYSTALS[crystal].structure()
    basis = zolz_basis(s.lattice.matrix, np.asarray(uvw, float) @ s.lattice.matrix)  # columns g1, g2 (Å⁻¹)
    hk = np.array([(h, k) for h in range(-3, 4) for k in range(-3, 4)])
    qs = []
    for p, (e, t) in enumerate(zip(strains, rots_deg)):
        e = np.array([[e[0] + (lie if p else 0.0), e[2]], [e[2], e[1]]])
        c, si = np.cos(np.radians(t)), np.sin(np.radians(t))
        f = (np.eye(2) + e) @ np.array([[c, -si], [si, c]])
        qs.append(hk @ (np.linalg.inv(f).T @ basis).T)
    offsets = np.arange(len(qs) + 1) * len(hk)
    q = np.concatenate(qs)
    return VectorSet((1, len(qs)), offsets, q, np.exp(-np.linalg.norm(q, axis=1)), "Å⁻¹", 0.02, "memory", "model")


def test_the_score_is_the_distance_from_the_applied_strain():
    """Vectors from the deformed lattice score zero; vectors that say 0.3 % more ε_xx at every strained position
    score 0.3 / √3 % (rms over the three components)."""
    strains, rots = np.zeros((4, 3)), np.zeros(4)
    rng = np.random.default_rng(3)
    strains[1:] = rng.uniform(-0.01, 0.01, (3, 3))
    rots[1:] = rng.uniform(-2, 2, 3)
    for crystal, uvw in (("GaN", (0, 0, 1)), ("TiO2", (1, 1, 0))):
        for lie, expected in ((0.0, 0.0), (0.003, 0.3 / np.sqrt(3))):
            v = sb.SeriesVectors(None, crystal, uvw, 100.0, "clean", strains.reshape(1, 4, 3), rots.reshape(1, 4),
                            {"model": _exact_vectors(crystal, uvw, strains, rots, lie)})
            row = sb.score_fit(v, "model", {"weights": "none", "tolerance": 0.25})
            assert row["fitted"] == 3 == row["positions"]
            assert row["strain_rms_error_pct"] == pytest.approx(expected, abs=2e-4), (crystal, lie)
            assert row["rotation_rms_error_deg"] < 2e-3


def test_methods_are_also_compared_on_the_positions_every_one_fitted():
    """py4DSTEM fits no position of one series and the model's error there is large: on its own the model pools
    every position, beside the others it is judged on the positions all three fitted."""
    def row(method, crystal, errors):
        ok = [e for e in errors if e is not None]
        return {"crystal": crystal, "zone_axis": [0, 0, 1], "thickness_A": 1000.0, "dose": "1e5", "method": method,
                "positions": len(errors), "fitted": len(ok), "position_errors_pct": errors,
                "strain_rms_error_pct": float(np.sqrt(np.mean(np.square(ok)))) if ok else None,
                "rotation_rms_error_deg": 0.0 if ok else None}
    rows = [row("model", "Si", [0.5, 0.5]), row("baseline", "Si", [0.6, 0.6]), row("py4DSTEM", "Si", [None, None]),
            row("model", "GaN", [0.1, 0.1]), row("baseline", "GaN", [0.2, None]), row("py4DSTEM", "GaN", [0.15, 0.15])]
    summary = sb.summarise(rows, ["model", "baseline", "py4DSTEM"])
    own = summary["by_dose_and_thickness_A"]["1e5"]["1000.0"]
    assert own["model"]["strain_rms_error_pct"] == pytest.approx(np.sqrt((0.25 * 2 + 0.01 * 2) / 4))
    assert own["py4DSTEM"]["strain_rms_error_pct"] == pytest.approx(0.15)
    common = summary["common_by_dose_and_thickness_A"]["1e5"]["1000.0"]
    assert {m: c["strain_rms_error_pct"] for m, c in common.items()} == pytest.approx(
        {"model": 0.1, "baseline": 0.2, "py4DSTEM": 0.15})
    assert all(c["fitted"] == 1 and c["positions"] == 4 for c in common.values())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("sb") / "sb"
    res = run_cli("-q", "strain-benchmark", str(out), *TINY)
    assert res.exit_code == 0, res.output
    return out, res


def test_benchmark_runs_every_method_and_resumes(tiny, monkeypatch):
    """A tiny survey end to end (multislice, predict, fits chosen on the tuning series); a second run reuses the
    series and the vectors instead of simulating or predicting again, and gives the same report."""
    out, res = tiny
    report = json.loads((out / "report.json").read_text())
    assert report["methods"] == ["model", "baseline"] and report["schema"] == sb.SCHEMA
    assert {(r["method"], r["dose"]) for r in report["rows"]} == {("model", "clean"), ("baseline", "clean")}
    for m in ("model", "baseline"):
        cell = report["summary"]["by_dose_and_thickness_A"]["clean"]["100.0"][m]
        assert cell["positions"] == 2 and cell["fitted"] == 2
        assert 0 < cell["strain_rms_error_pct"] < 0.5  # ±1 % applied: the fit follows it
        assert report["chosen_on_tune_series"][m]["fit"] in sb.FIT_GRID
    truth = [json.loads(p.read_text()) for p in sorted((out / "series").glob("*/*/truth.json"))]
    assert [t["split"] for t in truth] == ["test", "tune"] and truth[0]["strain"] != truth[1]["strain"]
    assert "model" in res.output and "wrote" in res.output

    def refuse(*a, **k):
        raise AssertionError("simulated or predicted again")

    monkeypatch.setattr("fourdcrystal.simulation.series.simulate_series", refuse)
    monkeypatch.setattr("fourdcrystal.prediction.stage.predict", refuse)
    assert run_cli("-q", "strain-benchmark", str(out), *TINY).exit_code == 0
    assert json.loads((out / "report.json").read_text())["rows"] == report["rows"]


@pytest.mark.skipif(_py4dstem_python() is None, reason="no py4DSTEM environment (bash scripts/py4dstem_venv.sh)")
def test_py4dstem_joins_the_survey_with_its_tuned_settings(tiny, tmp_path):
    """--py4dstem-python adds py4DSTEM's find_Bragg_disks (the worker script and the tuned settings of the source
    tree, found from the installed package) as a third method, scored like the others."""
    import shutil

    out = tmp_path / "sb"
    shutil.copytree(tiny[0], out)  # the tiny survey's series and vectors: only py4DSTEM runs
    assert sb.SOURCE_TREE.joinpath("scripts", "py4dstem_worker.py").is_file()
    res = run_cli("-q", "strain-benchmark", str(out), *TINY, "--py4dstem-python", str(_py4dstem_python()))
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["methods"] == ["model", "baseline", "py4DSTEM"]
    assert report["py4dstem_settings"]["minRelativeIntensity"] > 0
    cell = report["summary"]["by_dose_and_thickness_A"]["clean"]["100.0"]["py4DSTEM"]
    assert cell["positions"] == 2 and cell["fitted"] >= 1


@pytest.mark.parametrize("args, message", [
    (["--crystals", "Unobtainium"], "--crystals Unobtainium: expected some of Si, SrTiO3, GaN, TiO2"),
    (["--doses", "clean,lots"], "--doses 'lots'"),
    (["--thicknesses", "100,abc"], "--thicknesses '100,abc'"),
    (["--scan", "1", "1"], "--scan"),
    (["--zone-axes", "3"], "--zone-axes 3"),
])
def test_bad_input_is_one_line_and_creates_nothing(tmp_path, args, message):
    out = tmp_path / "sb"
    line = _error(run_cli("-q", "strain-benchmark", str(out), *args))
    assert message in line
    assert not out.exists()


def test_plot_draws_one_panel_per_dose_and_one_line_per_method(monkeypatch, tmp_path):
    from fourdcrystal import plots

    drawn = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.setdefault("fig", fig) and path)
    cell = {"strain_rms_error_pct": 0.1, "rotation_rms_error_deg": 0.01, "fitted": 8, "positions": 8}
    report = {"methods": ["model", "baseline", "py4DSTEM"], "model": "release", "config": {"crystals": ["Si"]},
              "summary": {"by_dose_and_thickness_A": {
                  d: {t: {m: cell | {"strain_rms_error_pct": 0.1 * (1 + k)} for k, m in enumerate(("model", "baseline",
                                                                                                   "py4DSTEM"))}
                      for t in ("100.0", "300.0")} for d in ("1e4", "clean", "1e5")}}}
    plots.strain_benchmark_png(report, tmp_path / "x.png")
    axes = drawn["fig"].axes
    assert [a.get_title() for a in axes] == ["noise-free", "1e5 e⁻/pattern", "1e4 e⁻/pattern"]
    for ax in axes:
        lines = ax.get_lines()
        assert [ln.get_label() for ln in lines] == ["model", "baseline", "py4DSTEM"]
        assert list(lines[1].get_xdata()) == [100.0, 300.0] and list(lines[1].get_ydata()) == pytest.approx([0.2, 0.2])
        assert ax.get_xlabel() == "thickness (Å)"
    assert axes[0].get_ylabel() == "rms strain error (%)"


def test_a_higher_threshold_by_filtering_is_predict_at_that_threshold(tiny, tmp_path):
    """tune's strain objective predicts once at its lowest threshold and filters: the strain error it reports at a
    higher threshold is the one predict at that threshold gives; above every maximum nothing is fitted (1 %)."""
    from dataclasses import replace

    from fourdcrystal.detection.detect import settings_from_card
    from fourdcrystal.io.vectors import read_vectors
    from fourdcrystal.prediction.stage import PredictConfig, predict
    from fourdcrystal.model.card import card_path, resolve_weights

    out, _ = tiny
    files = sb.tuning_files(out)
    settings, _ = settings_from_card(json.loads(card_path(resolve_weights(None)).read_text()))
    fit = {"weights": "squared", "tolerance": 0.25}
    errs = sb.threshold_strain_errors(None, files, settings, [0.05, 0.3, 50.0], fit)
    assert errs[50.0] == sb.FAILED_PCT and errs[0.3] < 0.5
    at = replace(settings, model=replace(settings.model, min_relative=0.3, low_dose_e=0.0, low_dose_min_relative=None))
    direct = []
    for k, f in enumerate(files):
        v = sb.file_truth(f)
        predict(None, str(f), tmp_path / f"{k}.h5", PredictConfig(settings=at, tilt=False))
        v.methods["model"] = read_vectors(tmp_path / f"{k}.h5", "model")
        direct.append(sb.score_fit(v, "model", fit))
    assert errs[0.3] == pytest.approx(sb.mean_strain_error(direct), rel=1e-9)
    with pytest.raises(sb.FourdError, match="no tuning series"):
        sb.tuning_files(tmp_path)


def test_tune_keeps_the_threshold_that_fits_strain_best_among_those_near_the_best_f1(monkeypatch, tmp_path):
    """Within strain_f1_margin of the best mean F1 the lowest strain error wins; a threshold further down in F1
    is not a candidate however well it fits; the low-dose threshold is chosen on the low-dose files only."""
    from fourdcrystal.evaluation import tune as tune_mod

    f1 = {0.1: 0.70, 0.2: 0.795, 0.3: 0.80, 0.4: 0.792, 0.5: 0.60}
    strain = {0.1: 0.01, 0.2: 0.30, 0.3: 0.25, 0.4: 0.20, 0.5: 0.01}

    class Grid:
        def f1(self, key, doses):
            return f1[key[1]]

    seen = {}

    def fake(model, files, settings, thresholds, fit):
        seen.setdefault("files", []).append(sorted(p.name for p in files))
        return {t: strain[t] for t in thresholds}

    import h5py

    (tmp_path / "series" / "tune" / "X-001").mkdir(parents=True, exist_ok=True)
    for name, dose in (("series-t0100A-clean.h5", "clean"), ("series-t0100A-1e5.h5", "1e5"),
                       ("series-t0100A-1e3.h5", "1e3")):
        with h5py.File(tmp_path / "series" / "tune" / "X-001" / name, "w") as f:
            f.attrs["dose"] = dose
    (tmp_path / "series" / "tune" / "X-001" / "truth.json").write_text(json.dumps(
        {"files": ["series-t0100A-clean.h5", "series-t0100A-1e5.h5", "series-t0100A-1e3.h5"]}))
    monkeypatch.setattr(sb, "threshold_strain_errors", fake)
    cfg = tune_mod.TuneConfig(model_min_relative=tuple(f1), strain_benchmark=str(tmp_path), strain_f1_margin=0.01)
    m_key, low_t, record = tune_mod._strain_objective("m.pt", cfg, Grid(), ("zero_beam", 0.3, 3.0), 0.2,
                                                      ["clean", "1e+05"], ["1e+03"])
    assert m_key == ("zero_beam", 0.4, 3.0) and low_t == 0.4
    assert set(record["threshold"]["candidates"]) == {"0.2", "0.3", "0.4"} and record["threshold"]["chosen"] == 0.4
    assert seen["files"] == [["series-t0100A-1e5.h5", "series-t0100A-clean.h5"], ["series-t0100A-1e3.h5"]]
    # a gain within the noise (0.25 → 0.24 %, 4 %) does not move the threshold away from the best F1
    strain.update({0.4: 0.24, 0.3: 0.25, 0.2: 0.25})
    m_key, low_t, _ = tune_mod._strain_objective("m.pt", cfg, Grid(), ("zero_beam", 0.3, 3.0), 0.2,
                                                 ["clean", "1e+05"], ["1e+03"])
    assert m_key == ("zero_beam", 0.3, 3.0) and low_t == 0.2


def test_series_made_with_another_box_are_not_reused(tiny):
    """OUT/series holds what one --box / --detector-bin simulated: a run with another refuses in one line and
    leaves the report as it was."""
    out, _ = tiny
    before = (out / "report.json").read_bytes()
    line = _error(run_cli("-q", "strain-benchmark", str(out), *TINY[:-2], "--box", "80", "--detector-bin", "2"))
    assert "was simulated with a 40 Å box binned 1×" in line and "--box 80 --detector-bin 2" in line
    assert (out / "report.json").read_bytes() == before


def test_a_larger_box_binned_onto_the_detector_puts_the_disks_at_g():
    """--detector-bin: an 80 Å box simulated at 1/80 Å⁻¹ and summed 2 × 2 into 1/40 Å⁻¹ pixels; the vacuum probe
    stays centred on pixel (n/2, n/2) with maximum 1, and each {100} disk of GaN [001] sits at |g| = 2 / (√3 a)
    from it (its first moment, checked against the lattice constant, not against the simulation)."""
    from fourdcrystal.simulation.cbed import Optics
    from fourdcrystal.simulation.series import simulate_series

    s = simulate_series(sb.CRYSTALS["GaN"].structure(), (0, 0, 1), np.zeros((1, 3)), np.zeros(1),
                        Optics(200e3, 2.0, output_px=256), [60.0], 80.0, detector_bin=2)
    assert s.cbed.shape == (1, 1, 128, 128) and s.probe.shape == (128, 128)
    assert s.k_pixel_invA == pytest.approx(1 / 40) and s.probe.max() == pytest.approx(1.0)
    yy, xx = np.mgrid[0:128, 0:128]
    assert [float((s.probe * c).sum() / s.probe.sum()) for c in (yy, xx)] == pytest.approx([64.0, 64.0], abs=1e-3)
    g_px = 2 / (np.sqrt(3) * 3.189) / s.k_pixel_invA
    pat = s.cbed[0, 0]
    # locate the six strongest disks near |g| by the first moment of the ring's intensity
    ring = (np.abs(np.hypot(yy - 64, xx - 64) - g_px) <= 4) * pat
    theta = np.arctan2(xx - 64, yy - 64)
    for k in range(6):
        sector = ring * (np.abs(np.angle(np.exp(1j * (theta - theta.ravel()[np.argmax(ring)] - k * np.pi / 3)))) < 0.4)
        r = float((sector * np.hypot(yy - 64, xx - 64)).sum() / sector.sum())
        assert r == pytest.approx(g_px, abs=0.15), (k, r, g_px)
