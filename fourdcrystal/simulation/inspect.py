"""`fourdcrystal inspect`: what is in a dataset, as a table and a PNG montage."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..config import choices
from . import shards


def all_meta(folder: Path, index: dict, names: tuple[str, ...]) -> dict[str, list]:
    """The ``meta/`` columns ``names`` of every shard in index order, as lists."""
    out: dict[str, list] = {n: [] for n in names}
    for entry in index["shards"]:
        with shards.Shard(folder / entry["file"]) as sh:
            for n in names:
                out[n].extend(sh.meta(n).tolist())
    return out


def dataset_summary(folder: str | Path) -> str:
    """Counts per split, prototype and thickness, and the calibration range (after checking every
    image is finite: inspect is where a damaged dataset should show)."""
    folder = Path(folder)
    index = shards.read_index(folder)
    shards.check_finite(folder, index)
    meta = all_meta(folder, index, ("split", "prototype", "thickness_nominal_A", "k_sampling_invA", "crystal_id"))
    cfg = index["config"]
    lines = [f"{folder}: {index['samples']} samples in {len(index['shards'])} shards, "
             f"{cfg['output_px']}×{cfg['output_px']} px, "
             f"{'/'.join(f'{e / 1e3:g}' for e in choices(cfg['energy_eV']))} kV, "
             f"{'/'.join(f'{a:g}' for a in choices(cfg['semiangle_mrad']))} mrad"]
    splits = Counter(meta["split"])
    crystals = {s: len({c for c, sp in zip(meta["crystal_id"], meta["split"]) if sp == s}) for s in splits}
    lines.append("split      samples  crystals")
    for s in ("train", "val", "test"):
        lines.append(f"{s:<10} {splits.get(s, 0):>7}  {crystals.get(s, 0):>8}")
    lines.append("prototype                          samples")
    for p, n in sorted(Counter(meta["prototype"]).items(), key=lambda x: (-x[1], x[0])):
        lines.append(f"{p:<34} {n:>7}")
    lines.append("thickness (Å)  samples")
    for t, n in sorted(Counter(float(t) for t in meta["thickness_nominal_A"]).items()):
        lines.append(f"{t:>13g}  {n:>7}")
    k = np.asarray(meta["k_sampling_invA"], dtype=float)
    lines.append(f"pixel size: {k.min():.5f}–{k.max():.5f} Å⁻¹ (median {np.median(k):.5f})")
    return "\n".join(lines)


def dataset_montage(folder: str | Path, path: str | Path, count: int = 4, seed: int = 0) -> Path:
    """PNG of cbed / probe / vg / qz for ``count`` samples spread over the dataset."""
    from ..plots import sample_montage

    folder = Path(folder)
    index = shards.read_index(folder)
    flat = [(e["file"], i) for e in index["shards"] for i in range(e["samples"])]
    pick = sorted(np.random.default_rng(seed).choice(len(flat), size=min(count, len(flat)), replace=False))
    samples, titles, ks = [], [], []
    for j in pick:
        f, i = flat[j]
        with shards.Shard(folder / f) as sh:
            samples.append(sh.images(i))
            sid = sh.meta("sample_id")[i]
            t = sh.meta("thickness_A")[i]
            za = sh.meta("zone_axis")[i]
            tilt = sh.meta("tilt_mrad")[i]
            titles.append(f"{sid}: {sh.meta('formula')[i]} [{' '.join(map(str, za))}], t = {t:.0f} Å, "
                          f"tilt ({tilt[0]:.1f}, {tilt[1]:.1f}) mrad")
            ks.append(sh.meta("k_sampling_invA")[i])
    return sample_montage(samples, titles, ks, path)
