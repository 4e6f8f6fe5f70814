"""Typed stage configs from YAML, with command-line overrides and one-line errors.

A config file holds one section per stage (``select:``, later ``supercell:``, ...). Each
section is checked against a schema: unknown keys and bad values are rejected with one line
naming the key, the value and what is allowed. Defaults come from the schema, then the file,
then command-line options (which win).
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import FourdError
from .model.architecture import FCUNetConfig


@dataclass(frozen=True)
class Field:
    """One config key: its default, a parser that normalises or rejects a value, and help."""

    default: Any
    parse: Callable[[Any], Any]  # raises ValueError("expected ...") on a bad value
    help: str = ""


# --- value parsers ---------------------------------------------------------------------
# Each returns the normalised value or raises ValueError whose text says what was expected.


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


MAX_SEED = 2**32 - 1  # numpy's and torch's seeds both take it
MAX_DOSE_E = 1e12  # electrons per pattern: far above any detector, and Poisson sampling stays exact


# Stated ranges of the physical and computational numbers, checked before any work: wide enough for every
# microscope and detector, narrow enough that nothing overflows or allocates without end later.
ENERGY_RANGE_EV = (1e4, 3e6)  # beam energy: 10 kV to 3 MV
SEMIANGLE_RANGE_MRAD = (0.0, 100.0)  # probe convergence semi-angle (lower end open)
K_PIXEL_RANGE_INVA = (1e-5, 1.0)  # detector pixel in reciprocal space
CAMERA_LENGTH_RANGE_MM = (0.01, 1e5)
DETECTOR_PIXEL_RANGE_UM = (0.1, 1e4)
OUTPUT_PX_RANGE = (8, 4096)  # simulated pattern side
SLICE_THICKNESS_RANGE_A = (0.05, 100.0)
DEFOCUS_RANGE_A = (-1e6, 1e6)  # 100 µm
CS_RANGE_A = (-1e8, 1e8)  # 10 mm
THICKNESS_RANGE_A = (0.0, 1e5)  # 10 µm (lower end open)
LATERAL_SIZE_RANGE_A = (1.0, 5000.0)
BATCH_RANGE = (1, 4096)

DEVICE_PATTERN = r"auto|cpu|cuda(?::(\d+))?"  # group 1: the CUDA device's index


def Device() -> Callable:
    """auto, cpu, cuda or cuda:N (whether that device is there is checked when it is used)."""

    def parse(v: Any) -> str:
        if not isinstance(v, str) or not re.fullmatch(DEVICE_PATTERN, v):
            raise ValueError("expected auto, cpu, cuda or cuda:N")
        return v

    return parse


def Int(lo: int | None = None, hi: int | None = None, nullable: bool = False) -> Callable:
    def parse(v: Any) -> int | None:
        if v is None and nullable:
            return None
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            v = int(v)
        if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError(_range_text("an integer", lo, hi, nullable))
        return int(v)

    return parse


def Float(lo: float | None = None, hi: float | None = None, nullable: bool = False,
          lo_open: bool = False) -> Callable:
    def parse(v: Any) -> float | None:
        if v is None and nullable:
            return None
        try:
            if isinstance(v, bool):
                raise TypeError
            x = float(v)
        except (TypeError, ValueError):
            raise ValueError(_range_text("a number", lo, hi, nullable, lo_open)) from None
        if not math.isfinite(x) or (lo is not None and (x < lo or (lo_open and x == lo))) or (
            hi is not None and x > hi
        ):
            raise ValueError(_range_text("a number", lo, hi, nullable, lo_open))
        return x

    return parse


def checked(option: str, value: Any, parse: Callable, unit: str = "") -> Any:
    """``parse(value)`` (a validator above: ``Float(lo, hi)``, ``Int(lo, hi)``), its ValueError as one line naming
    ``option``: the same ranges and wording for numbers that do not come through a config schema."""
    try:
        return parse(value)
    except ValueError as exc:
        raise FourdError(f"{option} {str(value)[:40]}: {exc}{' ' + unit if unit else ''}") from None


def Bool(nullable: bool = False) -> Callable:
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}

    def parse(v: Any) -> bool | None:
        if v is None and nullable:
            return None
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in words:
            return words[v.lower()]
        raise ValueError("expected true or false" + (" or null" if nullable else ""))

    return parse


def Choice(*choices: str) -> Callable:
    def parse(v: Any) -> str:
        if v not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return v

    parse.choices = choices  # the settings classes type it Literal[choices]
    return parse


def Str(nullable: bool = False) -> Callable:
    def parse(v: Any) -> str | None:
        if v is None and nullable:
            return None
        if not isinstance(v, str) or not v:
            raise ValueError("expected a non-empty string" + (" or null" if nullable else ""))
        return v

    return parse


def split_items(text: str) -> list[str]:
    """A comma-separated string's items, stripped; ``""`` is no items. An empty item (``1,,2``, a trailing comma)
    is a typo, not nothing: refused rather than dropped.

    >>> split_items("100, 200")
    ['100', '200']
    """
    if not text.strip():
        return []
    items = [s.strip() for s in text.split(",")]
    if not all(items):
        raise ValueError(f"{text!r} has an empty item between commas")
    return items


def List(item: Callable, min_len: int = 0, unique: bool = True) -> Callable:
    """A list of items; a comma-separated string is accepted too (handy on the command line)."""

    def parse(v: Any) -> list:
        if v is None:
            v = []
        if isinstance(v, str):
            v = split_items(v)
        if not isinstance(v, (list, tuple)):
            raise ValueError("expected a list")
        out = []
        for x in v:
            try:
                y = item(x)
            except ValueError as exc:
                raise ValueError(f"list item {x!r}: {exc}") from None
            if unique and y in out:
                raise ValueError(f"list item {x!r} is repeated")
            out.append(y)
        if len(out) < min_len:
            raise ValueError(f"expected a list of at least {min_len} item(s)")
        return out

    return parse


def IntRange(lo: int = 0, nullable: bool = True) -> Callable:
    """A ``[min, max]`` pair of integers (either may be null for open-ended)."""

    def parse(v: Any) -> list | None:
        if v is None and nullable:
            return None
        if isinstance(v, str):
            v = [s.strip() for s in v.replace(":", ",").split(",")]
            v = [None if s in ("", "null", "none") else s for s in v]
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise ValueError(f"expected [min, max] integers >= {lo}")
        pair = [Int(lo, nullable=True)(x) for x in v]
        if pair[0] is not None and pair[1] is not None and pair[0] > pair[1]:
            raise ValueError("expected min <= max")
        return pair

    return parse


def FloatChoices(lo: float | None = None, lo_open: bool = False, hi: float | None = None) -> Callable:
    """One number, or a list of numbers to draw from (a one-item list is that number)."""

    def parse(v: Any) -> float | list[float]:
        if isinstance(v, str) and "," in v:
            v = split_items(v)
        if isinstance(v, (list, tuple)):
            out = List(Float(lo, hi, lo_open=lo_open), min_len=1)(list(v))
            return out[0] if len(out) == 1 else sorted(out)
        try:
            return Float(lo, hi, lo_open=lo_open)(v)
        except ValueError as exc:
            raise ValueError(f"{exc}, or a list of them") from None

    return parse


def choices(v: float | list[float]) -> list[float]:
    """The values of a FloatChoices field as a list."""
    return list(v) if isinstance(v, (list, tuple)) else [v]


def FloatRange(lo: float = 0.0, hi: float | None = None, lo_open: bool = False) -> Callable:
    """A ``[min, max]`` pair of numbers, or one number for a fixed value."""

    def parse(v: Any) -> list:
        if isinstance(v, str):
            v = [s.strip() for s in v.replace(":", ",").split(",")]
        if not isinstance(v, (list, tuple)):
            v = [v, v]
        if len(v) == 1:
            v = [v[0], v[0]]
        if len(v) != 2:
            raise ValueError(f"expected [min, max] numbers {'>' if lo_open else '>='} {lo}")
        pair = [Float(lo, hi, lo_open=lo_open)(x) for x in v]
        if pair[0] > pair[1]:
            raise ValueError("expected min <= max")
        return pair

    return parse


def PerPrototype() -> Callable:
    def parse(v: Any) -> str | int:
        if v in ("sqrt", "all"):
            return v
        if isinstance(v, str) and v.isdigit():
            v = int(v)
        if _is_int(v) and v >= 1:
            return v
        raise ValueError("expected sqrt, all or a positive integer K")

    return parse


def StrainPct() -> Callable:
    """One number s ≥ 0 (each component drawn in [−s, s] %) or a fixed [ε_xx, ε_yy, ε_xy] in %."""

    def parse(v: Any) -> float | list[float]:
        if isinstance(v, (list, tuple)):
            if len(v) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise ValueError("expected a fixed tensor [exx, eyy, exy] in % or one range bound s >= 0")
            vals = [float(x) for x in v]
            if not all(math.isfinite(x) and abs(x) <= 20.0 for x in vals):
                raise ValueError("each strain component must be finite and within ±20 %")
            return vals
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) \
                or not 0.0 <= float(v) <= 20.0:
            raise ValueError("expected a number 0 <= s <= 20 (components drawn in [-s, s] %) "
                             "or a fixed tensor [exx, eyy, exy] in %")
        return float(v)

    return parse


def _range_text(what: str, lo, hi, nullable: bool, lo_open: bool = False) -> str:
    parts = [f"expected {what}"]
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'and ' if lo is not None else ''}<= {hi}")
    if nullable:
        parts.append("or null")
    return " ".join(parts)


# --- schemas ----------------------------------------------------------------------------

Schema = Mapping[str, "Field | Schema"]

SELECT_SCHEMA: Schema = {
    "sources": Field(["aflow"], List(Choice("aflow", "decorated", "mp", "files"), min_len=1),
                     "crystal sources, combinable: aflow (embedded), decorated (the AFLOW prototypes with other "
                     "elements, offline), mp (Materials Project), files"),
    "per_prototype": Field("sqrt", PerPrototype(),
                           "crystals drawn per prototype group of size N: sqrt -> round(sqrt(N)), all, or K"),
    "max_crystals": Field(None, Int(1, nullable=True), "cap on the catalogue size (null: no cap)"),
    "seed": Field(0, Int(0, MAX_SEED), "random seed of the draw"),
    "symprec": Field(0.1, Float(0.0, 1.0, lo_open=True), "spglib symmetry tolerance in Å"),
    "skip_bad": Field(False, Bool(), "skip unreadable structure files with a warning instead of failing"),
    "out": Field("catalogue", Str(), "output catalogue folder"),
    "mp": {
        "endpoint": Field(None, Str(nullable=True),
                          "REST endpoint (null: MP_API_ENDPOINT or https://api.materialsproject.org)"),
        "elements": Field([], List(Str()), "only materials containing all of these elements"),
        "exclude_elements": Field([], List(Str()), "drop materials containing any of these elements"),
        "num_sites": Field([1, 64], IntRange(1), "[min, max] sites in the MP (primitive) cell"),
        "energy_above_hull_max": Field(0.05, Float(0.0, nullable=True), "eV/atom above the convex hull"),
        "stable_only": Field(False, Bool(), "only materials on the convex hull"),
        "experimental_only": Field(False, Bool(), "only materials with an ICSD match (theoretical=False)"),
        "include_gnome": Field(False, Bool(), "include GNoME-predicted materials"),
        "chunk_size": Field(1000, Int(1, 1000), "documents per REST request"),
        "max_results": Field(None, Int(1, nullable=True), "stop after this many documents (null: all)"),
        "timeout_s": Field(30.0, Float(0.1, 600.0), "seconds to wait for the endpoint to connect and to answer each "
                                                    "request; an endpoint that does not is tried 3 times"),
    },
    "files": {
        "paths": Field([], List(Str()), "folders (or single files) of CIF / POSCAR structures"),
    },
    "decorated": {
        "max_per_prototype": Field(8, Int(1), "decorated variants kept per AFLOW prototype entry"),
        "radius_tol": Field(0.25, Float(0.0, 1.0), "substitutes of the same group: largest relative difference of "
                                                    "atomic radii"),
        "cross_tol": Field(0.10, Float(0.0, 1.0), "substitutes of another group (same oxidation state, metal for "
                                                   "metal): largest relative difference of atomic radii"),
    },
}

SUPERCELL_SCHEMA: Schema = {
    "zone_axes_per_crystal": Field(3, Int(1), "zone axes per crystal"),
    "max_index": Field(2, Int(1, 6), "largest |u|, |v|, |w| of a zone axis [uvw] (conventional cell)"),
    "drop_equivalent": Field(True, Bool(), "keep one zone axis of each symmetry-equivalent family"),
    "axis_choice": Field("shortest", Choice("shortest", "random"),
                         "shortest: lowest-index axes first (as in experiments); random: a seeded draw"),
    "specimens_per_axis": Field(1, Int(1), "specimens (phi/tilt/size draws) per zone axis"),
    "phi_deg": Field([0.0, 360.0], FloatRange(-360.0, 360.0), "in-plane rotation range in degrees"),
    "phi_tol_deg": Field(2.0, Float(0.0, 180.0), "how far the realised phi of a periodic cell may be from the draw"),
    "cell_fallback": Field("nearest", Choice("nearest", "cut", "error"),
                           "no periodic cell within phi_tol: nearest achievable phi, a cut box, or an error"),
    "tilt_mrad_max": Field(10.0, Float(0.0, 50.0), "largest out-of-plane tilt in mrad (small-angle limit 50)"),
    "tilt_mode": Field("beam", Choice("beam", "atoms"), "beam: tilt the probe (periodic slab); atoms: rotate"),
    "lateral_size_A": Field([40.0, 40.0], FloatRange(*LATERAL_SIZE_RANGE_A), "lateral box size range in Å"),
    "thicknesses_A": Field([50.0, 100.0, 200.0, 300.0, 500.0], List(Float(*THICKNESS_RANGE_A, lo_open=True), min_len=1),
                           "thickness series in Å (exit planes of one propagation)"),
    "strain_tol": Field(0.005, Float(0.0, 0.05), "largest strain accepted to make a cell orthogonal"),
    "strain_pct": Field(0.0, StrainPct(),
                        "applied homogeneous in-plane strain in %, specimen frame: s draws each of exx, eyy, exy "
                        "from [-s, s] per specimen; [exx, eyy, exy] is fixed; 0 = none"),
    "strain_shear": Field(True, Bool(), "draw exy too (a sheared cell is simulated as a cut box, not periodic)"),
    "skip_bad": Field(False, Bool(), "skip crystals/axes that cannot be built, with a warning"),
    "seed": Field(0, Int(0, MAX_SEED), "random seed"),
    "out": Field("specimens", Str(), "output specimens folder"),
}

SIMULATE_SCHEMA: Schema = {
    "energy_eV": Field(200e3, FloatChoices(ENERGY_RANGE_EV[0], hi=ENERGY_RANGE_EV[1]),
                       "beam energy in eV (200e3 = 200 kV); a list: one drawn per specimen"),
    "semiangle_mrad": Field(2.0, FloatChoices(SEMIANGLE_RANGE_MRAD[0], lo_open=True, hi=SEMIANGLE_RANGE_MRAD[1]),
                            "probe convergence semi-angle in mrad; a list: one drawn per specimen"),
    "defocus_A": Field(0.0, Float(*DEFOCUS_RANGE_A), "probe defocus in Å (abTEM convention: positive = underfocus)"),
    "cs_A": Field(0.0, Float(*CS_RANGE_A), "spherical aberration Cs in Å (1 mm = 1e7 Å)"),
    "output_px": Field(256, Int(*OUTPUT_PX_RANGE), "pattern size H = W in pixels (the grid is 3/2 of it, FFT-friendly)"),
    "slice_thickness_A": Field(2.0, Float(*SLICE_THICKNESS_RANGE_A),
                               "target slice thickness in Å (a crystal period is cut into equal slices)"),
    "parametrization": Field("lobato", Choice("lobato", "kirkland"), "atomic potential parametrisation"),
    "probe_position": Field("center", Choice("center", "random"),
                            "center of the box, or uniform random (central half of a cut box)"),
    "positions_per_specimen": Field(1, Int(1, 100000), "probe positions per specimen (propagated as one batch)"),
    "frozen_phonons": Field(0, Int(0, 10000), "frozen-phonon configurations averaged per pattern (0 = static)"),
    "phonon_sigma_A": Field(0.08, Float(0.0, 1.0), "r.m.s. thermal displacement per axis in Å"),
    "phonon_fraction": Field(1.0, Float(0.0, 1.0),
                             "fraction of specimens (a seeded draw) simulated with frozen phonons; the rest static"),
    "specimens_per_shard": Field(8, Int(1), "specimens per HDF5 shard (one task)"),
    "split_by": Field("crystal", Choice("crystal", "prototype"),
                      "crystal: no crystal in two splits; prototype: no prototype in two splits (test prototypes "
                      "unseen in training: the stricter test when a prototype has several crystals)"),
    "val_fraction": Field(0.1, Float(0.0, 0.5), "fraction of crystals in the validation split"),
    "test_fraction": Field(0.1, Float(0.0, 0.5), "fraction of crystals in the test split"),
    "limit": Field(None, Int(1, nullable=True), "simulate only the first N specimens of the manifest"),
    "fft_planning": Field("patient", Choice("estimate", "measure", "patient"),
                          "FFTW planning: measure/patient are faster; plans are shared by all workers"),
    "workers": Field(1, Int(1, 1024), "local worker processes (one FFT thread each)"),
    "seed": Field(0, Int(0, MAX_SEED), "random seed (probe positions, phonons, splits)"),
    "out": Field("dataset", Str(), "output dataset folder"),
}



def DoseRange() -> Callable:
    """``[min, max]`` electrons per pattern (> 0, ≤ MAX_DOSE_E), or null for no shot noise."""

    def parse(v: Any) -> list | None:
        if v is None or (isinstance(v, str) and v.lower() in ("null", "none", "off")):
            return None
        try:
            out = FloatRange(0.0, lo_open=True)(v)
        except ValueError:
            out = None
        if out is None or max(out) > MAX_DOSE_E:
            raise ValueError(f"expected [min, max] electrons per pattern in (0, {MAX_DOSE_E:g}], or null for no "
                             f"shot noise")
        return out

    return parse


_NET = FCUNetConfig()  # the network's defaults live with the network (model/architecture.py)

TRAIN_SCHEMA: Schema = {
    "model": {
        "domain": Field(_NET.domain, Choice("pattern", "spectral"),
                        "pattern: real U-Net on the probe cross-correlation map and the pattern (fast to learn); "
                        "spectral: crystal4D's complex U-Net on the Fourier-space cross-correlation"),
        "width": Field(_NET.width, Int(1, 512), "channels at the first U-Net level, doubled per level (complex for spectral)"),
        "depth": Field(_NET.depth, Int(1, 8), "down-samplings; H and W must be divisible by 2^depth"),
        "dropout": Field(_NET.dropout, Float(0.0, 0.9), "dropout after the first conv of each block (also MC dropout)"),
        "decoders": Field(_NET.decoders, Int(1, 2), "1: one decoder with vg and qz outputs; 2: one decoder per head"),
        "real_width": Field(_NET.real_width, Int(1), "spectral only: channels of the real-space block after the inverse FFT"),
        "coords": Field(_NET.coords, Bool(), "pattern only: two more input channels, each pixel's offset from q = 0 "
                                       "(pixels / 64), so the network can give position-dependent outputs such as "
                                       "q_z = θ·g (a convolution alone cannot tell where q = 0 is)"),
    },
    "epochs": Field(30, Int(1, 100000), "training epochs (passes over the train split)"),
    "crop_px": Field(None, Int(16, nullable=True),
                     "train on a random crop_px² window of each pattern (a multiple of 2^depth; the network runs on "
                     "whole patterns at validation and prediction); null: whole patterns"),
    "batch_size": Field(8, Int(*BATCH_RANGE), "patterns per optimiser step and process"),
    "lr": Field(1e-3, Float(0.0, lo_open=True), "peak learning rate (AdamW)"),
    "weight_decay": Field(1e-4, Float(0.0), "AdamW weight decay"),
    "schedule": Field("cosine", Choice("cosine", "noam", "constant"),
                      "learning-rate schedule after the linear warm-up: cosine to 0, noam (1/sqrt(step)), constant"),
    "warmup_epochs": Field(1.0, Float(0.0), "linear warm-up length in epochs (fractions allowed)"),
    "grad_clip": Field(1.0, Float(0.0), "clip the gradient norm to this (0 = off)"),
    "patience": Field(10, Int(0), "stop after this many epochs without a better validation score (0 = never)"),
    "select_on": Field("loss", Choice("loss", "vg_nmse"),
                       "the validation score that picks the best epoch (and early stopping): loss = the weighted "
                       "vg + q_z loss, vg_nmse = the vg error alone (what peak finding reads)"),
    "val_augment": Field(False, Bool(), "validate under the training's augmentation (shot noise, background, "
                                        "distortion), one fixed draw per pattern, so that the best epoch is the "
                                        "best under noise; false: the clean simulation"),
    "loss_weighting": Field("uncertainty", Choice("uncertainty", "fixed"),
                            "uncertainty: learned task weights (Kendall et al.); fixed: vg_weight, qz_weight"),
    "target": Field("label", Choice("label", "truth_vg", "truth_presence"),
                    "what the vg output learns: label = the V_g label map (|FFT| of the windowed potential); "
                    "truth_vg / truth_presence = Gaussians at the exact positions of the reflections the pattern "
                    "shows (the shards' physical truth), of height |V_g|/|V_0| or 1"),
    "target_sigma_px": Field(0.75, Float(0.1), "truth targets: the Gaussians' width, pixels"),
    "vg_loss": Field("nmse", Choice("nmse", "mse", "asinh"),
                     "vg error: nmse = squared error / squared label (1 for an all-zero prediction; balanced "
                     "against q_z), mse = plain mean squared error, asinh = nmse of asinh(V_g / vg_asinh_scale) "
                     "(weak reflections count nearly as much as strong ones)"),
    "vg_asinh_scale": Field(0.02, Float(1e-6), "vg_loss asinh: V_g (fraction of the zero beam) below which the "
                                               "loss is linear, above which logarithmic"),
    "vg_weight": Field(1.0, Float(0.0), "weight of the vg error"),
    "qz_weight": Field(1.0, Float(0.0), "weight of the V_g-weighted qz MSE"),
    "qz_min_vg": Field(0.0, Float(0.0, 1.0), "qz loss: only pixels whose V_g (relative to the zero beam) reaches "
                                            "this count (0: every pixel, weighted by V_g)"),
    "vg_peak_weight": Field(0.0, Float(0.0),
                            "vg loss pixel weights 1 + this x max(V_g, 0): stresses the reflections (0 = plain MSE)"),
    "amp": Field(True, Bool(), "mixed precision on CUDA (bfloat16 where supported); ignored on CPU"),
    "compile": Field(False, Bool(), "torch.compile the network (pays on long GPU runs)"),
    "loader_workers": Field(2, Int(0), "DataLoader worker processes per training process"),
    "device": Field("auto", Device(), "auto (CUDA if present), cpu, cuda, cuda:N"),
    "augment": {
        "enabled": Field(True, Bool(), "augment training samples on the fly (never validation samples)"),
        "probability": Field(1.0, Float(0.0, 1.0), "chance that a training sample is augmented"),
        "dose_e": Field([1e4, 1e6], DoseRange(), "electrons per pattern for Poisson noise, log-uniform; null: none"),
        "background": Field([0.0, 0.3], FloatRange(0.0, 1.0), "inelastic background fraction of the intensity"),
        "background_width_px": Field([8.0, 32.0], FloatRange(0.0, lo_open=True),
                                     "half width of the Lorentzian background, pixels"),
        "shift_px": Field(1.0, Float(0.0), "largest sub-pixel descan shift per axis, pixels"),
        "ellipticity": Field([0.0, 0.15], FloatRange(0.0, 1.0), "elliptic distortion a/b − 1, random axis"),
        "bad_pixel_fraction": Field(2e-4, Float(0.0, 0.1), "fraction of hot + dead pixels"),
    },
    "seed": Field(0, Int(0, MAX_SEED), "random seed (initial weights, sample order, augmentation, dropout)"),
    "out": Field("model", Str(), "output folder: model.pt + model.json, checkpoint, metrics"),
}

def Fraction(nullable: bool = False) -> Callable:
    """A fraction of the zero beam's height, in [0, 1)."""

    def parse(v: Any) -> float | None:
        if v is None and nullable:
            return None
        try:
            x = math.nan if isinstance(v, bool) else float(v)
        except (TypeError, ValueError):
            x = math.nan
        if not 0.0 <= x < 1.0:  # NaN fails too
            raise ValueError("expected a fraction of the zero beam in [0, 1)" + (" or null" if nullable else ""))
        return x

    return parse


