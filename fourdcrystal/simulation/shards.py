"""The dataset on disk: HDF5 shards and ``index.json``. Write (atomic), read, validate.

A dataset folder holds ``index.json`` and shards ``shard-NNNNNN.h5``. Each shard has

* ``cbed``, ``probe``, ``vg``, ``qz``: float32 (n, H, W), one sample per chunk, gzip+shuffle;
  q = 0 at pixel (H//2, W//2); axis 1 is k_x, axis 2 is k_y;
* ``meta/<name>``: one entry per sample (see ``META``);
* ``truth/``: the physical truth of every sample (:mod:`fourdcrystal.simulation.truth`), ragged:
  ``truth/offsets`` (n + 1,) and one row per reflection in ``truth/<field>`` (sample i's rows are
  ``offsets[i]:offsets[i + 1]``); absent from shards written before it existed
  (``fourdcrystal truth DATASET`` adds it);
* attributes ``schema``, ``k_sampling_invA`` (median (k_x, k_y) pixel size of the shard, Å⁻¹;
  exact per-sample values are in ``meta/k_sampling_invA``), ``output_px``, ``task``,
  ``fourdcrystal_version``, ``abtem_version``.

A shard is written under a temporary name and renamed when complete, so a shard file that
exists is whole; a killed run restarted with the same command skips finished shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_file
from ..errors import FourdError

SHARD_SCHEMA = "fourdcrystal.shard/1"
INDEX_SCHEMA = "fourdcrystal.dataset/1"
INDEX = "index.json"
IMAGES = ("cbed", "probe", "vg", "qz")
TRUTH = "truth"
# name -> (dtype, per-sample shape); strings are variable-length UTF-8
META = {
    "sample_id": (str, ()),
    "specimen_id": (str, ()),
    "crystal_id": (str, ()),
    "formula": (str, ()),
    "prototype": (str, ()),
    "split": (str, ()),
    "zone_axis": (np.int32, (3,)),
    "inplane_rotation_deg": (np.float64, ()),
    "tilt_mrad": (np.float64, (2,)),
    "tilt_mode": (str, ()),
    "strain": (np.float64, (3,)),  # applied in-plane strain (ε_xx, ε_yy, ε_xy), fractions, specimen frame
    "thickness_A": (np.float64, ()),  # realised: a whole number of slices
    "thickness_nominal_A": (np.float64, ()),  # as requested in the manifest
    "energy_eV": (np.float64, ()),
    "semiangle_mrad": (np.float64, ()),
    "defocus_A": (np.float64, ()),
    "cs_A": (np.float64, ()),
    "probe_position_A": (np.float64, (2,)),
    "k_sampling_invA": (np.float64, (2,)),
    "slice_thickness_A": (np.float64, ()),
    "frozen_phonons": (np.int32, ()),
    "seed": (np.int64, ()),
}


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.h5"


def write_shard(path: str | Path, images: dict[str, np.ndarray], meta: dict[str, Sequence], attrs: dict[str, Any],
                truth: Sequence | None = None) -> None:
    """Write one shard atomically (temporary file in the same folder, then rename).

    ``truth``: one :class:`~fourdcrystal.simulation.truth.Reflections` per sample, or None.
    """
    import h5py

    path = Path(path)
    n = len(images["cbed"])
    for name in IMAGES:
        if images[name].shape != images["cbed"].shape:
            raise ValueError(f"{name} has shape {images[name].shape}, cbed {images['cbed'].shape}")
    # built in memory, then written with plain file I/O: a full disk is then an ordinary OSError on one
    # write, where HDF5 writing to the disk itself fails half-way and segfaults on closing the file
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for name in IMAGES:
            arr = np.ascontiguousarray(images[name], dtype=np.float32)
            f.create_dataset(name, data=arr, chunks=(1, *arr.shape[1:]), compression="gzip",
                             compression_opts=1, shuffle=True)
        g = f.create_group("meta")
        for name, (dtype, shape) in META.items():
            values = meta[name]
            if len(values) != n:
                raise ValueError(f"meta/{name} has {len(values)} entries for {n} samples")
            if dtype is str:
                g.create_dataset(name, data=np.array([str(v) for v in values], dtype=object),
                                 dtype=h5py.string_dtype())
            else:
                g.create_dataset(name, data=np.asarray(values, dtype=dtype).reshape(n, *shape))
        for k, v in attrs.items():
            f.attrs[k] = v
        f.attrs["schema"] = SHARD_SCHEMA
        if truth is not None:
            _write_truth(f, truth, n)
    _commit(path, buf, "rerun the same command to resume")


def _commit(path: Path, buf: io.BytesIO, resume: str) -> None:
    """Write a shard built in memory to ``path`` atomically."""
    try:
        with atomic_file(path) as tmp, open(tmp, "wb") as fh:
            fh.write(buf.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise FourdError(f"cannot write shard {path}: {exc.strerror}; the shards already written are kept: make "
                         f"room and {resume}") from None


def _write_truth(f, truth: Sequence, n: int) -> None:
    from .truth import SCHEMA, Reflections

    if len(truth) != n:
        raise ValueError(f"truth for {len(truth)} samples, shard has {n}")
    g = f.create_group(TRUTH)
    g.attrs["schema"] = SCHEMA
    g.create_dataset("offsets", data=np.cumsum([0] + [len(t) for t in truth]).astype(np.int64))
    for name in Reflections.names():
        g.create_dataset(name, data=np.concatenate([getattr(t, name) for t in truth]), compression="gzip",
                         compression_opts=1, shuffle=True)


def add_truth(path: str | Path, truth: Sequence) -> None:
    """Add (or replace) the truth group of a finished shard, atomically; nothing else in it changes."""
    import h5py

    path = Path(path)
    buf = io.BytesIO(path.read_bytes())
    with h5py.File(buf, "r+") as f:
        if TRUTH in f:
            del f[TRUTH]
        _write_truth(f, truth, int(f["cbed"].shape[0]))
    _commit(path, buf, "run the same command again: shards that hold the truth are skipped")


def shard_task(path: str | Path) -> str | None:
    """The task hash a finished shard was written for, or None when it is unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("schema") != SHARD_SCHEMA:
                return None
            return str(f.attrs.get("task"))
    except OSError:
        return None


