"""`fourdcrystal train` end to end on real simulated shards: overfitting, exact resume, torchrun, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fourdcrystal.errors import FourdError
from fourdcrystal.simulation import shards
from fourdcrystal.model.card import load_model
from fourdcrystal.training.data import ShardDataset, open_dataset, zero_beam

from .conftest import ROOT, run_cli

TINY = ["--width", "4", "--depth", "2", "--batch-size", "4", "--loader-workers", "0"]


def _simulate(base: Path, name: str, crystals: int, px: int, extra_cfg: str = "") -> Path:
    cat, spec, out = base / f"{name}-cat", base / f"{name}-spec", base / name
    assert run_cli("-q", "select", "--max-crystals", str(crystals), "--out", str(cat)).exit_code == 0
    res = run_cli("-q", "supercell", str(cat), "--out", str(spec), "--zone-axes", "1", "--thickness", "20,40",
                  "--lateral-size", "12", "--max-index", "1")
    assert res.exit_code == 0, res.output
    args = ["-q", "simulate", str(spec), "--out", str(out), "--output-px", str(px), "--specimens-per-shard", "2",
            "--semiangle", "3"]
    if extra_cfg:
        (base / f"{name}.yaml").write_text(extra_cfg)
        args += ["--config", str(base / f"{name}.yaml")]
    res = run_cli(*args)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _simulate(tmp_path_factory.mktemp("train"), "ds", 6, 32)


def _config(tmp: Path, **train) -> str:
    path = tmp / "train.yaml"
    path.write_text(json.dumps({"train": train}))  # JSON is YAML
    return str(path)


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _error(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output
    return lines[0]


def test_dataset_targets_and_splits(dataset):
    index, where, info = open_dataset(dataset)
    assert info.shape == (32, 32) and info.split_counts == {"train": 8, "val": 2, "test": 2}
    ds = ShardDataset(dataset, where["train"], qz_scale_invA=0.01)
    raw, item = ds.raw(3), ds[3]
    assert item["cbed"].shape == (1, 32, 32) and item["vg"].dtype == torch.float32
    assert float(item["vg"][0, 16, 16]) == pytest.approx(1.0)  # relative to the zero beam
    np.testing.assert_allclose(item["vg"][0].numpy(), raw["vg"] / zero_beam(raw["vg"]), rtol=1e-6)
    np.testing.assert_allclose(item["qz"][0].numpy(), raw["qz"] / 0.01, rtol=1e-6)


def test_tiny_model_overfits_real_shards(dataset, tmp_path, drawn):
    cfg = _config(tmp_path, patience=0, warmup_epochs=0, augment={"enabled": False})
    out = tmp_path / "m"
    res = run_cli("-q", "train", str(dataset), "--config", cfg, "--out", str(out), "--width", "8", "--depth", "2",
                  "--dropout", "0", "--batch-size", "8", "--lr", "3e-3", "--schedule", "constant",
                  "--loss-weighting", "fixed", "--epochs", "120", "--loader-workers", "0")
    assert res.exit_code == 0, res.output
    h = _history(out)
    first, last = h[0]["train_loss"], min(r["train_loss"] for r in h[-10:])
    assert first / last >= 10, (first, last)
    # both tasks learned, not one at the other's expense
    assert h[0]["train_vg_mse"] / h[-1]["train_vg_mse"] > 10 and h[0]["train_qz_wmse"] / h[-1]["train_qz_wmse"] > 3
    model, card = load_model(out / "model.pt")
    assert card["input"]["shape"] == [32, 32] and card["training"]["split_counts"]["train"] == 8
    # learned the reflections, not only the zero beam: on its own training patterns the V_g error of
    # the last weights is far below that of a prediction holding the zero beam alone
    # (Σ label² off the zero beam / Σ label², computed here from the labels)
    _, where, _ = open_dataset(dataset)
    ds = ShardDataset(dataset, where["train"], qz_scale_invA=1.0)
    items = [ds[i] for i in range(len(ds))]
    cbed, probe, vg = (torch.stack([it[k] for it in items]) for k in ("cbed", "probe", "vg"))
    last = load_model_state(out)
    with torch.no_grad():
        pred = last(cbed, probe)["vg"]
    err = float(((pred - vg) ** 2).sum() / (vg**2).sum())
    off_zero = vg.clone()
    off_zero[..., 16, 16] = 0
    floor = float((off_zero**2).sum() / (vg**2).sum())
    assert err < 0.5 * floor, (err, floor)
    assert all(divmod(int(p.argmax()), 32) == (16, 16) for p in pred[:, 0])  # the zero beam where the label has it
    dk = []
    for e in shards.read_index(dataset)["shards"]:
        with shards.Shard(dataset / e["file"]) as sh:
            dk.append(np.asarray(sh.meta("k_sampling_invA")).reshape(-1))
    dk = np.concatenate(dk)
    assert card["input"]["range"]["k_sampling_invA"] == [dk.min(), dk.max()]  # over every sample
    assert card["training"]["best_epoch"] == 1 + min(range(len(h)), key=lambda i: h[i]["val_loss"])
    # the curves drawn are this run's history: losses per epoch on log axes, the learning rate beside them
    axes = drawn["curves.png"].axes
    epochs = [r["epoch"] for r in h]
    lines = {(ax.get_title(), ln.get_label()): ln for ax in axes for ln in ax.get_lines()}
    for (title, label), key in ((("vg NMSE (error² / label²)", "train"), "train_vg_nmse"),
                                (("vg NMSE (error² / label²)", "val"), "val_vg_nmse"),
                                (("loss (train: weighted sum)", "val"), "val_loss"),
                                (("learning rate at epoch end", "_child0"), "lr")):
        ln = lines[(title, label)]
        assert list(ln.get_xdata()) == epochs
        np.testing.assert_allclose(np.asarray(ln.get_ydata(), float), [r[key] for r in h], rtol=1e-6)
    assert all(ax.get_xlabel() == "epoch" for ax in axes) and axes[0].get_yscale() == "log"


def load_model_state(out: Path) -> torch.nn.Module:
    """The network with the weights of the last epoch (checkpoint.pt), in eval mode."""
    from fourdcrystal.model.fcunet import FCUNet, FCUNetConfig

    card = json.loads((out / "model.json").read_text())
    model = FCUNet(FCUNetConfig(**card["architecture"]))
    model.load_state_dict(torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["model"])
    return model.eval()


def test_resume_equals_uninterrupted_run(dataset, tmp_path):
    # augmentation and dropout on: the RNG state must survive the interruption too
    cfg = _config(tmp_path, patience=0)
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["train", str(dataset), "--config", cfg, *TINY, "--epochs", "3", "--dropout", "0.2"]
    assert run_cli("-q", *common, "--out", str(a)).exit_code == 0
    res = run_cli("-q", *common, "--out", str(b), "--epochs-this-run", "1", "--loader-workers", "2")
    assert res.exit_code == 0 and "--resume" in res.output
    assert not (b / "model.pt").exists() and len(_history(b)) == 1
    res = run_cli("-q", *common, "--out", str(b))
    assert "--resume" in _error(res)  # an existing run is never silently restarted
    res = run_cli("-q", *common, "--out", str(b), "--resume", "--loader-workers", "2")
    assert res.exit_code == 0, res.output
    sa = torch.load(a / "model.pt", weights_only=True)
    sb = torch.load(b / "model.pt", weights_only=True)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)
    ha, hb = _history(a), _history(b)
    for ra, rb in zip(ha, hb):
        assert ra["train_loss"] == rb["train_loss"] and ra["val_loss"] == rb["val_loss"]
    assert (a / "model.pt").read_bytes() == (b / "model.pt").read_bytes()


@pytest.mark.slow
def test_torchrun_two_processes_identical_weights(dataset, tmp_path):
    out = tmp_path / "ddp"
    cfg = _config(tmp_path, patience=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "fourdcrystal",
           "-q", "train", str(dataset), "--config", cfg, *TINY, "--epochs", "2", "--out", str(out), "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, card = load_model(out / "model.pt")
    assert card["training"]["world_size"] == 2 and card["training"]["ranks_identical_weights"] is True
    h = _history(out)
    assert len(h) == 2 and all(np.isfinite(r["train_loss"]) for r in h)


def test_bad_input_one_line(dataset, tmp_path):
    # an index that does not match its shards
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in dataset.iterdir():
        (broken / f.name).symlink_to(f)
    (broken / "index.json").unlink()
    index = json.loads((dataset / "index.json").read_text())
    index["shards"][0]["samples"] += 1
    (broken / "index.json").write_text(json.dumps(index))
    assert "does not match its shards" in _error(run_cli("train", str(broken), *TINY, "--out", str(tmp_path / "x")))
    # patterns too small for the network depth
    assert "2^depth" in _error(run_cli("train", str(dataset), "--depth", "6", "--out", str(tmp_path / "x")))
    # not a dataset at all
    assert "index.json not found" in _error(run_cli("train", str(tmp_path), "--out", str(tmp_path / "x")))
    # a bad config value names the key
    assert "batch_size" in _error(run_cli("train", str(dataset), "--batch-size", "0"))
    assert not (tmp_path / "x").exists()


def test_empty_split_other_size_corrupted_checkpoint_and_card(dataset, tmp_path):
    base = tmp_path
    no_val = _simulate(base, "noval", 3, 32, "simulate:\n  val_fraction: 0.0\n  test_fraction: 0.0\n")
    assert "val split is empty" in _error(run_cli("train", str(no_val), *TINY, "--out", str(base / "x")))

    out = base / "m"
    cfg = _config(base, patience=0)
    assert run_cli("-q", "train", str(dataset), "--config", cfg, *TINY, "--epochs", "1", "--out", str(out)).exit_code == 0
    # a model for 32×32 patterns starts training on 64×64 ones (the network is convolutional); the new card
    # states the new size
    big = _simulate(base, "big", 3, 64)
    res = run_cli("-q", "train", str(big), "--config", cfg, *TINY, "--epochs", "1", "--init", str(out / "model.pt"),
                  "--out", str(base / "y"))
    assert res.exit_code == 0, res.output
    assert json.loads((base / "y" / "model.json").read_text())["input"]["shape"] == [64, 64]
    # a corrupted checkpoint
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    assert "corrupted" in _error(run_cli("train", str(dataset), "--config", cfg, *TINY, "--epochs", "1", "--out",
                                         str(out), "--resume"))
    # weights that no longer match their card
    weights = out / "model.pt"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(FourdError, match="does not match its card"):
        load_model(weights)
    assert "does not match its card" in _error(run_cli("train", str(dataset), "--config", cfg, *TINY, "--init",
                                                       str(weights), "--out", str(base / "z")))


def test_evaluate_model_and_baseline(dataset, tmp_path, monkeypatch):
    from fourdcrystal import plots

    titles, save = {}, plots.save_figure

    def save_and_read_title(fig, path):
        titles[Path(path).name] = fig._suptitle.get_text() if fig._suptitle else ""
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", save_and_read_title)
    out = tmp_path / "m"
    cfg = _config(tmp_path, patience=0)
    assert run_cli("-q", "train", str(dataset), "--config", cfg, *TINY, "--epochs", "1", "--out", str(out)).exit_code == 0
    res = run_cli("-q", "evaluate", str(out / "model.pt"), str(dataset), "--doses", "clean,1e4", "--out",
                  str(tmp_path / "ev"), "--min-relative", "0.1", "--thick-from", "40")
    assert res.exit_code == 0, res.output
    assert "baseline" in res.output and "1e+04" in res.output and "thickness ≥ 40 Å:" in res.output
    assert "thickness <200 Å:" in res.output and "recall by the reflection's strength" in res.output
    assert "secondary: against the maxima of the V_g label map" in res.output
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["patterns"] == 2 and report["split"] == "test" and report["truth"] == "physical"
    for method in ("model", "baseline"):
        s = report["overall"][method]
        assert s["patterns"] == 4 and s["true_peaks"] > 0
        # the F1 is the harmonic mean of the precision and recall reported beside it, and the recall the share of
        # the required reflections matched
        p, r = s["precision"], s["recall"]
        assert s["f1"] == pytest.approx(2 * p * r / (p + r) if p + r > 0 else 0.0, abs=1e-9)
        assert r == pytest.approx(s["matched"] / s["true_peaks"], abs=1e-9)
        # every required reflection but the zero beams (at most one per pattern) counted once by strength
        by_strength = sum(b["true_peaks"] for b in s["recall_by_strength"].values())
        assert s["true_peaks"] - s["patterns"] <= by_strength <= s["true_peaks"]
        assert sum(s["false_peaks_by_kind"].values()) == s["predicted_peaks"] - s["matched"]
        assert sum(b["matched"] for b in s["position_by_g_invA"].values()) == s["matched"]
        assert report["vg_label"]["by_dose"][method]["clean"]["true_peaks"] > 0
        assert set(report["by_dose_and_thickness_A"][method]["clean"]) == {"20", "40"}
        for dose in ("clean", "1e+04"):  # the thick group is the 40 Å patterns alone here
            assert report["by_dose_thick"][method][dose] == report["by_dose_and_thickness_A"][method][dose]["40"]
    assert report["overall"]["baseline"]["qz_mae_invA"] is None
    # tilt: every test pattern tilted within the range counted once per method and dose, fitted or failed, beside
    # the rms of answering zero (the shards' tilts, read independently, where every fit succeeded)
    tilt = report["tilt"]
    assert "crystal tilt" in tilt["convention"] and tilt["max_true_mrad"] == 8.0
    assert "out-of-plane tilt against the truth" in res.output
    # by beam energy and by zone-axis index: groups read from the shards, each pattern counted once
    from fourdcrystal.simulation import shards
    from fourdcrystal.training.data import open_dataset

    _, where, _ = open_dataset(dataset)
    kv, axis, mrad = set(), set(), set()
    for name, row in where["test"]:
        with shards.Shard(dataset / name) as sh:
            kv.add(f"{sh.meta('energy_eV')[row] / 1e3:g}")
            axis.add(str(int(abs(sh.meta("zone_axis")[row]).max())))
            mrad.add(f"{sh.meta('semiangle_mrad')[row]:g}")
    for key, groups in (("by_dose_and_energy_kV", kv), ("by_dose_and_zone_axis_index", axis),
                        ("by_dose_and_semiangle_mrad", mrad)):
        table = report[key]["model"]["clean"]
        assert set(table) == groups and sum(t["patterns"] for t in table.values()) == 2, key
    assert f"beam energy {sorted(kv)[0]} kV:" in res.output and "zone axis index" in res.output
    from fourdcrystal.detection.tilt import crystal_tilt_mrad

    true = []
    for name, row in where["test"]:
        with shards.Shard(dataset / name) as sh:
            true.append(crystal_tilt_mrad(sh.meta("tilt_mrad")[row], sh.meta("tilt_mode")[row]))
    true = [t for t in true if np.hypot(*t) <= 8.0]
    # the model's q_z tilt and its combination with the Laue fit on its vectors, wherever the model gives q_z
    assert ("model_combined" in tilt["by_dose"]) == ("model_qz" in tilt["by_dose"])
    for method in ("classical", "model_vectors", "model_learned",
                   *(("model_combined",) if "model_qz" in tilt["by_dose"] else ())):
        for dose in ("clean", "1e+04"):
            row = tilt["by_dose"][method][dose]
            assert row["patterns"] == len(true) and row["fitted"] + row["failed"] == row["patterns"]
            assert sum(b["patterns"] for b in tilt["by_dose_and_thickness_bin"][method][dose].values()) == len(true)
            if row["failed"] == 0 and true:
                assert row["zero_rms_mrad"] == pytest.approx(np.sqrt(np.mean(np.sum(np.square(true), axis=1))))
    assert (tmp_path / "ev" / "worst.png").exists() and (tmp_path / "ev" / "metrics_vs_thickness.png").exists()
    # every figure names the model it shows (the quickstart's smoke model is told apart from the shipped one)
    assert titles["curves.png"] == "m: training curves"
    assert titles["metrics_vs_thickness.png"].startswith("m/model.pt vs classical baseline")
    assert titles["worst.png"].startswith("m/model.pt: its ") and "worst test patterns" in titles["worst.png"]
    assert "--doses" in _error(run_cli("evaluate", str(out / "model.pt"), str(dataset), "--doses", "lots"))
    for bad in (["--min-relative", "nan"], ["--match-radius", "-1"], ["--match-radius", "nan"], ["--limit", "0"]):
        assert bad[0] in _error(run_cli("evaluate", str(out / "model.pt"), str(dataset), *bad)), bad


def test_tune_chooses_settings_that_evaluate_and_predict_use(dataset, tmp_path):
    """tune grid-searches both methods on the val split and writes the card; evaluate then reports with those
    settings, and on the split it was tuned on neither method scores below its default settings (the grid
    holds the defaults)."""
    out = tmp_path / "m"
    assert run_cli("-q", "train", str(dataset), *TINY, "--epochs", "1", "--out", str(out)).exit_code == 0
    weights = out / "model.pt"
    card0 = json.loads(weights.with_suffix(".json").read_text())

    def mean_f1(tag):
        res = run_cli("-q", "evaluate", str(weights), str(dataset), "--split", "val", "--doses", "clean,1e4",
                      "--out", str(tmp_path / tag))
        assert res.exit_code == 0, res.output
        report = json.loads((tmp_path / tag / "report.json").read_text())
        return report, {m: np.mean([report["by_dose"][m][d]["f1"] for d in ("clean", "1e+04")])
                        for m in ("model", "baseline")}

    before, f1_before = mean_f1("default")
    assert before["settings_tuned"] is False
    res = run_cli("-q", "tune", str(weights), str(dataset), "--doses", "clean,1e4")
    assert res.exit_code == 0, res.output
    assert "model:" in res.output and "baseline: kernel" in res.output
    card = json.loads(weights.with_suffix(".json").read_text())
    section = card["peaks"]
    assert card["weights_sha256"] == card0["weights_sha256"]  # the weights are untouched
    assert section["tuned_on"]["split"] == "val" and section["tuned_on"]["doses"] == ["clean", "1e+04"]
    assert section["settings"]["model"]["refine"] in ("vg", "correlation")
    # the model's threshold: a fraction of its strongest maximum or of the zero beam's V_g, both searched
    assert section["settings"]["model"]["threshold_of"] in ("strongest", "zero_beam")
    assert section["grid"]["model_threshold_of"] == ["strongest", "zero_beam"]
    # 10⁴ e⁻ among the doses beside a higher one: it gets a threshold of its own
    model = section["settings"]["model"]
    assert model["low_dose_e"] == 3e4 and model["low_dose_min_relative"] in section["grid"]["model_min_relative"]
    assert section["grid_size"]["model"] == 2 * len(section["grid"]["model_min_relative"]) * len(
        section["grid"]["model_spacing_px"])
    assert section["settings"]["baseline"]["kernel"] in ("flat", "gaussian", "sigmoid")
    # the classical tilt: its rocking-curve width chosen from the grid, or the defaults kept where no fit succeeded
    # (on the val patterns tilted within evaluate's 8 mrad; none there: not tuned)
    from fourdcrystal.simulation import shards
    from fourdcrystal.detection.tilt import crystal_tilt_mrad

    _, where, _ = open_dataset(dataset)
    in_range = 0
    for name, row in where["val"]:
        with shards.Shard(dataset / name) as sh:
            in_range += np.hypot(*crystal_tilt_mrad(sh.meta("tilt_mrad")[row], sh.meta("tilt_mode")[row])) <= 8.0
    tilt = section["tilt"] or {"samples": 0, "settings": None}
    assert tilt["samples"] == 2 * in_range  # patterns × doses
    if in_range:
        assert set(tilt["by_sigma_invA"]) == {f"{v:g}" for v in section["grid"]["tilt_sigma_invA"]}
        assert tilt["settings"] is None or tilt["settings"]["sigma_invA"] in section["grid"]["tilt_sigma_invA"]
    after, f1_after = mean_f1("tuned")
    assert after["settings_tuned"] is True and after["settings"] == section["settings"]
    from fourdcrystal.detection.tilt import TiltSettings

    assert after["tilt"]["settings"] == (tilt["settings"] or TiltSettings().as_dict())
    for m in ("model", "baseline"):
        assert f1_after[m] >= f1_before[m] - 0.02, (m, f1_before, f1_after)
        assert section["grid_best_f1"][m] == pytest.approx(f1_after[m], abs=0.05)
    assert "--limit" in _error(run_cli("tune", str(weights), str(dataset), "--limit", "0"))


def test_random_crops_carry_their_zero_beam_and_train_end_to_end(dataset, tmp_path):
    """--crop: each training sample is a seeded random window of pattern and targets, the probe cut about its
    centre to the same size; where the window holds the zero beam, zero_px points at it (relative V_g 1 there)
    and the losses leave that pixel out exactly as they leave out the centre of a whole pattern. A run with crops
    trains, validates on whole patterns and records the crop in its card."""
    from fourdcrystal.model.losses import qz_weighted_mse, vg_nmse

    _, where, _ = open_dataset(dataset)
    ds = ShardDataset(dataset, where["train"], 1.0, crop_px=16, seed=3)
    seen_inside = 0
    for i in range(len(ds)):
        s = ds[(0, i)]
        assert s["cbed"].shape == s["probe"].shape == s["vg"].shape == s["qz"].shape == (1, 16, 16)
        zi, zj = s["zero_px"].tolist()
        if zi >= 0:
            seen_inside += 1
            assert s["vg"][0, zi, zj] == pytest.approx(1.0)  # the relative zero beam
        assert torch.equal(ds[(0, i)]["cbed"], s["cbed"])  # seeded: the same window every time
    assert 0 < seen_inside < len(ds)
    full = ShardDataset(dataset, where["train"], 1.0)[0]
    p = full["probe"][0]
    assert torch.equal(ds[(0, 0)]["probe"][0], p[16 - 8:16 + 8, 16 - 8:16 + 8])
    # zero_px at the centre gives exactly the whole-pattern losses
    t = {k: full[k][None] for k in ("vg", "qz")}
    pred = {k: v + 0.1 for k, v in t.items()}
    centre = torch.tensor([[16, 16]])
    assert torch.equal(qz_weighted_mse(pred["qz"], t["qz"], t["vg"], centre), qz_weighted_mse(pred["qz"], t["qz"],
                                                                                             t["vg"]))
    assert torch.equal(vg_nmse(pred["vg"], t["vg"], 2.0, centre), vg_nmse(pred["vg"], t["vg"], 2.0))
    out = tmp_path / "crop"
    res = run_cli("-q", "train", str(dataset), "--out", str(out), "--epochs", "2", "--crop", "16", *TINY)
    assert res.exit_code == 0, res.output
    card = json.loads((out / "model.json").read_text())
    assert card["training"]["config"]["crop_px"] == 16 and card["input"]["shape"] == [32, 32]
    assert all(np.isfinite(h["val_loss"]) for h in _history(out))
    assert "--crop" in _error(run_cli("train", str(dataset), "--out", str(tmp_path / "c2"), "--crop", "18", *TINY))
    # the asinh V_g loss (weak reflections weighted up) trains with crops and selects on its own validation value
    cfg = _config(tmp_path, patience=0, vg_loss="asinh", vg_asinh_scale=0.05)
    out = tmp_path / "asinh"
    res = run_cli("-q", "train", str(dataset), "--config", cfg, "--out", str(out), "--epochs", "1", "--crop", "16",
                  *TINY)
    assert res.exit_code == 0, res.output
    card = json.loads((out / "model.json").read_text())
    assert card["training"]["config"]["vg_loss"] == "asinh" and card["training"]["config"]["vg_asinh_scale"] == 0.05
    assert all(np.isfinite(h["val_loss"]) for h in _history(out))


def test_a_diverging_run_stops_with_one_line_and_saves_no_model(dataset, tmp_path):
    """A learning rate far too high makes the weights non-finite: train says so in one line (exit 2) instead
    of saving a model that predicts NaN."""
    out = tmp_path / "m"
    res = run_cli("train", str(dataset), *TINY, "--epochs", "2", "--lr", "1e10", "--out", str(out))
    line = _error(res)
    assert "diverged in epoch 1" in line and "not finite" in line
    assert not (out / "model.pt").exists() and not (out / "checkpoint.pt").exists()


def test_validation_under_noise_is_one_fixed_draw_and_picks_the_epoch_by_its_vg_error(dataset, tmp_path):
    noisy = {"augment": {"dose_e": [30.0, 30.0]}, "patience": 0}
    common = ["train", str(dataset), *TINY, "--epochs", "2"]
    # a learning rate too small to move the weights: the validation score may change only with its data
    still = {"lr": 1e-12, "warmup_epochs": 0.0}
    a, b = tmp_path / "clean-val", tmp_path / "noisy-val"
    assert run_cli("-q", *common, "--config", _config(tmp_path, **noisy, **still), "--out", str(a)).exit_code == 0
    cfg_b = tmp_path / "b.yaml"
    cfg_b.write_text(json.dumps({"train": {**noisy, **still, "val_augment": True}}))
    assert run_cli("-q", *common, "--config", str(cfg_b), "--out", str(b)).exit_code == 0
    ha, hb = _history(a), _history(b)
    assert [r["train_loss"] for r in ha] == [r["train_loss"] for r in hb]  # the same training
    for ra, rb in zip(ha, hb):  # validated on other (noisy) patterns
        assert abs(ra["val_vg_nmse"] - rb["val_vg_nmse"]) > 1e-3 * ra["val_vg_nmse"]
    # one draw: a validation pattern (read by index, as the validation loader does) is the same noisy pattern
    # every time it is read
    from fourdcrystal.training.augment import AugmentConfig
    from fourdcrystal.training.data import ShardDataset, open_dataset

    val = open_dataset(dataset)[1]["val"]
    noisy_ds = ShardDataset(dataset, val, 1.0, augment=AugmentConfig(dose_e=(30.0, 30.0)), seed=1)
    first, again = noisy_ds[0]["cbed"], noisy_ds[0]["cbed"]
    assert torch.equal(first, again)
    assert not torch.equal(first, ShardDataset(dataset, val, 1.0)[0]["cbed"])

    c = tmp_path / "select"
    cfg_c = tmp_path / "c.yaml"
    cfg_c.write_text(json.dumps({"train": {**noisy, "val_augment": True, "select_on": "vg_nmse", "lr": 3e-3}}))
    assert run_cli("-q", "train", str(dataset), *TINY, "--epochs", "4", "--config", str(cfg_c),
                   "--out", str(c)).exit_code == 0
    hc = _history(c)
    card = json.loads((c / "model.json").read_text())
    assert card["training"]["best_epoch"] == 1 + min(range(len(hc)), key=lambda i: hc[i]["val_vg_nmse"])
    best = torch.load(c / "checkpoint.pt", weights_only=False)
    assert best["best_loss"] == min(r["val_vg_nmse"] for r in hc)


def test_figures_name_the_model_they_show(tmp_path, monkeypatch):
    """A figure says whose it is: the training curves carry the run's name (the quickstart's is smoke-model), the
    evaluation plots the model's folder and file."""
    from fourdcrystal import plots

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig) or Path(path))
    history = [{"epoch": e, "lr": 1e-3, "train_loss": 1.0 / (e + 1), "val_loss": 1.1 / (e + 1),
                "train_vg_nmse": 0.9, "val_vg_nmse": 0.8, "train_qz_wmse": 0.5, "val_qz_wmse": 0.4} for e in range(3)]
    plots.training_curves(history, tmp_path / "c.png", title="smoke-model: training curves")
    assert drawn[-1]._suptitle.get_text() == "smoke-model: training curves"
    assert plots.model_label(tmp_path / "smoke-model" / "model.pt") == "smoke-model/model.pt"


