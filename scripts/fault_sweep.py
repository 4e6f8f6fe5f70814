#!/usr/bin/env python
"""Bad inputs and faults over every subcommand, as a new user would meet them.

Each case makes its inputs in a workspace (a small catalogue, specimens, a tiny dataset and a
1-epoch model are built first), runs one command, and checks the promise: exit code 2, exactly
one output line ``error: …`` naming the file or option, no traceback, and no new or changed
file in the workspace. Prints a table (case, verdict, message) and exits 1 if any case fails.

    python scripts/fault_sweep.py [--workspace DIR] [--only SUBSTRING]

``tests/test_faults.py`` runs the same table in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

POSCAR_XQ = """bad species
1.0
3.0 0.0 0.0
0.0 3.0 0.0
0.0 0.0 3.0
Xq
1
direct
0.0 0.0 0.0
"""



@dataclass
class Case:
    name: str
    cls: str  # the class of fault
    args: Callable[[Path], list[str]]  # workspace -> command-line arguments (after "fourdcrystal")
    expect: str  # a piece of the one-line message
    setup: Callable[[Path], None] | None = None
    tags: set = field(default_factory=set)  # "root-skip": meaningless as root (permissions)


def _si_cif(ws: Path) -> None:
    from pymatgen.core import Lattice, Structure

    if not (ws / "Si.cif").exists():
        Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]]).to(filename=str(ws / "Si.cif"))


def _copy_dataset(ws: Path, name: str) -> Path:
    out = ws / name
    if not out.exists():
        shutil.copytree(ws / "ds", out)
    return out


def _nan_shard(ws: Path) -> None:
    import h5py

    out = _copy_dataset(ws, "ds-nan")
    index = json.loads((out / "index.json").read_text())
    with h5py.File(out / index["shards"][0]["file"], "r+") as f:
        d = f["cbed"][0]
        d[3, 3] = np.nan
        f["cbed"][0] = d


def _null_shards(ws: Path) -> None:
    out = _copy_dataset(ws, "ds-null")
    index = json.loads((out / "index.json").read_text())
    index["shards"] = None
    (out / "index.json").write_text(json.dumps(index))


def _bad_split(ws: Path) -> None:
    out = _copy_dataset(ws, "ds-split")
    index = json.loads((out / "index.json").read_text())
    index["crystal_split"] = {k: "training" for k in (index.get("crystal_split") or {"x": 0})}
    (out / "index.json").write_text(json.dumps(index))


def _card_edit(ws: Path, name: str, edit: Callable[[dict], None]) -> Path:
    folder = ws / name
    if not folder.exists():
        shutil.copytree(ws / "model", folder)
        card = json.loads((folder / "model.json").read_text())
        edit(card)
        (folder / "model.json").write_text(json.dumps(card))
    return folder / "model.pt"


def _pickled_module(ws: Path) -> None:
    import torch

    folder = ws / "model-pickled"
    if not folder.exists():
        shutil.copytree(ws / "model", folder)
        torch.save(torch.nn.Linear(2, 2), folder / "model.pt")


def _pickled_module_signed(ws: Path) -> None:
    """A pickled module whose card was updated to its sha256: it gets past the checksum to torch.load."""
    import hashlib

    import torch

    folder = ws / "model-pickled-signed"
    if not folder.exists():
        shutil.copytree(ws / "model", folder)
        torch.save(torch.nn.Linear(2, 2), folder / "model.pt")
        card = json.loads((folder / "model.json").read_text())
        card["weights_sha256"] = hashlib.sha256((folder / "model.pt").read_bytes()).hexdigest()
        (folder / "model.json").write_text(json.dumps(card))


def _npy(ws: Path, name: str, array: np.ndarray) -> None:
    np.save(ws / name, array)


def _scan(kind: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = rng.poisson(5.0, size=(2, 2, 32, 32)).astype(np.float32)
    if kind == "nan":
        data[0, 1, 5, 5] = np.nan
    elif kind == "inf":
        data[1, 0, 2, 2] = np.inf
    elif kind == "zero":
        data[:] = 0
    elif kind == "negative":
        data = -data
    elif kind == "complex":
        data = data.astype(np.complex64)
    elif kind == "empty":
        data = np.zeros((0, 2, 32, 32), np.float32)
    return data


def _mib(ws: Path, name: str, kind: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.formats import mib_header, write_mib

    path = ws / name
    if kind == "header-too-long":
        path.write_bytes(mib_header(1, (32, 32), "U16")[:200])
    elif kind == "zero-frames":
        path.write_bytes(mib_header(1, (0, 0), "U16"))
    elif kind == "truncated":
        write_mib(path, np.ones((3, 3, 32, 32)), with_hdr=False)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 5 * (len(data) // 9) + 1000])  # 4 frames and a cut-off fifth


def _read_only(ws: Path) -> None:
    ro = ws / "readonly"
    ro.mkdir(exist_ok=True)
    os.chmod(ro, 0o555)


def _vectors_file(ws: Path) -> None:
    import h5py

    with h5py.File(ws / "not-vectors.h5", "w") as f:
        f["data"] = np.zeros((2, 2, 16, 16))


def cases() -> list[Case]:
    m = lambda ws: str(ws / "model" / "model.pt")  # noqa: E731
    d = lambda ws: str(ws / "ds")  # noqa: E731
    return [
        # --- select
        Case("select: existing --out, refused before building", "9 leftovers/order",
             lambda ws: ["select", "--out", str(ws / "cat")], "already exists"),
        Case("select: --max-crystals 0", "6 numbers", lambda ws: ["select", "--max-crystals", "0", "--out",
                                                                  str(ws / "n")], "max_crystals"),
        Case("select: files source without paths", "9 leftovers/order",
             lambda ws: ["select", "--source", "files", "--out", str(ws / "n")], "files"),
        Case("select: unknown element symbol in a POSCAR", "3 elements",
             lambda ws: ["select", "--source", "files", "--files", str(ws / "xq"), "--out", str(ws / "n")], "Xq",
             setup=lambda ws: ((ws / "xq").mkdir(exist_ok=True), (ws / "xq" / "POSCAR").write_text(POSCAR_XQ))),
        Case("select: duplicate config key", "9 leftovers/order",
             lambda ws: ["select", "--config", str(ws / "dup.yaml")], "given twice",
             setup=lambda ws: (ws / "dup.yaml").write_text("select:\n  seed: 1\n  seed: 2\n")),
        Case("select: config with an unknown section", "9 leftovers/order",
             lambda ws: ["select", "--config", str(ws / "sect.yaml")], "unknown section",
             setup=lambda ws: (ws / "sect.yaml").write_text("selekt:\n  seed: 1\n")),
        Case("select: missing config file", "9 leftovers/order",
             lambda ws: ["select", "--config", str(ws / "nope.yaml")], "nope.yaml"),
        # --- supercell
        Case("supercell: catalogue not found", "9 leftovers/order",
             lambda ws: ["supercell", str(ws / "nocat"), "--out", str(ws / "n")], "nocat"),
        Case("supercell: catalogue entry with invalid CIF text", "8 other tracebacks",
             lambda ws: ["supercell", str(ws / "cat-badcif"), "--out", str(ws / "n")], "CIF",
             setup=lambda ws: _bad_cif_catalogue(ws)),
        Case("supercell: negative thickness", "6 numbers",
             lambda ws: ["supercell", str(ws / "cat"), "--thickness", "-5", "--out", str(ws / "n")], "thickness"),
        Case("supercell: lateral size nan", "6 numbers",
             lambda ws: ["supercell", str(ws / "cat"), "--lateral-size", "nan", "--out", str(ws / "n")],
             "lateral"),
        Case("supercell: tilt beyond the small-angle limit", "6 numbers",
             lambda ws: ["supercell", str(ws / "cat"), "--tilt-max", "60", "--out", str(ws / "n")], "tilt"),
        Case("supercell: strain beyond ±20 %", "6 numbers",
             lambda ws: ["supercell", str(ws / "cat"), "--strain-pct", "30,0,0", "--out", str(ws / "n")],
             "20 %"),
        Case("supercell: existing --out", "9 leftovers/order",
             lambda ws: ["supercell", str(ws / "cat"), "--out", str(ws / "spec")], "already exists"),
        Case("supercell: usage error (integer expected)", "9 leftovers/order",
             lambda ws: ["supercell", str(ws / "cat"), "--zone-axes", "2.5"], "not a valid integer"),
        # --- simulate
        Case("simulate: specimens not found", "9 leftovers/order",
             lambda ws: ["simulate", str(ws / "nospec"), "--out", str(ws / "n")], "nospec"),
        Case("simulate: --thickness=-5 in structure mode, before any work", "9 leftovers/order",
             lambda ws: ["simulate", "--structure", str(ws / "Si.cif"), "--thickness=-5", "--out", str(ws / "n")],
             "thickness", setup=_si_cif),
        Case("simulate: --lateral-size nan in structure mode", "8 other tracebacks",
             lambda ws: ["simulate", "--structure", str(ws / "Si.cif"), "--lateral-size", "nan", "--out",
                         str(ws / "n")], "lateral", setup=_si_cif),
        Case("simulate: structure file not found", "9 leftovers/order",
             lambda ws: ["simulate", "--structure", str(ws / "none.cif"), "--out", str(ws / "n")], "none.cif"),
        Case("simulate: unknown element symbol", "3 elements",
             lambda ws: ["simulate", "--structure", str(ws / "xq" / "POSCAR"), "--out", str(ws / "n")], "Xq",
             setup=lambda ws: ((ws / "xq").mkdir(exist_ok=True), (ws / "xq" / "POSCAR").write_text(POSCAR_XQ))),
        Case("simulate: output_px 7", "6 numbers",
             lambda ws: ["simulate", str(ws / "spec"), "--output-px", "7", "--out", str(ws / "n")], "output_px"),
        Case("simulate: negative energy", "6 numbers",
             lambda ws: ["simulate", str(ws / "spec"), "--energy", "-1", "--out", str(ws / "n")], "energy"),
        Case("simulate: zero semi-angle", "6 numbers",
             lambda ws: ["simulate", str(ws / "spec"), "--semiangle", "0", "--out", str(ws / "n")], "semiangle"),
        Case("simulate: zero workers", "6 numbers",
             lambda ws: ["simulate", str(ws / "spec"), "--workers", "0", "--out", str(ws / "n")], "workers"),
        Case("simulate: zone axis 0 0 0", "6 numbers",
             lambda ws: ["simulate", "--structure", str(ws / "Si.cif"), "--zone-axis", "0", "0", "0", "--out",
                         str(ws / "n")], "zone axis", setup=_si_cif),
        Case("simulate: read-only output folder", "4 read-only",
             lambda ws: ["simulate", str(ws / "spec"), "--out", str(ws / "readonly" / "ds")], "readonly",
             setup=_read_only, tags={"root-skip"}),
        # --- inspect
        Case("inspect: --samples -3", "6 numbers", lambda ws: ["inspect", d(ws), "--samples", "-3"], "--samples"),
        Case("inspect: dataset not found", "9 leftovers/order", lambda ws: ["inspect", str(ws / "nods")], "nods"),
        Case("inspect: NaN in a shard", "2 non-finite data", lambda ws: ["inspect", str(ws / "ds-nan")],
             "NaN or infinite", setup=_nan_shard),
        Case("inspect: index.json with shards null", "8 other tracebacks",
             lambda ws: ["inspect", str(ws / "ds-null")], "shards", setup=_null_shards),
        # --- train
        Case("train: dataset not found", "9 leftovers/order",
             lambda ws: ["train", str(ws / "nods"), "--out", str(ws / "n")], "nods"),
        Case("train: NaN in a shard", "2 non-finite data",
             lambda ws: ["train", str(ws / "ds-nan"), "--epochs", "1", "--width", "4", "--depth", "2",
                         "--loader-workers", "0", "--out", str(ws / "n")], "NaN or infinite", setup=_nan_shard),
        Case("train: index.json with shards null", "8 other tracebacks",
             lambda ws: ["train", str(ws / "ds-null"), "--out", str(ws / "n")], "shards", setup=_null_shards),
        Case("train: invalid crystal_split in index.json", "9 leftovers/order",
             lambda ws: ["train", str(ws / "ds-split"), "--out", str(ws / "n")], "split", setup=_bad_split),
        Case("train: epochs 0", "6 numbers", lambda ws: ["train", d(ws), "--epochs", "0", "--out", str(ws / "n")],
             "epochs"),
        Case("train: batch size 0", "6 numbers",
             lambda ws: ["train", d(ws), "--batch-size", "0", "--out", str(ws / "n")], "batch_size"),
        Case("train: --init a pickled module", "5 model files",
             lambda ws: ["train", d(ws), "--init", str(ws / "model-pickled" / "model.pt"), "--out", str(ws / "n")],
             "model", setup=_pickled_module),
        Case("train: read-only output folder", "4 read-only",
             lambda ws: ["train", d(ws), "--epochs", "1", "--out", str(ws / "readonly" / "m")], "readonly",
             setup=_read_only, tags={"root-skip"}),
        # --- evaluate
        Case("evaluate: batch size 0", "8 other tracebacks",
             lambda ws: ["evaluate", m(ws), d(ws), "--batch-size", "0"], "--batch-size"),
        Case("evaluate: match radius -1", "6 numbers",
             lambda ws: ["evaluate", m(ws), d(ws), "--match-radius", "-1"], "--match-radius"),
        Case("evaluate: match radius nan", "6 numbers",
             lambda ws: ["evaluate", m(ws), d(ws), "--match-radius", "nan"], "--match-radius"),
        Case("evaluate: NaN in a shard", "2 non-finite data",
             lambda ws: ["evaluate", m(ws), str(ws / "ds-nan"), "--out", str(ws / "n")], "NaN or infinite",
             setup=_nan_shard),
        Case("evaluate: card without labels.qz_scale_invA", "5 model files",
             lambda ws: ["evaluate", str(ws / "model-noqz" / "model.pt"), d(ws), "--out", str(ws / "n")],
             "qz_scale_invA", setup=lambda ws: _card_edit(ws, "model-noqz", lambda c: c["labels"].pop("qz_scale_invA"))),
        Case("evaluate: card without architecture", "5 model files",
             lambda ws: ["evaluate", str(ws / "model-noarch" / "model.pt"), d(ws), "--out", str(ws / "n")],
             "architecture", setup=lambda ws: _card_edit(ws, "model-noarch", lambda c: c.pop("architecture"))),
        Case("evaluate: model a pickled module", "5 model files",
             lambda ws: ["evaluate", str(ws / "model-pickled" / "model.pt"), d(ws), "--out", str(ws / "n")],
             "model", setup=_pickled_module),
        Case("evaluate: a pickled module whose card carries its checksum", "5 model files",
             lambda ws: ["evaluate", str(ws / "model-pickled-signed" / "model.pt"), d(ws), "--out", str(ws / "n")],
             "not a file of model weights", setup=_pickled_module_signed),
        Case("evaluate: read-only output folder", "4 read-only",
             lambda ws: ["evaluate", m(ws), d(ws), "--out", str(ws / "readonly" / "ev")], "readonly",
             setup=_read_only, tags={"root-skip"}),
        # --- predict
        *[Case(f"predict: {kind} data", "2 non-finite data",
               lambda ws, kind=kind: ["predict", m(ws), str(ws / f"{kind}.npy"), "--k-pixel", "0.05", "--energy",
                                      "200e3", "--semiangle", "3", "--out", str(ws / "p.h5")], expect,
               setup=lambda ws, kind=kind: _npy(ws, f"{kind}.npy", _scan(kind)))
          for kind, expect in (("nan", "NaN or infinite"), ("inf", "NaN or infinite"), ("zero", "all zero"),
                               ("negative", "negative"), ("complex", "complex"), ("empty", "no positions"))],
        _mib_case("predict: .mib header longer than the file", "2 non-finite data", "short.mib", "header-too-long"),
        _mib_case("predict: .mib with 0×0 frames", "8 other tracebacks", "zero.mib", "zero-frames"),
        _mib_case("predict: truncated .mib (cut inside a frame)", "6 numbers", "trunc.mib", "truncated"),
        Case("predict: camera length 0", "6 numbers",
             lambda ws: ["predict", m(ws), str(ws / "ok.npy"), "--camera-length", "0", "--detector-pixel", "55",
                         "--energy", "200e3", "--out", str(ws / "p.h5")], "--camera-length",
             setup=lambda ws: _npy(ws, "ok.npy", _scan("ok"))),
        Case("predict: negative pixel size", "6 numbers",
             lambda ws: ["predict", m(ws), str(ws / "ok.npy"), "--k-pixel", "-1", "--out", str(ws / "p.h5")],
             "--k-pixel", setup=lambda ws: _npy(ws, "ok.npy", _scan("ok"))),
        Case("predict: infinite pixel size", "6 numbers",
             lambda ws: ["predict", m(ws), str(ws / "ok.npy"), "--k-pixel", "inf", "--out", str(ws / "p.h5")],
             "--k-pixel", setup=lambda ws: _npy(ws, "ok.npy", _scan("ok"))),
        Case("predict: centre outside the detector", "6 numbers",
             lambda ws: ["predict", m(ws), str(ws / "ok.npy"), "--k-pixel", "0.05", "--energy", "200e3",
                         "--semiangle", "3", "--centre", "100,5", "--out", str(ws / "p.h5")], "--centre",
             setup=lambda ws: _npy(ws, "ok.npy", _scan("ok"))),
        Case("predict: --scan-shape contradicting a .npy", "6 numbers",
             lambda ws: ["predict", m(ws), str(ws / "ok.npy"), "--k-pixel", "0.05", "--scan-shape", "1x4",
                         "--energy", "200e3", "--semiangle", "3", "--out", str(ws / "p.h5")], "--scan-shape", setup=lambda ws: _npy(ws, "ok.npy", _scan("ok"))),
        Case("predict: --min-relative nan", "6 numbers",
             lambda ws: ["predict", m(ws), str(ws / "ok.npy"), "--k-pixel", "0.05", "--min-relative", "nan",
                         "--out", str(ws / "p.h5")], "--min-relative", setup=lambda ws: _npy(ws, "ok.npy", _scan("ok"))),
        Case("predict: --device cuda without CUDA", "8 other tracebacks",
             lambda ws: ["predict", m(ws), str(ws / "ok.npy"), "--k-pixel", "0.05", "--device", "cuda",
                         "--out", str(ws / "p.h5")], "cuda", setup=lambda ws: _npy(ws, "ok.npy", _scan("ok")),
             tags={"needs-no-cuda"}),
        Case("predict: --out is the input, with --overwrite", "7 concurrency/processes",
             lambda ws: ["predict", m(ws), str(ws / "ok.h5"), "--k-pixel", "0.05", "--energy", "200e3",
                         "--semiangle", "3", "--out", str(ws / "ok.h5"), "--overwrite"], "input",
             setup=lambda ws: _h5_scan(ws / "ok.h5")),
        Case("predict: --out is the model's weights, with --overwrite", "7 concurrency/processes",
             lambda ws: ["predict", m(ws), str(ws / "ok.npy"), "--k-pixel", "0.05", "--out", m(ws), "--overwrite"],
             "the model's weights", setup=lambda ws: _npy(ws, "ok.npy", _scan("ok"))),
        Case("predict: --out is the probe file, with --overwrite", "7 concurrency/processes",
             lambda ws: ["predict", m(ws), str(ws / "ok.npy"), "--k-pixel", "0.05", "--probe", str(ws / "probe.npy"),
                         "--out", str(ws / "probe.npy"), "--overwrite"], "the probe file",
             setup=lambda ws: (_npy(ws, "ok.npy", _scan("ok")), _npy(ws, "probe.npy", np.ones((8, 8), np.float32)))),
        Case("predict: --out names a PNG (the summary's own name)", "7 concurrency/processes",
             lambda ws: ["predict", m(ws), str(ws / "ok.npy"), "--k-pixel", "0.05", "--out", str(ws / "r.png")],
             "ending in .h5", setup=lambda ws: _npy(ws, "ok.npy", _scan("ok"))),
        Case("predict: model a pickled module", "5 model files",
             lambda ws: ["predict", str(ws / "model-pickled" / "model.pt"), str(ws / "ok.npy"), "--k-pixel", "0.05",
                         "--out", str(ws / "p.h5")], "model",
             setup=lambda ws: (_pickled_module(ws), _npy(ws, "ok.npy", _scan("ok")))),
        Case("predict: card without labels.qz_scale_invA", "5 model files",
             lambda ws: ["predict", str(ws / "model-noqz" / "model.pt"), str(ws / "ok.npy"), "--k-pixel", "0.05",
                         "--out", str(ws / "p.h5")], "qz_scale_invA",
             setup=lambda ws: (_card_edit(ws, "model-noqz", lambda c: c["labels"].pop("qz_scale_invA")),
                               _npy(ws, "ok.npy", _scan("ok")))),
        Case("predict: read-only output folder", "4 read-only",
             lambda ws: ["predict", m(ws), str(ws / "ok.npy"), "--k-pixel", "0.05", "--energy", "200e3",
                         "--semiangle", "3", "--out", str(ws / "readonly" / "p.h5")], "readonly",
             setup=lambda ws: (_read_only(ws), _npy(ws, "ok.npy", _scan("ok"))), tags={"root-skip"}),
        # --- tune, strain, export
        Case("tune: --limit 0", "6 numbers", lambda ws: ["tune", m(ws), d(ws), "--limit", "0"], "--limit"),
        Case("strain: not a vector file", "9 leftovers/order",
             lambda ws: ["strain", str(ws / "not-vectors.h5"), "--out", str(ws / "s.h5")], "no Bragg vectors",
             setup=_vectors_file),
        Case("strain: vector file not found", "9 leftovers/order",
             lambda ws: ["strain", str(ws / "none.h5"), "--out", str(ws / "s.h5")], "not found"),
        Case("export: not a vector file", "9 leftovers/order",
             lambda ws: ["export", str(ws / "not-vectors.h5"), "--out", str(ws / "e.h5")], "no Bragg vectors",
             setup=_vectors_file),
        Case("export: --out is the input, with --overwrite", "7 concurrency/processes",
             lambda ws: ["export", str(ws / "not-vectors.h5"), "--out", str(ws / "not-vectors.h5"), "--overwrite"],
             "the predict result", setup=_vectors_file),
        Case("export: --out where no file can be created (/proc)", "2 paths",
             lambda ws: ["export", str(ws / "vec.h5"), "--out", "/proc/fourdcrystal-e.h5"],
             "cannot write /proc/fourdcrystal-e.h5: its lock file"),
        Case("usage: unknown subcommand", "9 leftovers/order", lambda ws: ["segment"], "No such command"),
        # found by the new sweep (experiments/new_sweep): options that were ignored, lists with a hole in them
        Case("select: --elements without the mp source", "10 new sweep",
             lambda ws: ["select", "--elements", "Xx", "--out", str(ws / "n")], "add --source mp"),
        Case("select: --timeout without the mp source", "10 new sweep",
             lambda ws: ["select", "--timeout", "5", "--out", str(ws / "n")], "--timeout"),
        Case("select: --elements Si,,O", "10 new sweep",
             lambda ws: ["select", "--source", "mp", "--elements", "Si,,O", "--out", str(ws / "n")], "empty item"),
        Case("supercell: --thickness 20,,40", "10 new sweep",
             lambda ws: ["supercell", str(ws / "cat"), "--thickness", "20,,40", "--out", str(ws / "n")], "empty item"),
        Case("simulate: --energy with a trailing comma", "10 new sweep",
             lambda ws: ["simulate", str(ws / "spec"), "--energy", "200e3,", "--out", str(ws / "n")], "--energy"),
        Case("evaluate: --doses 1e5,,1e4", "10 new sweep",
             lambda ws: ["evaluate", m(ws), d(ws), "--doses", "1e5,,1e4", "--out", str(ws / "n")], "empty item"),
        Case("strain-benchmark: --crystals Si,,GaN", "10 new sweep",
             lambda ws: ["strain-benchmark", str(ws / "n"), "--crystals", "Si,,GaN"], "empty item"),
        Case("strain-benchmark: --py4dstem-settings without --py4dstem-python", "10 new sweep",
             lambda ws: ["strain-benchmark", str(ws / "n"), "--py4dstem-settings", str(ws / "s.json")],
             "--py4dstem-python"),
        *generated_cases(),
    ]


# Each subcommand's command line with good inputs (and an output that does not exist yet): a generated case
# changes one thing, so the refusal is that thing's alone.
def _bases() -> dict[str, Callable[[Path], list[str]]]:
    m = lambda ws: str(ws / "model" / "model.pt")  # noqa: E731
    return {
        "select": lambda ws: ["select", "--max-crystals", "2", "--out", str(ws / "n")],
        "supercell": lambda ws: ["supercell", str(ws / "cat"), "--out", str(ws / "n")],
        "simulate": lambda ws: ["simulate", str(ws / "spec"), "--output-px", "32", "--out", str(ws / "n")],
        "inspect": lambda ws: ["inspect", str(ws / "ds"), "--png", str(ws / "n.png")],
        "train": lambda ws: ["train", str(ws / "ds"), "--epochs", "1", "--width", "4", "--depth", "2",
                             "--loader-workers", "0", "--out", str(ws / "n")],
        "evaluate": lambda ws: ["evaluate", m(ws), str(ws / "ds"), "--out", str(ws / "n")],
        "tune": lambda ws: ["tune", m(ws), str(ws / "ds"), "--dry-run"],
        "predict": lambda ws: ["predict", m(ws), str(ws / "ok.npy"), "--k-pixel", "0.05", "--energy", "200e3",
                               "--semiangle", "3", "--out", str(ws / "n.h5")],
        "strain": lambda ws: ["strain", str(ws / "vec.h5"), "--out", str(ws / "n.h5")],
        "export": lambda ws: ["export", str(ws / "vec.h5"), "--out", str(ws / "n.h5")],
        "strain-benchmark": lambda ws: ["strain-benchmark", str(ws / "n"), "--model", m(ws)],
    }


# (subcommand, option, bad values): every value must be refused in one line naming the option, before any work
_BAD_NUMBERS = [
    ("select", "--max-crystals", ["0", "-1", "2.5"]),
    ("select", "--seed", ["-1", str(2**70)]),
    ("select", "--symprec", ["0", "-1", "nan", "inf", "2"]),
    ("select", "--e-above-hull-max", ["-1", "nan", "inf"]),
    ("select", "--max-results", ["0", "-5"]),
    ("select", "--timeout", ["0", "-1", "nan", "inf", "1e9"]),
    ("supercell", "--zone-axes", ["0", "-1"]),
    ("supercell", "--max-index", ["0", "7"]),
    ("supercell", "--tilt-max", ["-1", "nan", "inf", "51"]),
    ("supercell", "--strain-tol", ["-1", "nan", "0.06"]),
    ("supercell", "--seed", ["-1", str(2**70)]),
    ("simulate", "--energy", ["0", "-1", "nan", "inf", "5", "1e300", "abc"]),
    ("simulate", "--semiangle", ["-1", "nan", "inf", "101", "1e6"]),
    ("simulate", "--defocus", ["nan", "inf", "1e300"]),
    ("simulate", "--cs", ["nan", "inf", "1e300", "-1e300"]),
    ("simulate", "--output-px", ["0", "-8", "5000", str(2**70)]),
    ("simulate", "--slice-thickness", ["0", "-1", "nan", "1e-6", "1e300"]),
    ("simulate", "--positions", ["0", "-1", "1000000000"]),
    ("simulate", "--frozen-phonons", ["-1", "100001"]),
    ("simulate", "--phonon-fraction", ["-0.1", "1.5", "nan"]),
    ("simulate", "--specimens-per-shard", ["0", "-1"]),
    ("simulate", "--limit", ["0", "-1"]),
    ("simulate", "--workers", ["-1", "100000"]),
    ("simulate", "--seed", ["-1", str(2**70)]),
    ("inspect", "--samples", ["1001", "-1"]),
    ("inspect", "--seed", ["-1", str(2**70)]),
    ("train", "--epochs", ["-1", "1000000000"]),
    ("train", "--crop", ["7", "-16"]),
    ("train", "--batch-size", ["-1", "100000"]),
    ("train", "--lr", ["0", "-1", "nan", "inf"]),
    ("train", "--width", ["0", "-1", "100000"]),
    ("train", "--depth", ["0", "9"]),
    ("train", "--dropout", ["-0.1", "1", "nan"]),
    ("train", "--loader-workers", ["-1"]),
    ("train", "--seed", ["-1", str(2**70)]),
    ("train", "--epochs-this-run", ["0", "-1"]),
    ("evaluate", "--match-radius", ["0", "inf"]),
    ("evaluate", "--label-min-relative", ["-0.1", "1.5", "nan"]),
    ("evaluate", "--min-relative", ["-0.1", "1.5", "inf"]),
    ("evaluate", "--limit", ["0", "-1"]),
    ("evaluate", "--batch-size", ["-1", "100000"]),
    ("evaluate", "--seed", ["-1", str(2**70)]),
    ("evaluate", "--thick-from", ["-1", "nan", "inf"]),
    ("tune", "--match-radius", ["0", "-1", "nan", "inf"]),
    ("tune", "--limit", ["-1"]),
    ("predict", "--k-pixel", ["0", "nan", "1e6", "1e-9", "abc"]),
    ("predict", "--energy", ["0", "-1", "nan", "inf", "5", "1e300"]),
    ("predict", "--semiangle", ["0", "-1", "nan", "1e6"]),
    ("predict", "--min-relative", ["-0.1", "1.5"]),
    ("predict", "--max-peaks", ["0", "-1"]),
    ("predict", "--chunk", ["0", "-1", "1000000000"]),
    ("predict", "--batch-size", ["0", "-1", "100000"]),
    ("strain", "--tolerance", ["0", "-1", "nan", "0.6"]),
    ("strain", "--min-vectors", ["0", "2", "-1"]),
    ("strain", "--min-indexed-fraction", ["-0.1", "1", "nan"]),
    ("strain-benchmark", "--energy", ["0", "nan", "1e300"]),
    ("strain-benchmark", "--semiangle", ["0", "-1", "inf"]),
    ("strain-benchmark", "--box", ["0", "-1", "nan", "1e9"]),
    ("strain-benchmark", "--px", ["0", "-1", "100000"]),
    ("strain-benchmark", "--detector-bin", ["0", "-1"]),
    ("strain-benchmark", "--seed", ["-1", str(2**70)]),
    ("strain-benchmark", "--threads", ["0", "-1"]),
]

# subcommands with --config, and the sections their configs are read for
_CONFIGURED = ["select", "supercell", "simulate", "inspect", "train", "evaluate", "tune", "predict", "strain"]
# subcommands whose output --out names a folder (the rest name a file)
_FOLDER_OUT = ["select", "supercell", "simulate", "train", "evaluate"]
_FILE_OUT = {"predict": ".h5", "strain": ".h5", "export": ".h5", "inspect": ".png"}


def _with(base: Callable[[Path], list[str]], extra: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
    """The base command line with options added (a later option wins in click)."""
    return lambda ws: base(ws) + extra(ws)


def _replace_out(base: Callable[[Path], list[str]], out: Callable[[Path], str]) -> Callable[[Path], list[str]]:
    def args(ws: Path) -> list[str]:
        a = base(ws)
        flag = "--png" if a[0] == "inspect" else "--out"
        if flag in a:
            a[a.index(flag) + 1] = out(ws)
        else:  # strain-benchmark: OUT is its first argument
            a[1] = out(ws)
        return a
    return args


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda ws: (ws / name).write_bytes(data)


def generated_cases() -> list[Case]:
    """Cases made by rule over every subcommand: numbers out of range, over-long and wrong-typed outputs,
    damaged config files and inputs that are not what they claim."""
    bases = _bases()
    ok_scan = lambda ws: _npy(ws, "ok.npy", _scan("ok"))  # noqa: E731
    out: list[Case] = []
    for cmd, option, values in _BAD_NUMBERS:
        for value in values:
            out.append(Case(f"{cmd}: {option}={value if len(value) < 12 else value[:8] + '…'}", "6 numbers",
                            _with(bases[cmd], lambda ws, o=option, v=value: [f"{o}={v}"]), option, setup=ok_scan))
    for scan in ("0 1", "-1 3", "1 1"):
        out.append(Case(f"strain-benchmark: --scan {scan}", "6 numbers",
                        _with(bases["strain-benchmark"], lambda ws, s=scan: ["--scan", *s.split()]), "--scan"))
    long_name = "x" * 240
    for cmd in bases:
        if cmd == "tune":
            continue
        suffix = _FILE_OUT.get(cmd, "")
        # strain-benchmark makes no name from its folder's: only a name over the file system's limit is wrong
        name = "x" * 300 if cmd == "strain-benchmark" else long_name
        out.append(Case(f"{cmd}: output name of {len(name)} bytes", "8 other tracebacks",
                        _replace_out(bases[cmd], lambda ws, s=suffix, n=name: str(ws / (n + s))), "bytes",
                        setup=ok_scan))
        out.append(Case(f"{cmd}: output inside a regular file", "8 other tracebacks",
                        _replace_out(bases[cmd], lambda ws, s=suffix: str(ws / "plain.txt" / ("o" + s))),
                        "plain.txt", setup=lambda ws: (ok_scan(ws), (ws / "plain.txt").write_text("x\n"))))
    for cmd in _FOLDER_OUT:
        out.append(Case(f"{cmd}: output folder is a regular file", "8 other tracebacks",
                        _replace_out(bases[cmd], lambda ws: str(ws / "plain.txt")), "plain.txt",
                        setup=lambda ws: (ws / "plain.txt").write_text("x\n")))
    for cmd in _CONFIGURED:
        configs = [
            ("not UTF-8", "latin1.yaml", "caf\xe9: 1\n".encode("latin-1"), "latin1.yaml"),
            ("binary", "binary.yaml", bytes(range(256)) * 4, "binary.yaml"),
            ("a list, not a mapping", "list.yaml", b"- 1\n- 2\n", "list.yaml"),
            ("its section a number", "num.yaml", f"{cmd}: 5\n".encode(), "num.yaml"),
            ("unknown key", "key.yaml", f"{cmd}:\n  no_such_key: 1\n".encode(), "no_such_key"),
            ("a folder", "cfgdir", None, "cfgdir"),
        ]
        for what, name, data, expect in configs:
            setup = (lambda ws, n=name: (ws / n).mkdir(exist_ok=True)) if data is None else _write(name, data)
            out.append(Case(f"{cmd}: config file {what}", "8 other tracebacks",
                            _with(bases[cmd], lambda ws, n=name: ["--config", str(ws / n)]), expect,
                            setup=lambda ws, s=setup: (ok_scan(ws), s(ws))))
    # inputs that are not what they claim: random bytes, an empty file, a folder where a file belongs
    inputs = {
        "supercell": (1, "catalogue"), "simulate": (1, "specimens"), "inspect": (1, "dataset"),
        "train": (1, "dataset"), "evaluate": (2, "dataset"), "tune": (2, "dataset"), "predict": (2, "data"),
        "strain": (1, "vectors"), "export": (1, "vectors"),
    }
    for cmd, (pos, what) in inputs.items():
        for kind, name, make in (
            ("random bytes", "junk.h5", _write("junk.h5", bytes(np.random.default_rng(1).integers(0, 256, 4096,
                                                                                               np.uint8)))),
            ("an empty file", "empty.h5", _write("empty.h5", b"")),
            ("an empty folder", "emptydir", lambda ws: (ws / "emptydir").mkdir(exist_ok=True)),
        ):
            def args(ws, cmd=cmd, pos=pos, name=name):
                a = bases[cmd](ws)
                a[pos] = str(ws / name)
                return a
            out.append(Case(f"{cmd}: {what} is {kind}", "8 other tracebacks", args, name,
                            setup=lambda ws, mk=make: (ok_scan(ws), mk(ws))))
        if cmd in ("evaluate", "tune", "predict"):
            def model_args(ws, cmd=cmd):
                a = bases[cmd](ws)
                a[1] = str(ws / "junk.pt")
                return a
            out.append(Case(f"{cmd}: model weights are random bytes", "5 model files", model_args, "junk",
                            setup=lambda ws: (ok_scan(ws), _write("junk.pt", bytes(range(256)) * 8)(ws))))
    return out


def _mib_case(name: str, cls: str, file: str, kind: str) -> Case:
    """predict on a damaged .mib (made by _mib): the message names the file."""
    return Case(name, cls, lambda ws: ["predict", str(ws / "model" / "model.pt"), str(ws / file), "--k-pixel", "0.05",
                                       "--energy", "200e3", "--semiangle", "3", "--out", str(ws / "p.h5")],
                file, setup=lambda ws: _mib(ws, file, kind))


def _bad_cif_catalogue(ws: Path) -> None:
    out = ws / "cat-badcif"
    if out.exists():
        return
    shutil.copytree(ws / "cat", out)
    cat = json.loads((out / "catalogue.json").read_text())
    cat["crystals"][0]["cif"] = "data_broken\n_cell_length_a oops\n"
    (out / "catalogue.json").write_text(json.dumps(cat))


def _h5_scan(path: Path) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f["data"] = _scan("ok")


def build_workspace(ws: Path, run) -> None:
    """A catalogue, specimens, a tiny dataset and a 1-epoch model, made with the CLI itself."""
    ws.mkdir(parents=True, exist_ok=True)
    steps = [
        ["-q", "select", "--max-crystals", "4", "--out", str(ws / "cat")],
        ["-q", "supercell", str(ws / "cat"), "--out", str(ws / "spec"), "--zone-axes", "1", "--thickness", "20,40",
         "--lateral-size", "12", "--max-index", "1"],
        ["-q", "simulate", str(ws / "spec"), "--out", str(ws / "ds"), "--output-px", "32", "--specimens-per-shard",
         "2", "--semiangle", "3"],
        ["-q", "train", str(ws / "ds"), "--epochs", "1", "--width", "4", "--depth", "2", "--batch-size", "4",
         "--loader-workers", "0", "--out", str(ws / "model")],
    ]
    for args in steps:
        code, out = run(args)
        if code != 0:
            raise RuntimeError(f"workspace step failed: {' '.join(args)}\n{out}")
    _npy(ws, "ok.npy", _scan("ok"))  # a predict result for strain and export
    code, out = run(["-q", "predict", str(ws / "model" / "model.pt"), str(ws / "ok.npy"), "--k-pixel", "0.05",
                     "--energy", "200e3", "--semiangle", "3", "--out", str(ws / "vec.h5")])
    if code != 0:
        raise RuntimeError(f"workspace step failed: predict\n{out}")


def snapshot(ws: Path) -> dict[str, tuple[int, int]]:
    """Files with size and time stamp; folders by name only (a write probe touches a folder's time stamp)."""
    return {str(p.relative_to(ws)): (0, 0) if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in ws.rglob("*") if not p.is_symlink()}


def check(case: Case, ws: Path, run) -> tuple[bool, str]:
    """Run one case; (passed, the message or what went wrong)."""
    if case.setup:
        case.setup(ws)
    before = snapshot(ws)
    code, out = run(case.args(ws))
    after = snapshot(ws)
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("warning:")]
    problems = []
    if code != 2:
        problems.append(f"exit {code}")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        problems.append(f"{len(lines)} lines")
    if "Traceback" in out:
        problems.append("traceback")
    if case.expect not in out:
        problems.append(f"message lacks {case.expect!r}")
    changed = sorted(k for k in set(after) | set(before) if after.get(k) != before.get(k))
    if changed:
        problems.append(f"left or changed {changed[:3]}")
    for k in sorted(set(after) - set(before), reverse=True):  # clean up, so the next case starts alike
        p = ws / k
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    message = lines[0] if lines else out.strip()[-300:]
    return (not problems), ("; ".join(problems) + " | " if problems else "") + message


def subprocess_runner(args: list[str]) -> tuple[int, str]:
    res = subprocess.run([sys.executable, "-m", "fourdcrystal.cli", *args], capture_output=True, text=True,
                         timeout=600)
    return res.returncode, res.stdout + res.stderr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", default="fault-sweep", help="folder for the inputs [default: fault-sweep]")
    ap.add_argument("--only", help="run the cases whose name contains this")
    args = ap.parse_args(argv)
    ws = Path(args.workspace).resolve()
    t0 = time.perf_counter()
    if not (ws / "model" / "model.pt").exists():
        build_workspace(ws, subprocess_runner)
    failed = skipped = 0
    todo = [c for c in cases() if not args.only or args.only in c.name]
    for case in todo:
        if "root-skip" in case.tags and os.geteuid() == 0:
            print(f"SKIP  {case.name}  (running as root: permissions do not stop writes)")
            skipped += 1
            continue
        ok, msg = check(case, ws, subprocess_runner)
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'}  {case.name}  [{case.cls}]\n      {msg}")
    print(f"{len(todo) - failed - skipped} of {len(todo) - skipped} cases as promised, {skipped} skipped "
          f"({time.perf_counter() - t0:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