def Doses() -> Callable:
    """Electrons per pattern, a list (or ``clean,1e5,1e4``); ``clean`` (null) is the noise-free pattern.

    Strings are accepted for numbers because YAML 1.1 reads ``1e5`` (no decimal point) as a string."""

    def parse(v: Any) -> list:
        if isinstance(v, str):
            v = split_items(v)
        if not isinstance(v, (list, tuple)) or not v:
            raise ValueError("expected a list of doses (electrons per pattern > 0) or clean")
        out: list = []
        for d in v:
            if d is None or (isinstance(d, str) and d.lower() in ("clean", "none", "inf")):
                out.append(None)
                continue
            try:
                x = Float(0.0, MAX_DOSE_E, lo_open=True)(d)
            except ValueError:
                raise ValueError(f"{d!r} is not a dose; expected electrons per pattern in (0, {MAX_DOSE_E:g}] or "
                                 f"clean") from None
            out.append(x)
        return out

    return parse


INSPECT_SCHEMA: Schema = {
    "samples": Field(4, Int(0, 1000), "samples in the PNG montage (0: no montage)"),
    "seed": Field(0, Int(0, MAX_SEED), "which samples the montage draws"),
}

_SPLIT_HELP = "which split of the data set (test: crystals never seen in training; val: for tuning)"
EVALUATE_SCHEMA: Schema = {
    "split": Field("test", Choice("test", "val", "train"), _SPLIT_HELP),
    "doses": Field([None, 1e5, 1e4, 1e3], Doses(), "electrons per pattern; clean = the noise-free simulation"),
    "match_radius_px": Field(2.0, Float(0.0, lo_open=True), "a peak within this many pixels of a reflection's exact position is found (at most half the spacing of the visible reflections)"),
    "label_min_relative": Field(0.05, Fraction(), "the secondary V_g label score: maxima of the label V_g >= this fraction of the zero beam's"),
    "min_relative": Field(None, Fraction(nullable=True),
                          "model peaks: V_g >= this fraction of the reference the card's tuned threshold has "
                          "(the zero beam's V_g or the strongest maximum; null: the card's tuned threshold)"),
    "limit": Field(None, Int(1, nullable=True), "only the first N patterns of the split (null: all)"),
    "batch_size": Field(16, Int(*BATCH_RANGE), "patterns per model batch"),
    "device": Field("auto", Device(), "auto, cpu, cuda or cuda:N"),
    "tta": Field("none", Choice("none", "flips", "d4"),
                 "test-time mirrors: average the network over the pattern's mirrors about the zero beam (flips: 4, "
                 "d4: 8 passes; that many times the network time)"),
    "precision": Field("auto", Choice("auto", "fp32", "bf16"),
                       "the network's arithmetic: fp32, bf16 (its convolutions in bfloat16: about twice as fast on a "
                       "CPU with AVX-512 BF16, the same F1 on the test split, docs/reference.md), or auto (bf16 where "
                       "the CPU or GPU does it in hardware and the network is at least 16 channels wide, else fp32)"),
    "seed": Field(0, Int(0, MAX_SEED), "seed of the shot noise"),
    "thick_from_A": Field(200.0, Float(0.0), "also report the patterns at least this thick (Å) together"),
}