def test_a_short_write_on_a_full_disk_is_named_as_such(tmp_path, monkeypatch):
    """torch reports a checkpoint cut short by a full disk as "unexpected pos N vs M"; save_state names the file
    and "No space left on device" when the folder has less room than the tensors need, torch's words otherwise,
    and leaves no file behind either way."""
    import shutil as _shutil
    from collections import namedtuple

    import torch

    from fourdcrystal.errors import FourdError
    from fourdcrystal.model import card as card_mod

    def short_write(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 94464 vs 94356")

    monkeypatch.setattr(card_mod.torch, "save", short_write)
    usage = namedtuple("usage", "total used free")
    state = {"w": torch.zeros(1000)}
    for free, want in ((10, "No space left on device"), (10**9, "unexpected pos")):
        monkeypatch.setattr(_shutil, "disk_usage", lambda p, _f=free: usage(10**9, 0, _f))
        with pytest.raises(FourdError, match=f"cannot write .*ckpt.pt: .*{want}"):
            card_mod.save_state(tmp_path / "ckpt.pt", state)
        assert list(tmp_path.iterdir()) == []


def test_train_tilt_read_writes_a_reader_that_loads(dataset, tmp_path, capsys):
    """scripts/train_tilt_read.py on real shards: the reader's JSON loads as a TiltReader, with its training and
    validation figures and the data set's fingerprint; a folder that is no data set is one error line, exit 2, and
    nothing written."""
    import importlib.util

    from fourdcrystal.model.card import read_tilt_reader

    spec = importlib.util.spec_from_file_location("train_tilt_read", ROOT / "scripts" / "train_tilt_read.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "read.json"
    assert tool.main([str(dataset), "--out", str(out), "--steps", "3", "--width", "4"]) == 0
    reader = read_tilt_reader(out)
    card = json.loads(out.read_text())
    assert reader.layers[0][0].shape == (10, 4) and reader.ridge > 0 and reader.sigma_scale > 0
    assert card["training"]["steps"] == 3 and card["training"]["patterns"] > 0
    # the tiny validation split has no pair to score: no figures, the error scale left at 1
    assert card["validation"]["patterns"] >= 0 and len(card["dataset"]["index_sha256"]) == 64
    assert (card["validation"]["rms_mrad"] is None) == (reader.sigma_scale == 1.0)
    capsys.readouterr()
    assert tool.main([str(tmp_path), "--out", str(tmp_path / "no.json")]) == 2 and not (tmp_path / "no.json").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(tmp_path) in err[0], err
    # the same data and seed give the same file
    again = tmp_path / "again.json"
    assert tool.main([str(dataset), "--out", str(again), "--steps", "3", "--width", "4"]) == 0
    first, second = json.loads(out.read_text()), json.loads(again.read_text())
    assert first.pop("command") != second.pop("command") and first == second