@dataclass
class Shard:
    """Read access to one shard (opened lazily, per process)."""

    path: Path

    def __post_init__(self):
        self._file = None
        self._truth = None

    @property
    def file(self):
        import h5py

        if self._file is None:
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise FourdError(f"{self.path}: not a readable HDF5 shard ({exc})") from None
        return self._file

    def __len__(self) -> int:
        return int(self.file["cbed"].shape[0])

    def images(self, i: int) -> dict[str, np.ndarray]:
        return {name: self.file[name][i] for name in IMAGES}

    @property
    def has_truth(self) -> bool:
        return TRUTH in self.file

    def reflections(self, i: int):
        """The physical truth of sample ``i`` (:class:`~fourdcrystal.simulation.truth.Reflections`)."""
        from .truth import Reflections

        if not self.has_truth:
            raise FourdError(f"{self.path}: no physical truth in this shard; add it with: fourdcrystal truth DATASET")
        if self._truth is None:  # a few kB per sample: read once
            self._truth = {name: d[...] for name, d in self.file[TRUTH].items()}
        a, b = int(self._truth["offsets"][i]), int(self._truth["offsets"][i + 1])
        return Reflections(**{name: self._truth[name][a:b] for name in Reflections.names()})

    def meta(self, name: str) -> np.ndarray:
        d = self.file["meta"][name]
        return d.asstr()[...] if d.dtype.kind == "O" else d[...]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._truth = None

    def __enter__(self) -> "Shard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_index(folder: str | Path) -> dict:
    """Read and check ``index.json`` of a dataset folder (every listed shard must exist)."""
    folder = Path(folder)
    path = folder / INDEX
    if not path.exists():
        raise FourdError(f"{path} not found; expected a dataset folder written by fourdcrystal simulate")
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FourdError(f"{path}: unreadable dataset index ({exc})") from None
    if not isinstance(index, dict) or index.get("schema") != INDEX_SCHEMA:
        found = index.get("schema") if isinstance(index, dict) else type(index).__name__
        raise FourdError(f"{path}: schema {found!r}, expected {INDEX_SCHEMA!r}")
    listed = index.get("shards")
    if not isinstance(listed, list) or not all(isinstance(s, dict) and isinstance(s.get("file"), str)
                                               and isinstance(s.get("samples"), int) for s in listed):
        raise FourdError(f"{path}: 'shards' must be a list of {{file, samples}} entries; the index is damaged "
                         f"(simulate the dataset again)")
    for s in listed:
        if not (folder / s["file"]).exists():
            raise FourdError(f"{path} lists {s['file']}, which is missing from {folder}")
    splits = index.get("crystal_split")
    if splits is not None and (not isinstance(splits, dict)
                               or not set(splits.values()) <= {"train", "val", "test"}):
        bad = sorted(set(splits.values()) - {"train", "val", "test"}) if isinstance(splits, dict) else splits
        raise FourdError(f"{path}: crystal_split holds {bad!r}; expected train, val or test per crystal")
    return index


def check_finite(folder: str | Path, index: dict, block: int = 64) -> None:
    """Every image of every shard finite, read in blocks of samples; one line naming the first bad sample.

    Run before training, scoring or inspecting a dataset: a NaN would otherwise surface as a
    traceback deep inside (shot noise, losses, peak finding). Costs one read of the data.
    """
    folder = Path(folder)
    for entry in index["shards"]:
        with Shard(folder / entry["file"]) as sh:
            for name in IMAGES:
                ds = sh.file[name]
                for start in range(0, ds.shape[0], block):
                    part = ds[start:start + block]
                    ok = np.isfinite(part).reshape(len(part), -1).all(axis=1)
                    if not ok.all():
                        i = start + int(np.argmin(ok))
                        raise FourdError(f"{folder / entry['file']}: sample {i}: {name} holds NaN or infinite "
                                         f"values; the shard is damaged (simulate it again)")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