TUNE_SCHEMA: Schema = {
    "split": Field("val", Choice("val", "train", "test"), _SPLIT_HELP),
    "doses": Field([None, 1e5, 1e4], Doses(), "electrons per pattern; the F1 averaged over them is maximised"),
    "match_radius_px": EVALUATE_SCHEMA["match_radius_px"],
    "limit": EVALUATE_SCHEMA["limit"],
    "device": EVALUATE_SCHEMA["device"],
}

PREDICT_SCHEMA: Schema = {
    "k_pixel_invA": Field(None, Float(*K_PIXEL_RANGE_INVA, nullable=True), "detector pixel size in Å⁻¹ (null: from the file or the camera length)"),
    "camera_length_mm": Field(None, Float(*CAMERA_LENGTH_RANGE_MM, nullable=True), "camera length in mm (with detector_pixel_um and energy_eV)"),
    "detector_pixel_um": Field(None, Float(*DETECTOR_PIXEL_RANGE_UM, nullable=True), "detector pixel pitch in µm"),
    "energy_eV": Field(None, Float(*ENERGY_RANGE_EV, nullable=True), "beam energy in eV (null: from the file)"),
    "semiangle_mrad": Field(None, Float(*SEMIANGLE_RANGE_MRAD, nullable=True, lo_open=True), "convergence semi-angle in mrad (null: from the file)"),
    "probe": Field(None, Str(nullable=True), "vacuum probe file: a 2D .npy or FILE.h5:/path"),
    "vacuum": Field(None, Str(nullable=True), "vacuum probe from a scan region R0:R1,C0:C1"),
    "mask": Field(None, Str(nullable=True), "detector mask file, nonzero = ignore"),
    "method": Field("auto", Choice("auto", "model", "baseline", "both"),
                    "whose vectors are the result: auto (the method the model card's test figures show best at the "
                    "scan's counts per pattern), model, baseline, or both (both run, auto's choice is the result)"),
    "baseline": Field(False, Bool(), "also run the classical detector"),
    "maps": Field(False, Bool(), "also store the predicted V_g and q_z maps (float16)"),
    "min_relative": EVALUATE_SCHEMA["min_relative"],
    "max_peaks": Field(None, Int(1, nullable=True), "peaks per pattern and method at most (null: the card's)"),
    "chunk": Field(256, Int(1, 1 << 20), "scan positions read and processed together"),
    "batch_size": Field(16, Int(*BATCH_RANGE), "patterns per network call"),
    "device": EVALUATE_SCHEMA["device"],
    "tta": EVALUATE_SCHEMA["tta"],
    "precision": EVALUATE_SCHEMA["precision"],
    "scheduler": Field(None, Str(nullable=True), "dask.distributed scheduler address tcp://HOST:PORT"),
    "idle": Field(30.0, Float(0.1, 86400.0), "--follow: stop when the file has not grown for this many seconds"),
    "refresh": Field(10.0, Float(0.5, 86400.0), "--follow: redraw the live picture and print the rates at most "
                                                 "every this many seconds"),
    "prepare_first": Field(None, Int(1, 1 << 40, nullable=True),
                           "the zero beam, dead pixels and counts per pattern from the first N scan positions (null: "
                           "from patterns spread over the scan; with --follow, the first chunk)"),
    "qz": Field(None, Bool(nullable=True), "write the model's q_z of each vector (null: when the model card's test "
                                           "evaluation shows q_z skill)"),
    "tilt": Field(None, Bool(nullable=True), "write each method's crystal tilt (θx, θy) per position and its "
                                             "standard error, mrad (needs the energy; null: the model's tilt "
                                             "alone, where its card shows its own (the learned read, its q_z, or "
                                             "q_z and the Laue fit combined) ahead of the Laue fit)"),
}

