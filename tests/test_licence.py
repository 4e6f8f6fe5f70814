"""The README's licence statement stays true: the stages it names as free of abTEM (GPL-3.0) do not import it."""

import json
import subprocess
import sys

import numpy as np

from .conftest import ROOT

_RUN = """
import sys
from fourdcrystal.cli import cli
for args in {runs!r}:
    try:
        cli.main(args, prog_name="fourdcrystal", standalone_mode=False)
    except SystemExit as exc:
        assert exc.code in (0, None), (args, exc.code)
print(sorted(m for m in ("abtem", "rsciio") if m in sys.modules))
"""


def test_predict_strain_and_export_run_without_importing_gpl_code(tmp_path):
    """predict (the shipped model and the baseline), strain and export run to the end in a process that never
    imports abTEM or RosettaSciIO: distributing those stages alone needs neither GPL package."""
    yy, xx = np.mgrid[:128, :128]
    frame = np.zeros((128, 128), np.float32)
    for gy, gx in ((0, 0), (18, 0), (0, 18), (-18, 0), (0, -18), (18, 18), (-18, -18), (18, -18), (-18, 18)):
        frame += ((yy - 64 - gy) ** 2 + (xx - 64 - gx) ** 2 <= 25) * (1000.0 if gy == gx == 0 else 300.0)
    np.save(tmp_path / "scan.npy", np.broadcast_to(frame, (2, 2, 128, 128)).copy())
    result, maps, bv = tmp_path / "r.h5", tmp_path / "strain.h5", tmp_path / "bv.h5"
    runs = [["-q", "predict", str(tmp_path / "scan.npy"), "--out", str(result), "--k-pixel", "0.02",
             "--energy", "200e3", "--semiangle", "2", "--method", "both"],
            ["-q", "strain", str(result), "--out", str(maps)],
            ["-q", "export", str(result), "--out", str(bv)]]
    res = subprocess.run([sys.executable, "-c", _RUN.format(runs=runs)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1].replace("'", '"')) == []
    assert result.exists() and maps.exists() and bv.exists()



def test_train_and_evaluate_run_without_importing_gpl_code(tmp_path):
    """train and evaluate, on a data set simulated beforehand (by abTEM, in this test's process), run to the end
    in a process that never imports abTEM or RosettaSciIO."""
    from .test_train import TINY, _simulate

    dataset = _simulate(tmp_path, "ds", 4, 32)
    model = tmp_path / "m" / "model.pt"
    runs = [["-q", "train", str(dataset), "--out", str(model.parent), "--epochs", "1", *TINY],
            ["-q", "evaluate", str(model), str(dataset), "--out", str(tmp_path / "ev"), "--doses", "clean"]]
    res = subprocess.run([sys.executable, "-c", _RUN.format(runs=runs)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1].replace("'", '"')) == []
    assert model.exists() and (tmp_path / "ev" / "report.json").exists()
