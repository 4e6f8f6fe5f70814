"""Structure-prototype labels: spglib-based AFLOW-style labels, mapped onto AFLOW's own tags.

Why spglib and not ``AflowPrototypeMatcher``: the matcher compares every structure against
all 288 library prototypes with ``StructureMatcher`` (~1 s per structure, deprecated), and it
only recognises those 288. The AFLOW-style label (anonymous formula, Pearson symbol, space
group, Wyckoff letters) from spglib takes a few milliseconds, is defined for *every* crystal,
and two structures share it exactly when they are isopointal with the same Wyckoff occupation
— which is the grouping the square-root sampling needs. pymatgen ships the canonicalisation
(``get_prototype_from_protostructure``) so equivalent Wyckoff settings give one label.

AFLOW's library tags order species differently (``AB11CD3_cP16_221_a_dg_b_c`` is canonically
``ABC3D11_cP16_221_a_b_c_dg``), so a canonical label that matches a library entry is reported
under that entry's AFLOW tag; the others keep their canonical label.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer


@dataclass(frozen=True)
class PrototypeInfo:
    prototype: str  # group key: the AFLOW tag where one matches, else the canonical label
    canonical: str  # spglib-based canonical AFLOW-style label
    aflow_tag: str | None
    space_group_number: int
    space_group_symbol: str
    pearson_symbol: str
    crystal_system: str
    conventional: Structure  # conventional standard cell (zone axes are given in it)


class LabelError(ValueError):
    """The structure cannot be labelled (disordered, or symmetry detection failed)."""


def canonical_label(structure: Structure, symprec: float = 0.1) -> str:
    """Canonical AFLOW-style prototype label, e.g. ``A_cF8_227_a`` for diamond Si."""
    from pymatgen.analysis.prototypes import (
        get_protostructure_label_from_spglib,
        get_prototype_from_protostructure,
    )

    if not structure.is_ordered:
        raise LabelError("structure has partial site occupancies (disordered); only ordered crystals can be simulated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = get_protostructure_label_from_spglib(structure, raise_errors=False, init_symprec=symprec)
    if ":" not in proto:  # the function returns an explanation instead of a label on failure
        raise LabelError(f"symmetry detection failed: {proto}")
    try:
        return get_prototype_from_protostructure(proto)
    except Exception as exc:  # pymatgen raises assorted errors for odd Wyckoff sets
        raise LabelError(f"cannot canonicalise prototype label {proto}: {exc}") from None


@functools.lru_cache(maxsize=None)
def aflow_tags_by_canonical(symprec: float = 0.1) -> dict[str, str]:
    """Map canonical label -> AFLOW library tag (alphabetically first where several share one)."""
    from pymatgen.analysis.prototypes import AFLOW_PROTOTYPE_LIBRARY

    out: dict[str, str] = {}
    for entry in AFLOW_PROTOTYPE_LIBRARY:
        try:
            label = canonical_label(entry["snl"].structure, symprec)
        except LabelError:
            continue
        tag = entry["tags"]["aflow"]
        if label not in out or tag < out[label]:
            out[label] = tag
    return out


def label_structure(structure: Structure, symprec: float = 0.1, aflow_tag: str | None = None) -> PrototypeInfo:
    """Label one structure and return its conventional standard cell.

    ``aflow_tag``: the library tag for structures taken from the AFLOW library itself; it is
    then the group key whatever spglib finds.
    """
    canonical = canonical_label(structure, symprec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sga = SpacegroupAnalyzer(structure, symprec=symprec)
            conventional = sga.get_conventional_standard_structure()
            sga_conv = SpacegroupAnalyzer(conventional, symprec=symprec)
            number, symbol = sga_conv.get_space_group_number(), sga_conv.get_space_group_symbol()
            pearson, system = sga_conv.get_pearson_symbol(), sga_conv.get_crystal_system()
        except Exception as exc:
            raise LabelError(f"symmetry analysis failed: {exc}") from None
    tag = aflow_tag or aflow_tags_by_canonical(symprec).get(canonical)
    return PrototypeInfo(
        prototype=tag or canonical,
        canonical=canonical,
        aflow_tag=tag,
        space_group_number=int(number),
        space_group_symbol=str(symbol),
        pearson_symbol=str(pearson),
        crystal_system=str(system),
        conventional=conventional,
    )