STRAIN_SCHEMA: Schema = {
    "method": Field("auto", Choice("auto", "model", "baseline"),
                    "which vectors of a predict result: auto = the method predict chose (the model where it chose none)"),
    "reference": Field("median", Str(), "median, a scan region R0:R1,C0:C1, or crystal"),
    "scan_step_nm": Field(None, Float(1e-6, 1e6, nullable=True, lo_open=True),
                          "scan step in nm (null: from the file's real-space calibration, else the maps are in "
                          "scan positions)"),
    "tolerance": Field(0.25, Float(0.0, 0.5, lo_open=True),
                       "index a vector within this fraction of |shortest g| of a lattice point"),
    "min_vectors": Field(5, Int(3), "positions with fewer indexed vectors are not fitted"),
    "min_indexed_fraction": Field(0.3, Float(0.0, 0.99),
                                  "positions with less of the vectors' weight on the fitted lattice are not fitted "
                                  "(several grains, rings: not one lattice)"),
    "weights": Field("auto", Choice("auto", "intensity", "squared", "quartic", "none", "scan"),
                     "least-squares weights of the vectors: intensity, its square, its fourth power, or equal; scan: "
                     "one weight per reflection, 1 / its scatter about its lattice point over the scan's positions, "
                     "after a first fit with quartic weights for model vectors (V_g), equal for correlation peaks; "
                     "auto: scan"),
    "correct": Field("reference", Choice("none", "reference"),
                     "reference: take each reflection's displacement from its lattice point, measured over the "
                     "reference positions, off that reflection at every position (only those reflections are fitted)"),
}

