"""A torch Dataset over the HDF5 shards of `fourdcrystal simulate`, one split at a time.

Every shard is checked against ``index.json`` when the dataset is opened (sample count, image
size, split labels), so a mismatch is one clear line before training starts, not a crash in a
loader worker an hour later. Files are opened lazily, once per process: h5py handles must not
cross a fork.

Targets are normalised for training and the normalisation travels in the model card:
``vg`` is divided by its zero-beam value (the pixel at q = 0), so the network learns relative
Bragg potentials whatever the thickness (``target``: the V_g label map, or a map made from the
shards' physical truth, :func:`fourdcrystal.simulation.truth.target_map`, whose zero beam is 1);
``qz`` is divided by ``qz_scale_invA``, the V_g-weighted r.m.s. q_z of the training split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import choices
from ..errors import FourdError
from ..simulation import shards
from .augment import AugmentConfig, augment_sample

SPLITS = ("train", "val", "test")
TARGETS = {"label": None, "truth_vg": "vg", "truth_presence": "presence"}  # train.target -> target_map amplitude


@dataclass(frozen=True)
class DatasetInfo:
    """What a model trained on a dataset expects of its inputs (recorded in the model card)."""

    folder: str
    index_sha256: str
    shape: tuple[int, int]
    k_sampling_invA: tuple[float, float]  # median pixel size of the patterns along (k_x, k_y), Å⁻¹
    k_sampling_range_invA: tuple[float, float]  # smallest and largest pixel size in the dataset, Å⁻¹
    energy_eV: float  # the (first) beam energy, eV
    semiangle_mrad: float  # the (first) convergence semi-angle, mrad
    split_counts: dict[str, int]
    energy_range_eV: tuple[float, float] = (np.nan, np.nan)  # lowest and highest beam energy, eV
    semiangle_range_mrad: tuple[float, float] = (np.nan, np.nan)  # smallest and largest semi-angle, mrad


def _locations(folder: Path, index: dict) -> tuple[dict[str, list[tuple[str, int]]], tuple[int, int], list, list]:
    """(split → [(shard file, row)], image shape, shard pixel sizes, per-sample pixel sizes), checking every
    shard against the index."""
    where: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    shape = None
    sampling, per_sample = [], []
    expected_px = index.get("config", {}).get("output_px")
    for entry in index["shards"]:
        path = folder / entry["file"]
        with shards.Shard(path) as sh:
            try:
                n, h, w = sh.file["cbed"].shape
                splits = sh.meta("split")
                for name in shards.IMAGES:
                    if sh.file[name].shape != (n, h, w):
                        raise FourdError(f"{path}: dataset {name!r} has shape {sh.file[name].shape}, "
                                         f"expected ({n}, {h}, {w}) like cbed")
                dk = np.broadcast_to(np.asarray(sh.file.attrs.get("k_sampling_invA", np.nan), dtype=float), (2,))
                sampling.append(dk)
                if "meta/k_sampling_invA" in sh.file:  # per-sample pixel sizes give the range
                    per_sample.append(np.asarray(sh.file["meta/k_sampling_invA"][()], dtype=float).reshape(-1))
            except KeyError as exc:
                raise FourdError(f"{path}: not a fourdcrystal shard (missing {exc})") from None
        if n != entry.get("samples"):
            raise FourdError(f"{path} holds {n} samples but {folder / shards.INDEX} lists {entry.get('samples')}; "
                             f"the index does not match its shards (rerun fourdcrystal simulate)")
        if expected_px is not None and (h, w) != (expected_px, expected_px):
            raise FourdError(f"{path} has {h}×{w} patterns but the dataset index says output_px = {expected_px}")
        if shape is not None and (h, w) != shape:
            raise FourdError(f"{path} has {h}×{w} patterns, other shards of the dataset have {shape[0]}×{shape[1]}")
        shape = (h, w)
        for row, s in enumerate(splits):
            if s not in where:
                raise FourdError(f"{path}: sample {row} has split {s!r}, expected one of {', '.join(SPLITS)}")
            where[s].append((entry["file"], row))
    if shape is None:
        raise FourdError(f"{folder / shards.INDEX} lists no shards")
    return where, shape, sampling, per_sample


def open_dataset(folder: str | Path) -> tuple[dict, dict[str, list[tuple[str, int]]], DatasetInfo]:
    """Read and check a dataset folder: (index, split → sample locations, info)."""
    folder = Path(folder)
    index = shards.read_index(folder)
    where, shape, sampling, per_sample = _locations(folder, index)
    shards.check_finite(folder, index)
    extent = np.concatenate(per_sample) if per_sample else np.asarray(sampling, dtype=float)
    cfg = index.get("config", {})
    energies = [float(x) for x in choices(cfg.get("energy_eV", np.nan))]
    semiangles = [float(x) for x in choices(cfg.get("semiangle_mrad", np.nan))]
    info = DatasetInfo(
        folder=str(folder), index_sha256=shards.file_sha256(folder / shards.INDEX), shape=shape,
        k_sampling_invA=tuple(float(x) for x in np.nanmedian(np.array(sampling), axis=0)),
        k_sampling_range_invA=(float(np.nanmin(extent)), float(np.nanmax(extent))),
        energy_eV=energies[0], semiangle_mrad=semiangles[0], split_counts={s: len(v) for s, v in where.items()},
        energy_range_eV=(min(energies), max(energies)), semiangle_range_mrad=(min(semiangles), max(semiangles)))
    return index, where, info


def zero_beam(vg: np.ndarray) -> float:
    """V_g at q = 0 (pixel (H//2, W//2)): the normaliser of the relative vg target."""
    h, w = vg.shape
    return float(vg[h // 2, w // 2])


class ShardDataset(Dataset):
    """Samples of one split: dicts of float32 tensors ``cbed, probe, vg, qz`` (1, H, W) and ``index``.

    ``vg`` and ``qz`` are the normalised targets (see the module docstring). With ``augment``,
    sample i in epoch e is augmented with a generator seeded by (seed, e, i), so the data do not
    depend on the number of loader workers or processes.
    """

    def __init__(self, folder: str | Path, locations: list[tuple[str, int]], qz_scale_invA: float,
                 augment: AugmentConfig | None = None, seed: int = 0, crop_px: int | None = None,
                 target: str = "label", target_sigma_px: float = 0.75):
        self.folder = Path(folder)
        self.locations = list(locations)
        self.qz_scale_invA = float(qz_scale_invA)
        self.augment = augment
        self.seed = seed
        self.crop_px = crop_px
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.target, self.target_sigma_px = target, float(target_sigma_px)
        self._pid = None
        self._open: dict[str, shards.Shard] = {}

    def __len__(self) -> int:
        return len(self.locations)

    def _shard(self, name: str) -> shards.Shard:
        if self._pid != os.getpid():  # a new worker process: never reuse a parent's h5py handle
            self._open, self._pid = {}, os.getpid()
        if name not in self._open:
            self._open[name] = shards.Shard(self.folder / name)
        return self._open[name]

    def raw(self, i: int) -> dict[str, np.ndarray]:
        """The sample's images; with a truth target, ``vg`` is that target (already relative: zero beam 1)."""
        name, row = self.locations[i]
        sh = self._shard(name)
        out = {k: np.asarray(v, dtype=np.float32) for k, v in sh.images(row).items()}
        if self.target != "label":
            from ..simulation.truth import target_map

            out["vg"] = target_map(sh.reflections(row), out["vg"].shape, sh.file["meta/k_sampling_invA"][row],
                                   self.target_sigma_px, TARGETS[self.target])
        return out

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, i = key if isinstance(key, tuple) else (0, key)  # (epoch, i) from the training sampler
        sample = self.raw(i)
        vg0 = max(zero_beam(sample["vg"]), 1e-12)
        if self.augment is not None:
            sample = augment_sample(sample, self.augment, np.random.default_rng([self.seed, epoch, i]))
        out = {k: torch.from_numpy(np.ascontiguousarray(sample[k], dtype=np.float32))[None] for k in ("cbed", "probe")}
        out["vg"] = torch.from_numpy(np.ascontiguousarray(sample["vg"] / vg0, dtype=np.float32))[None]
        out["qz"] = torch.from_numpy(np.ascontiguousarray(sample["qz"] / self.qz_scale_invA, dtype=np.float32))[None]
        out["index"] = torch.tensor(i)
        if self.crop_px:
            out = self._crop(out, np.random.default_rng([self.seed, epoch, i, 1]))
        return out

    def _crop(self, out: dict, rng: np.random.Generator) -> dict:
        """A random crop_px² window of pattern and targets (the network is convolutional, and its probe
        correlation works on any window), the probe cut to the same size about its centre, and where the zero
        beam fell (``zero_px``; −1 outside), which the losses leave out as they do the centre of a whole pattern."""
        c = self.crop_px
        h, w = out["cbed"].shape[-2:]
        i0, j0 = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        for k in ("cbed", "vg", "qz"):
            out[k] = out[k][..., i0:i0 + c, j0:j0 + c].contiguous()
        pi, pj = h // 2 - c // 2, w // 2 - c // 2
        out["probe"] = out["probe"][..., pi:pi + c, pj:pj + c].contiguous()
        zi, zj = h // 2 - i0, w // 2 - j0
        inside = 0 <= zi < c and 0 <= zj < c
        out["zero_px"] = torch.tensor([zi, zj] if inside else [-1, -1], dtype=torch.long)
        return out


def qz_scale(folder: str | Path, locations: list[tuple[str, int]], max_samples: int = 64, seed: int = 0) -> float:
    """V_g-weighted r.m.s. q_z (Å⁻¹) of up to ``max_samples`` samples, drawn with ``seed``."""
    ds = ShardDataset(folder, locations, 1.0)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(ds), size=min(max_samples, len(ds)), replace=False) if len(ds) else []
    num = den = 0.0
    for i in sorted(pick):
        s = ds.raw(int(i))
        w = np.clip(s["vg"], 0, None).astype(np.float64)
        h, wd = w.shape
        w[h // 2, wd // 2] = 0.0  # the zero beam's q_z is 0 by construction
        num += float((w * s["qz"].astype(np.float64) ** 2).sum())
        den += float(w.sum())
    value = np.sqrt(num / den) if den > 0 else 0.0
    return float(value) if value > 0 else 0.01
