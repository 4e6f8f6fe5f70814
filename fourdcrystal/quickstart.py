"""`fourdcrystal quickstart`: every stage once, on one config, reusing the stages already finished.

select → supercell → simulate → train → evaluate → shipped → predict. ``train`` and ``evaluate``
make and score a small smoke model (a check that the pipeline runs end to end, not a usable
model); ``shipped`` scores the model shipped inside the package on the same test split, and
``predict`` runs it, with the classical baseline, on a demo 4D-STEM file that
:func:`demo_scan` assembles from the test split (crystals neither model saw), with Poisson
noise and the calibration stored in the file, as a detector would give it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import FourdError

STAGES = ("select", "supercell", "simulate", "train", "evaluate", "shipped", "predict")
DEMO_SCAN, DEMO_RESULT = "demo_scan.h5", "demo_scan-bragg.h5"  # beside the model folder
SHIPPED_EVALUATION = "shipped-evaluation"  # the shipped model's report on the quickstart test split


def _json(path: Path):
    """The parsed file, or None where it is missing, unreadable or not JSON (a damaged output is not finished)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def finished(stage: str, cfg: dict, root: Path) -> bool:
    """True when ``stage``'s output is complete (a later run then reuses it).

    Only an explicit mark of completion counts, never the mere existence of files: a catalogue, manifest or
    index that parses; a card whose weights' sha256 is the weights file's; an evaluation report (written last)
    with its plots; a predict result marked ``complete``.
    """
    if stage == "select":
        return isinstance((_json(Path(cfg["select"]["out"]) / "catalogue.json") or {}).get("crystals"), list)
    if stage == "supercell":
        return _json(Path(cfg["supercell"]["out"]) / "manifest.json") is not None
    if stage == "simulate":
        index = _json(Path(cfg["simulate"]["out"]) / "index.json")
        shards = index.get("shards") if isinstance(index, dict) else None
        return bool(shards) and all(isinstance(e, dict) and (Path(cfg["simulate"]["out"]) / str(e.get("file"))).is_file()
                                    for e in shards)
    if stage == "train":
        out = Path(cfg["train"]["out"])
        card = _json(out / "model.json")
        if not isinstance(card, dict) or not (out / "model.pt").is_file():
            return False
        from .simulation.shards import file_sha256

        return card.get("weights_sha256") == file_sha256(out / "model.pt")
    if stage in ("evaluate", "shipped"):
        folder = Path(cfg["train"]["out"]) / "evaluation" if stage == "evaluate" else root / SHIPPED_EVALUATION
        report = _json(folder / "report.json")
        if not isinstance(report, dict) or not all((folder / f).is_file() for f in ("metrics_vs_thickness.png",
                                                                                     "worst.png")):
            return False
        if stage == "evaluate":
            card = _json(Path(cfg["train"]["out"]) / "model.json") or {}
            return report.get("model_weights_sha256") == card.get("weights_sha256")
        from .model.card import read_card, resolve_weights

        return report.get("model_weights_sha256") == read_card(resolve_weights("release")).get("weights_sha256")
    if stage == "predict":
        try:
            import h5py

            with h5py.File(root / DEMO_RESULT, "r") as f:
                return bool(f.attrs.get("complete", False))
        except (OSError, ValueError):
            return False
    raise ValueError(stage)


def demo_scan(dataset: str | Path, out: str | Path, side: int = 8, dose_e: float = 1e5, seed: int = 0) -> Path:
    """A side×side scan from the test split's first specimen, at ``dose_e`` electrons per pattern (HDF5).

    Positions cycle through that specimen's patterns (probe positions and thicknesses), so the
    virtual bright field shows the thickness steps. The patterns are resampled onto square pixels of
    the simulation's mean pixel size (a rectangular cell samples its two axes differently). Attributes: ``k_pixel_invA``, ``energy_eV``,
    ``semiangle_mrad`` on the dataset ``/scan/data``.
    """
    import h5py

    from .atomic import atomic_file
    from .simulation import shards
    from .training.data import open_dataset

    _, where, _ = open_dataset(dataset)
    if not where["test"]:
        raise FourdError(f"{dataset}: the test split is empty; no crystals left for a demo scan")
    name = where["test"][0][0]
    with shards.Shard(Path(dataset) / name) as sh:
        specimen = sh.meta("specimen_id")
        rows = [r for f, r in where["test"] if f == name and specimen[r] == specimen[where["test"][0][1]]]
        dk = sh.meta("k_sampling_invA")[rows[0]]
        cbed = np.stack([sh.images(r)["cbed"] for r in rows]).astype(np.float64)
        energy, semiangle = float(sh.meta("energy_eV")[rows[0]]), float(sh.meta("semiangle_mrad")[rows[0]])
    # a detector's pixels are square; a simulated cell's need not be (its sides set the sampling): onto square
    # pixels of the mean size, the zero beam kept at the centre, before the counts are drawn
    dk = np.broadcast_to(np.asarray(dk, float), (2,))
    square = float(np.mean(dk))
    if not np.allclose(dk, square, rtol=1e-6):
        from .prediction.calibration import Resampler

        shape = cbed.shape[1:]
        resample = Resampler.build(shape, (square, square), shape, tuple(dk), (shape[0] // 2, shape[1] // 2))
        cbed = np.clip(resample(cbed).astype(np.float64), 0.0, None)
    rng = np.random.default_rng(seed)
    frames = np.empty((side * side, *cbed.shape[1:]), np.float32)
    for p in range(side * side):
        c = cbed[(p // 3) % len(cbed)]  # a few neighbouring positions share a pattern, like real pixels
        frames[p] = rng.poisson(c / c.sum() * dose_e)
    with atomic_file(out) as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset("scan/data", data=frames.reshape(side, side, *cbed.shape[1:]),
                              chunks=(1, side, *cbed.shape[1:]), compression="gzip", compression_opts=1)
        ds.attrs["k_pixel_invA"] = square
        ds.attrs["energy_eV"] = energy
        ds.attrs["semiangle_mrad"] = semiangle
        ds.attrs["source"] = f"{dataset}: test specimen {specimen[rows[0]]}, {dose_e:g} e/pattern"
    return Path(out)