SCHEMAS: dict[str, Schema] = {"select": SELECT_SCHEMA, "supercell": SUPERCELL_SCHEMA, "simulate": SIMULATE_SCHEMA,
                              "train": TRAIN_SCHEMA, "inspect": INSPECT_SCHEMA, "tune": TUNE_SCHEMA,
                              "evaluate": EVALUATE_SCHEMA, "predict": PREDICT_SCHEMA, "strain": STRAIN_SCHEMA}


def schema_field(section: str, key: str) -> Field:
    """The field of a dotted key (``"model.width"``) of a stage's schema."""
    node: Any = SCHEMAS[section]
    for part in key.split("."):
        node = node[part]
    return node


def default(section: str, key: str) -> Any:
    """A key's schema default for a library dataclass's field (lists as tuples: dataclass defaults are
    immutable), so that the library and the command line share the one written default."""
    value = copy.deepcopy(schema_field(section, key).default)
    return tuple(value) if isinstance(value, list) else value


def show(value: Any) -> str:
    """A config value as the command line writes it: ``200000``, ``0,360``, ``clean,100000``, ``none``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join("clean" if v is None else show(v) for v in value)
    return str(value)


def defaults(schema: Schema) -> dict:
    """The schema's default values as a nested dict."""
    return {k: (defaults(f) if isinstance(f, Mapping) else copy.deepcopy(f.default)) for k, f in schema.items()}


