"""Decorated prototypes: more distinct crystals from the AFLOW prototype library, offline.

The rule (a decoration keeps the prototype: the same structure type, other elements on its sites):

* an element X may be replaced by an element Y that shares a common oxidation state with X
  (pymatgen's element data) and is either of X's family, the same group of the periodic table
  at most one period away (the lanthanides count as one group), with an atomic radius within
  ``radius_tol`` (25 %) of X's, or of another group but of the same kind (metal for metal,
  non-metal for non-metal) with a radius within ``cross_tol`` (10 %). Y is a stable element up to
  Bi (no Tc, Pm, noble gases, actinides);
* a decoration replaces every site of one species, or of several species at once; two species
  never become the same element and no species becomes another species of the prototype (either
  would change the prototype);
* the lattice is scaled by (Σ r_Y³ / Σ r_X³)^(1/3) over all sites: the volume the atoms take
  changes with their size; angles and fractional coordinates stay;
* per prototype every decoration is listed, put in a seeded random order (a stream of its own
  per prototype, so one prototype's variants do not depend on the others'), and the first
  ``max_per_prototype`` (8) are kept: from the 288 library entries about 1,800 variants.

The variants are plausible structures for training a detector of Bragg disks (the geometry and
scattering of a real structure type with real atoms), not claims about stable compounds.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable

import numpy as np
from pymatgen.core import Element, Structure

from .sources import RawEntry, load_aflow, safe_id

EXCLUDED = {"Tc", "Pm"}
MAX_Z = 83  # Bi: the heaviest element with a stable isotope


def _usable(el: Element) -> bool:
    return (el.Z <= MAX_Z and el.symbol not in EXCLUDED and not el.is_noble_gas and not el.is_actinoid
            and el.atomic_radius is not None and bool(el.common_oxidation_states))


_ELEMENTS = [el for el in Element if _usable(el)]


def substitutes(symbol: str, radius_tol: float = 0.25, cross_tol: float = 0.10) -> list[str]:
    """Elements that may take the place of ``symbol`` under the rule of this module, closest radius first.

    Parameters
    ----------
    symbol : an element symbol, e.g. ``"Si"``.
    radius_tol : largest relative difference of atomic radii within a family (same group).
    cross_tol : largest relative difference of atomic radii across groups.

    Returns
    -------
    Element symbols (``symbol`` itself not among them).

    >>> substitutes("Si"), substitutes("Na")
    (['Se', 'S', 'Ge'], ['Tl', 'Li', 'K'])
    """
    x = Element(symbol)
    if not _usable(x):
        return []
    rx = float(x.atomic_radius)
    out = []
    for y in _ELEMENTS:
        if y == x or not set(x.common_oxidation_states) & set(y.common_oxidation_states):
            continue
        family = (x.is_lanthanoid and y.is_lanthanoid) or (
            not x.is_lanthanoid and not y.is_lanthanoid and x.group == y.group and abs(x.row - y.row) <= 1)
        r = abs(float(y.atomic_radius) - rx) / rx
        if (family and r <= radius_tol) or (x.is_metal == y.is_metal and r <= cross_tol):
            out.append(y)
    return [y.symbol for y in sorted(out, key=lambda y: (abs(float(y.atomic_radius) - rx), y.Z))]


def decorations(structure: Structure, radius_tol: float = 0.25, cross_tol: float = 0.10) -> list[dict[str, str]]:
    """Every substitution map {X: Y} allowed for ``structure``'s species (not the identity), in a fixed order."""
    species = sorted({site.specie.symbol for site in structure})
    options = [[x, *substitutes(x, radius_tol, cross_tol)] for x in species]
    out = []
    for choice in itertools.product(*options):
        mapping = {x: y for x, y in zip(species, choice) if x != y}
        if not mapping or len(set(choice)) < len(choice):
            continue
        if any(y in species and y not in mapping for y in mapping.values()):
            continue  # X → another species of the prototype that stays: two species would merge
        out.append(mapping)
    return out


def decorate(structure: Structure, mapping: dict[str, str]) -> Structure:
    """``structure`` with every site of X replaced by ``mapping[X]``, the lattice scaled by the cube root of the
    atoms' volume ratio (Σ r³ over the sites, atomic radii).

    Parameters
    ----------
    structure : the prototype's structure (Å).
    mapping : element symbol → element symbol.

    Returns
    -------
    A new Structure; angles and fractional coordinates are those of ``structure``.
    """
    old = sum(float(Element(s.specie.symbol).atomic_radius) ** 3 for s in structure)
    new = sum(float(Element(mapping.get(s.specie.symbol, s.specie.symbol)).atomic_radius) ** 3 for s in structure)
    scale = (new / old) ** (1.0 / 3.0)
    out = structure.copy()
    out.replace_species({Element(x): Element(y) for x, y in mapping.items()})
    out.scale_lattice(structure.volume * scale**3)
    return out


def load_decorated(max_per_prototype: int = 8, radius_tol: float = 0.25, cross_tol: float = 0.10, seed: int = 0,
                   base: Iterable[RawEntry] | None = None) -> list[RawEntry]:
    """Decorated variants of the AFLOW prototypes (``base``: other entries to decorate).

    Parameters
    ----------
    max_per_prototype : variants kept per prototype entry.
    radius_tol, cross_tol : largest relative differences of atomic radii (see :func:`substitutes`).
    seed : seed of the order in which each prototype's decorations are taken.
    base : entries to decorate; default :func:`load_aflow`.

    Returns
    -------
    :class:`RawEntry` objects of source ``decorated``, id ``dec-<prototype entry>-<X>2<Y>...``, with
    ``extra['decorated_from']`` and ``extra['substitution']``.
    """
    out = []
    for entry in (base if base is not None else load_aflow()):
        maps = decorations(entry.structure, radius_tol, cross_tol)
        if not maps:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(entry.id.encode())])
        for k in rng.permutation(len(maps))[:max_per_prototype]:
            mapping = maps[int(k)]
            tag = "-".join(f"{x}2{y}" for x, y in sorted(mapping.items()))
            cid = f"dec-{entry.id.removeprefix('aflow-')}-{safe_id(tag)}"
            out.append(RawEntry(cid, "decorated", f"{entry.source_id} {tag}", decorate(entry.structure, mapping),
                                aflow_tag=entry.aflow_tag,
                                extra={"decorated_from": entry.id, "substitution": dict(sorted(mapping.items()))}))
    return out