def _validate(raw: Any, schema: Schema, prefix: str, source: str) -> dict:
    if not isinstance(raw, Mapping):
        raise FourdError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping of keys to values")
    out = defaults(schema)
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if key not in schema:
            allowed = ", ".join(sorted(schema))
            raise FourdError(f"{source}: unknown key {name!r}; allowed here: {allowed}")
        field = schema[key]
        if isinstance(field, Mapping):
            out[key] = _validate(value if value is not None else {}, field, f"{name}.", source)
            continue
        try:
            out[key] = field.parse(value)
        except ValueError as exc:
            raise FourdError(f"{source}: bad value for {name}: {value!r}; {exc}") from None
    return out


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(f"key {key!r} given twice (line {key_node.start_mark.line + 1}); "
                                    f"keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


CONFIG_NAMES = ("quickstart", "default", "release", "release2", "release2-finetune", "release2-finetune2", "release3",
                "release4", "release5")  # shipped in fourdcrystal/configs/


@functools.lru_cache(maxsize=1)
def _shipped_sections() -> dict[str, frozenset]:
    """Each shipped config's sections, read once: every stage's --config help asks at the CLI's start-up."""
    folder = Path(__file__).parent / "configs"
    return {n: frozenset(yaml.safe_load((folder / f"{n}.yaml").read_text(encoding="utf-8")) or {})
            for n in CONFIG_NAMES}


def shipped_configs(*sections: str) -> tuple[str, ...]:
    """The shipped configs that hold every one of ``sections`` (a stage offers only the configs that configure it:
    ``default`` holds every section, a training recipe such as ``release5`` only train, tune and evaluate)."""
    held = _shipped_sections()
    return tuple(n for n in CONFIG_NAMES if all(s in held[n] for s in sections))


def config_path(path: str | Path) -> Path:
    """``quickstart``, ``default`` or ``release`` name a config shipped inside the package (unless a file of
    that name exists here); anything else is a path."""
    p = Path(path)
    if str(path) in CONFIG_NAMES and not p.is_file():
        return Path(__file__).parent / "configs" / f"{path}.yaml"
    return p


def load_config(section: str, path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                names: Mapping[str, str] | None = None) -> dict:
    """Load one stage's config: schema defaults <- YAML file section <- overrides.

    ``overrides`` maps dotted keys (``"mp.elements"``) to values; ``None`` values mean
    "not given on the command line" and are ignored. ``names`` maps a key to the option that gave
    it (``"--match-radius"``), so that a bad value is reported under the name the user typed.
    """
    schema = SCHEMAS[section]
    data: dict = {}
    source = "config"
    if path is not None:
        path = config_path(path)
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise FourdError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise FourdError(f"{path}: not a UTF-8 text file (byte {exc.start}); expected a YAML config") from None
        try:
            doc = yaml.load(text, Loader=_UniqueKeyLoader) or {}
        except _DuplicateKey as exc:
            raise FourdError(f"{path}: {exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise FourdError(f"{path}: not valid YAML{where}") from None
        if not isinstance(doc, Mapping):
            raise FourdError(f"{path}: expected a mapping of stage sections ({', '.join(SCHEMAS)})")
        for key in doc:
            if key not in SCHEMAS:
                raise FourdError(f"{path}: unknown section {key!r}; allowed: {', '.join(sorted(SCHEMAS))}")
        data = copy.deepcopy(doc.get(section) or {})
    cfg = _validate(data, schema, "", source)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node_raw: dict = {}
        node = node_raw
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        # Validate the override alone (so the message names the option), then merge.
        try:
            checked = _validate(node_raw, schema, "", "command line")
        except FourdError as exc:
            if names and dotted in names:
                raise FourdError(str(exc).replace(f"bad value for {dotted}:",
                                                  f"bad value for {names[dotted]} ({dotted}):", 1)) from None
            raise
        target, src = cfg, checked
        for p in parents:
            target, src = target[p], src[p]
        target[leaf] = src[leaf]
    return cfg

